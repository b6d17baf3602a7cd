# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Training inputs longer than the task's, for distilling a student that keeps its teacher's behaviour on them.

A classification task of short texts (Rotten Tomatoes snippets, SST-2 sentences) distils the student on short inputs
only, and task distillation can move what the student does on longer ones, where users send reviews, not snippets.
``join_examples`` makes long training inputs from the task's own: texts of one label joined until they reach a
length drawn between two bounds. In distillation the teacher's outputs on them are the target (TinyBERT augments its
task data for the same reason, with word replacements instead of joins); their label is the one every joined text
shares. ``text_blocks`` cuts unlabelled inputs from other text (news), where only the teacher's outputs are the
target. ``replace_words`` makes new inputs of the task's own length and domain, TinyBERT's way: each one-piece word
of a training example replaced, at random, by one of its nearest words in the teacher's input embedding (no label:
a neighbour may be an antonym, so only the teacher's outputs are the target).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .fidelity import with_special_tokens


def join_examples(
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    tokenizer,
    count: int,
    min_length: int,
    max_length: int,
    seed: int = 0,
) -> tuple[list[list[int]], list[int]]:
    """``count`` inputs, each same-label examples joined to a length drawn uniformly from ``[min_length, max_length]``.

    Args:
        input_ids: the tokenized training examples, special tokens included (as the tokenizer returns them).
        labels: their class ids.
        tokenizer: the tokenizer that made ``input_ids`` (its special tokens are stripped before joining and put
            back around each joined input).
        count: how many inputs to make.
        min_length, max_length: bounds on each input's length in tokens, special tokens included.
        seed: the random generator's seed (which examples, which lengths).

    Returns:
        The token-id sequences and their labels. The label of each input is that of a training example drawn at
        random, so the classes keep their training proportions; its texts are drawn without replacement among that
        class's examples, and the last one is cut where the drawn length ends (an input is shorter than
        ``min_length`` only when all of its class's texts together are).
    """
    n_special = _check_count_and_lengths(tokenizer, count, min_length, max_length)
    if len(input_ids) != len(labels):
        raise ValueError(f"input_ids and labels differ in length: {len(input_ids)} and {len(labels)}.")
    if count == 0:
        return [], []
    if not len(input_ids):
        raise ValueError("No examples to join.")
    bodies = [[token for token, special in zip(ids, tokenizer.get_special_tokens_mask(
        list(ids), already_has_special_tokens=True)) if not special] for ids in input_ids]
    by_label: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(index)
    generator = torch.Generator().manual_seed(seed)
    sequences, targets = [], []
    for _ in range(count):
        label = int(labels[int(torch.randint(len(labels), (), generator=generator))])
        budget = int(torch.randint(min_length, max_length + 1, (), generator=generator)) - n_special
        joined: list[int] = []
        members = by_label[label]
        for position in torch.randperm(len(members), generator=generator).tolist():
            joined.extend(bodies[members[position]])
            if len(joined) >= budget:
                break
        sequences.append(with_special_tokens(tokenizer, joined[:budget]))
        targets.append(label)
    return sequences, targets


def text_blocks(
    texts: Sequence[str],
    tokenizer,
    count: int,
    min_length: int,
    max_length: int,
    seed: int = 0,
) -> list[list[int]]:
    """``count`` unlabelled inputs cut from ``texts`` (e.g. news articles), of lengths drawn from
    ``[min_length, max_length]`` tokens (special tokens included).

    The texts are tokenized and concatenated in order; each block starts at a random token of that stream, so a block
    may run across two texts, as the blocks of masked-LM pre-training do. Distilled on them, a task student matches its
    teacher's outputs on text beyond the task's (their label is left out: ``-100``, which the task loss ignores).
    """
    n_special = _check_count_and_lengths(tokenizer, count, min_length, max_length)
    if count == 0:
        return []
    stream = [token for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
              for token in ids]
    if len(stream) < max_length - n_special:
        raise ValueError(f"The texts hold {len(stream)} tokens: too few for blocks of up to {max_length}.")
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(count):
        body = int(torch.randint(min_length, max_length + 1, (), generator=generator)) - n_special
        start = int(torch.randint(len(stream) - body + 1, (), generator=generator))
        blocks.append(with_special_tokens(tokenizer, stream[start:start + body]))
    return blocks


def replace_words(
    input_ids: Sequence[Sequence[int]],
    tokenizer,
    embeddings: torch.Tensor,
    count: int,
    probability: float = 0.4,
    candidates: int = 15,
    seed: int = 0,
) -> tuple[list[list[int]], list[int]]:
    """``count`` new inputs, each a training example with some of its words replaced by their neighbours.

    TinyBERT's data augmentation (Jiao et al., 2020) without its masked-LM: the examples are taken in a random order
    (all of them before any repeats); in each, every word that is one token (alphabetic, not a word piece of a longer
    word) is replaced with probability ``probability`` by one of its ``candidates`` nearest one-token words by cosine
    similarity of ``embeddings`` (the teacher's input embedding, one row per token id), drawn uniformly. Special
    tokens, numbers, punctuation and words of several pieces are kept, and so is each input's length.

    Args:
        input_ids: the tokenized training examples, special tokens included.
        tokenizer: the tokenizer that made them (a WordPiece vocabulary marks word pieces with ``##``; a byte-level
            BPE or SentencePiece one marks word starts with ``Ġ`` or ``▁``).
        embeddings: ``(vocabulary, hidden)`` input embedding of the teacher, e.g.
            ``teacher.get_input_embeddings().weight``.
        count: how many inputs to make.
        probability: the chance that each replaceable word is replaced, in ``(0, 1]``.
        candidates: how many nearest words a replacement is drawn from, >= 1.
        seed: the random generator's seed (which examples, which words, which neighbours).

    Returns:
        The token-id sequences, and for each the index of the example it was made from (whose token type ids, for a
        pair of texts, and label, where wanted, it shares).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0; got {count}.")
    if not 0 < probability <= 1:
        raise ValueError(f"probability must be in (0, 1]; got {probability}.")
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1; got {candidates}.")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (vocabulary, hidden); got shape {tuple(embeddings.shape)}.")
    if count == 0:
        return [], []
    if not len(input_ids):
        raise ValueError("No examples to replace words in.")
    vocabulary = min(len(tokenizer), embeddings.shape[0])
    largest = max(max(ids, default=0) for ids in input_ids)
    if largest >= vocabulary:
        raise ValueError(f"Token id {largest} is outside the embeddings' {embeddings.shape[0]} rows (tokenizer: "
                         f"{len(tokenizer)} tokens).")
    words, continuation = _word_tokens(tokenizer, vocabulary)
    candidate_ids = torch.tensor(sorted(words), dtype=torch.long)
    if len(candidate_ids) <= candidates:
        raise ValueError(f"The vocabulary has {len(candidate_ids)} one-token words: too few for {candidates} "
                         f"candidates.")
    special = [set(torch.tensor(tokenizer.get_special_tokens_mask(list(ids), already_has_special_tokens=True))
                   .nonzero().flatten().tolist()) for ids in input_ids]

    def replaceable(ids, position, skip):
        following = ids[position + 1] if position + 1 < len(ids) else None
        return (position not in skip and ids[position] in words
                and not (following is not None and following in continuation))

    used = sorted({ids[i] for ids, skip in zip(input_ids, special) for i in range(len(ids))
                   if replaceable(ids, i, skip)})
    neighbours = {}
    if used:
        unit = torch.nn.functional.normalize(embeddings[:vocabulary].detach().float().cpu(), dim=-1)
        pool = unit[candidate_ids]
        for start in range(0, len(used), 1024):
            chunk = torch.tensor(used[start:start + 1024])
            scores = unit[chunk] @ pool.T
            scores[chunk.unsqueeze(1) == candidate_ids.unsqueeze(0)] = -float("inf")  # never the word itself
            nearest = candidate_ids[scores.topk(candidates, dim=-1).indices]
            neighbours.update(zip(chunk.tolist(), nearest.tolist()))
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(input_ids), generator=generator)
                       for _ in range(-(-count // len(input_ids)))])[:count].tolist()
    sequences = []
    for index in order:
        ids, skip = list(input_ids[index]), special[index]
        draws = torch.rand(len(ids), generator=generator) < probability
        picks = torch.randint(candidates, (len(ids),), generator=generator)
        sequences.append([neighbours[token][int(picks[i])] if draws[i] and replaceable(ids, i, skip) else token
                          for i, token in enumerate(ids)])
    return sequences, order


def _word_tokens(tokenizer, vocabulary: int) -> tuple[set[int], set[int]]:
    """The ids of the one-token words of ``tokenizer``'s first ``vocabulary`` tokens, and of its word pieces that
    continue a word (WordPiece ``##`` pieces; pieces without ``Ġ``/``▁`` where the vocabulary marks word starts)."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocabulary)))
    special = set(tokenizer.all_special_ids)
    # WordPiece marks continuations (BERT: ~5,800 "##" pieces of 30,522), byte-level BPE and SentencePiece word starts
    # (GPT-2: ~33,000 "Ġ" pieces of 50,257, and 6 that merely start with "##", such as "##" itself)
    wordpiece = (sum(piece.startswith("##") for piece in pieces if piece)
                 > sum(piece[0] in "Ġ▁" for piece in pieces if piece))
    words, continuation = set(), set()
    for token_id, piece in enumerate(pieces):
        if not piece or token_id in special:
            continue
        if wordpiece:
            starts, text = not piece.startswith("##"), piece.removeprefix("##")
        else:
            starts, text = piece[0] in "Ġ▁", piece.lstrip("Ġ▁")
        if not text.isalpha():
            continue
        (words if starts else continuation).add(token_id)
    return words, continuation


def _check_count_and_lengths(tokenizer, count: int, min_length: int, max_length: int) -> int:
    """Raise a ``ValueError`` for a negative ``count`` or lengths that leave no room for text; return the number of
    special tokens ``tokenizer`` adds to one sequence."""
    if count < 0:
        raise ValueError(f"count must be >= 0; got {count}.")
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    if not n_special < min_length <= max_length:
        raise ValueError(
            f"Expected {n_special} < min_length <= max_length (room for text beside the special tokens); got "
            f"min_length={min_length}, max_length={max_length}."
        )
    return n_special
