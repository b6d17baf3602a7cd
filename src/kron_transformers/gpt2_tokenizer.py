# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""The real GPT-2 tokenizer, built offline from the ``gpt2.tiktoken`` ranks that ship with openai-whisper on PyPI.

GPT-2's byte-level BPE (Radford et al. 2019) is fully described by the rank of each of its 50,256 byte strings: the
first 256 are the single bytes and every later token is the merge of two earlier ones. The ``tokenizers`` library
wants the merges themselves; each token's merge is recovered by running BPE on its own bytes with the ranks below
its own, which stops one merge short of the token (this is how tiktoken relates its ranks to GPT-2's
``merges.txt``). ``<|endoftext|>`` (50256) is added as the bos/eos/unk token, as in GPT-2's ``vocab.json``.

The tokenizer is saved once into a cache folder and loaded from it with ``GPT2TokenizerFast.from_pretrained``.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

from transformers import GPT2TokenizerFast

from . import assets


END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
GPT2_MAX_LENGTH = 1024


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters (``encoder.py``).

    Printable Latin-1 bytes map to themselves; the others (control characters, space, ...) to ``chr(256 + n)``, so
    that no BPE symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    n = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """``{token bytes: rank}`` from a tiktoken file of ``base64(token) rank`` lines."""
    ranks = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as error:
                raise OSError(f"{path}:{number} is not a `base64(token) rank` line ({error}): {line[:80]!r}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise OSError(f"{path} does not hold the ranks 0..{len(ranks) - 1} exactly once each: is it a tiktoken file?")
    return ranks


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merges, in rank order, that produce every multi-byte token of ``ranks``.

    A token of rank ``t`` is the merge that BPE, restricted to ranks below ``t``, leaves undone on the token's own
    bytes: merge the adjacent pair whose concatenation has the lowest rank, until no pair below ``t`` is left; two
    parts remain.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while True:
            best, best_rank = None, rank
            for i in range(len(parts) - 1):
                pair_rank = ranks.get(parts[i] + parts[i + 1])
                if pair_rank is not None and pair_rank < best_rank:
                    best, best_rank = i, pair_rank
            if best is None:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2:
            raise OSError(
                f"Token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens: not a BPE rank file."
            )
        merges.append((parts[0], parts[1]))
    return merges


def build_gpt2_tokenizer(tiktoken_path: str | os.PathLike) -> GPT2TokenizerFast:
    """GPT-2's tokenizer (vocab 50,257, byte-level BPE) from a ``gpt2.tiktoken`` rank file."""
    ranks = read_tiktoken_ranks(tiktoken_path)
    if len(ranks) != END_OF_TEXT_ID:
        raise OSError(
            f"{tiktoken_path} has {len(ranks)} tokens; GPT-2's BPE has {END_OF_TEXT_ID} (then {END_OF_TEXT})."
        )
    byte_encoder = bytes_to_unicode()

    def to_symbols(token: bytes) -> str:
        return "".join(byte_encoder[byte] for byte in token)

    vocab = {to_symbols(token): rank for token, rank in ranks.items()}
    vocab[END_OF_TEXT] = END_OF_TEXT_ID
    merges = [(to_symbols(left), to_symbols(right)) for left, right in merges_from_ranks(ranks)]
    return GPT2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        add_prefix_space=False,
        model_max_length=GPT2_MAX_LENGTH,
    )


def load_gpt2_tokenizer(cache_dir: str | os.PathLike | None = None) -> GPT2TokenizerFast:
    """The real GPT-2 tokenizer, without the Hugging Face Hub.

    Args:
        cache_dir: folder holding the saved tokenizer; ``<kron_transformers cache>/gpt2-tokenizer`` by default.

    Returns:
        A ``GPT2TokenizerFast`` equal to ``openai-community/gpt2``'s: ``"hello world"`` -> ``[31373, 995]``,
        ``<|endoftext|>`` = 50256 as bos, eos and unk token.

    The first call fetches ``gpt2.tiktoken`` (``assets.gpt2_tiktoken_path``; ``OSError`` when the package index is
    unreachable), builds the tokenizer and saves it into ``cache_dir``; later calls load it from there.
    """
    folder = Path(cache_dir) if cache_dir is not None else assets.cache_dir() / "gpt2-tokenizer"
    if not (folder / "tokenizer.json").is_file():
        tokenizer = build_gpt2_tokenizer(assets.gpt2_tiktoken_path())
        if folder.exists():  # a folder the caller chose: write into it
            tokenizer.save_pretrained(folder)
        else:
            # Written beside the target then renamed, so an interrupted build never leaves half a folder.
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
            try:
                tokenizer.save_pretrained(staging)
                try:
                    os.replace(staging, folder)
                except OSError:
                    if not (folder / "tokenizer.json").is_file():  # unless a concurrent build finished first
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return GPT2TokenizerFast.from_pretrained(folder)
