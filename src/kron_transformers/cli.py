# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``kron-compress``: a dense Transformers checkpoint in, a Kronecker checkpoint with its model card out.

    kron-compress bert-base-uncased kronecker-bert-8 --preset kronecker-bert-8
    kron-compress ./my-gpt2 ./my-gpt2-4x --compression 4 --rank 2 --dtype bfloat16
    python -m kron_transformers ./my-bert ./out --compression 8 --push_to_hub --hub_model_id me/my-bert-8x
    kron-compress ./my-electra ./out --compression 4 --target_modules query key value dense

The output folder holds the config (with ``auto_map``), ``model.safetensors``, the modelling code (loadable with
``trust_remote_code=True``), the tokenizer when the source has one, and a filled README.md model card. It is written
beside the target under a temporary name and renamed at the end: a failure leaves nothing behind. Bad input prints
one ``kron-compress: error: ...`` line on stderr and exits with status 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch


PROG = "kron-compress"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
# Tried in this order to find the Auto class whose mapping holds the checkpoint's architecture.
AUTO_CLASS_NAMES = (
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
    "AutoModelForMultipleChoice",
    "AutoModelForNextSentencePrediction",
    "AutoModelForPreTraining",
    "AutoModel",
)
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")


class CliError(Exception):
    """Bad input: reported as one line on stderr, exit status 1."""


class CliInterrupted(KeyboardInterrupt):
    """A catchable signal (SIGINT, SIGTERM, SIGHUP) turned into an exception, so that cleanup code runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Compress a dense Transformers checkpoint with Kronecker decomposition (KroneckerBERT, KnGPT2): "
        "every factored weight becomes the nearest sum of Kronecker products of the dense one. Built in: BERT, GPT-2, "
        "Llama (SmolLM2), Mistral, Qwen2, Qwen3, RoBERTa, DistilBERT, each with every head; any other architecture "
        "with nn.Linear/Conv1D maps through --target_modules.",
    )
    parser.add_argument("model", metavar="MODEL", help="dense checkpoint: a local folder or a Hub model id")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder to write the Kronecker checkpoint to")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--preset", metavar="NAME", help="a compression preset, e.g. kronecker-bert-8 or kngpt2")
    how.add_argument(
        "--compression", metavar="RATIO", type=_positive_float, help="parameter compression of each factored matrix"
    )
    parser.add_argument("--rank", type=_positive_int, help="number of summed Kronecker products (default: 1)")
    parser.add_argument(
        "--embedding_rank",
        type=_positive_int,
        help="number of summed Kronecker products in the word embedding, BERT and GPT-2 families (default: --rank); "
        "with --compression its factor is picked for that rank, e.g. MiniLM at 4 with 96: the rank-96 truncated SVD",
    )
    parser.add_argument(
        "--target_modules",
        nargs="+",
        metavar="PATTERN",
        help="module-name patterns of the maps to factor, for architectures without a built-in table (a name equal "
        "to a pattern, ending with '.PATTERN' or fully matching it as a regex), e.g. --target_modules query key value "
        "dense; default: the family's table (BERT, GPT-2, Llama/SmolLM2, Mistral, Qwen2, Qwen3, RoBERTa, DistilBERT)",
    )
    parser.add_argument(
        "--task",
        metavar="AUTO_CLASS_NAME",
        help="the Auto class to load MODEL with, e.g. AutoModelForSequenceClassification "
        "(default: from the config's architectures)",
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="dtype of the saved checkpoint (default: the dense checkpoint's); the factorisation runs in float32",
    )
    parser.add_argument(
        "--calibration_file",
        metavar="FILE",
        help="text the compressed model should behave like the dense one on (.txt: one text per line; .json/.jsonl: a "
        "'text' field): each linear map then starts at the factors minimising its output error on these inputs "
        "(activation-aware initialisation) instead of its weight error; the report adds each map's output error",
    )
    parser.add_argument(
        "--calibration_samples", type=_positive_int, default=128, help="texts read from --calibration_file (128)"
    )
    parser.add_argument(
        "--calibration_max_length", type=_positive_int, default=256,
        help="tokens kept per calibration text (256; capped at the model's maximum)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists and is not empty")
    parser.add_argument("--push_to_hub", action="store_true", help="also upload the checkpoint to the Hub")
    parser.add_argument("--hub_model_id", help="Hub repo to push to (default: the name of OUTPUT_DIR)")
    parser.add_argument("--license", help="licence of the compressed model (default: the base model card's)")
    parser.add_argument(
        "--export",
        choices=["onnx"],
        help="also write model.onnx (float32, dynamic batch and sequence, checked in onnxruntime; needs the "
        "'export' extra)",
    )
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_output_dir(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise CliError(f"OUTPUT_DIR {str(target)!r} exists and is not a folder.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise CliError(f"OUTPUT_DIR {str(target)!r} exists and is not empty; pass --overwrite to replace it.")
    # The checkpoint is staged beside OUTPUT_DIR, in its parent (made if missing): that must be possible before the
    # long part starts.
    ancestor = next(folder for folder in target.parents if folder.exists() or folder == folder.parent)
    if not ancestor.is_dir():
        raise CliError(f"OUTPUT_DIR {str(target)!r}: {str(ancestor)!r} is not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(f"OUTPUT_DIR {str(target)!r}: cannot write to {str(ancestor)!r} (permission denied).")


def _check_not_inside(target: Path, source: Path, model: str) -> None:
    """Refuse an OUTPUT_DIR that is, or holds, the dense checkpoint: replacing it would delete the source."""
    source, resolved = source.resolve(), target.resolve()
    if resolved == source or resolved in source.parents:
        verb = "is" if resolved == source else "holds"
        raise CliError(
            f"OUTPUT_DIR {str(target)!r} {verb} MODEL {model!r}; --overwrite would delete the dense checkpoint. "
            "Choose another OUTPUT_DIR."
        )


def _staging_prefix(target: Path) -> str:
    """``.NAME.PID.``: staging folders say which process writes them, so a later run knows the writer is gone."""
    return f".{target.name}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or a pid we cannot check): leave its folder alone
    return True


def _remove_leftovers(target: Path) -> None:
    """Remove the staging folders (``.NAME.[PID.]XXXX.partial`` / ``.old``) of runs killed while writing ``target``.

    A folder whose writer is still running is left alone. An ``.old`` folder still holding the previous checkpoint
    (a run killed between its two renames) is moved back to ``target`` when ``target`` is missing.
    """
    parent = target.parent
    if not parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:(\d+)\.)?\w+\.(partial|old)")
    for entry in sorted(parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        if match.group(1) is not None and _process_alive(int(match.group(1))):
            continue
        previous = entry / "previous"
        if match.group(2) == "old" and previous.is_dir() and not target.exists():
            os.replace(previous, target)
            print(f"{PROG}: note: restored {target} from {entry.name}, left by an interrupted --overwrite",
                  file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
        print(f"{PROG}: note: removed the leftover {entry.name} of an interrupted run", file=sys.stderr)


def _load_dense(auto, source: str, model: str):
    """The dense model in float32; a ``CliError`` for weights that cannot be read (corrupt, truncated, missing)."""
    from safetensors import SafetensorError

    try:
        return auto.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError, SafetensorError) as error:
        raise CliError(f"Cannot load the weights of MODEL {model!r}: {_one_line(error)}") from error


def _check_model_argument(model: str) -> bool:
    """Whether MODEL is a local folder; raises for a path that is neither a folder nor a possible Hub id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(model).expanduser()
    if path.is_dir():
        return True
    if path.exists():
        raise CliError(f"MODEL {model!r} is a file; expected a checkpoint folder or a Hub model id.")
    try:
        if os.path.isabs(model) or model.startswith((".", "~")):
            raise HFValidationError(model)
        validate_repo_id(model)
    except HFValidationError:
        raise CliError(f"MODEL {model!r}: no such folder (and not a valid Hub model id).") from None
    return False


def auto_class_for(config, task: str | None = None):
    """The ``transformers`` Auto class to load a checkpoint with: ``task`` if given, else the one whose mapping
    holds the config's first architecture (``GPT2LMHeadModel`` -> ``AutoModelForCausalLM``), else ``AutoModel``."""
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    if task is not None:
        auto = getattr(transformers, task, None)
        if not (isinstance(auto, type) and issubclass(auto, _BaseAutoModelClass)):
            raise CliError(f"--task {task!r} is not a transformers Auto model class; e.g. {', '.join(AUTO_CLASS_NAMES)}.")
        return auto
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        return transformers.AutoModel
    for name in AUTO_CLASS_NAMES:
        auto = getattr(transformers, name)
        try:
            classes = auto._model_mapping[type(config)]
        except KeyError:
            continue
        classes = classes if isinstance(classes, (list, tuple)) else (classes,)
        if any(cls.__name__ == architectures[0] for cls in classes):
            return auto
    raise CliError(
        f"No Auto class loads the architecture {architectures[0]!r} of MODEL; pass --task with one, e.g. "
        f"--task AutoModel."
    )


def _base_license(model: str, is_local: bool) -> str | None:
    """The licence in the base model's own card (README.md front matter), which a compressed model inherits."""
    readme = Path(model).expanduser() / "README.md"
    if not is_local or not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.license
    except Exception:  # a malformed card must not stop the compression; the licence is then "unknown"
        return None


def _make_parent(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return the ones created (deepest last) to undo on failure."""
    missing = []
    for folder in (parent, *parent.parents):
        if folder.exists():
            break
        missing.append(folder)
    parent.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def read_calibration_texts(path: str, limit: int) -> list[str]:
    """Up to ``limit`` non-empty texts from a .txt file (a text per line) or a .json/.jsonl file (``text`` fields)."""
    import json

    file = Path(path).expanduser()
    if not file.is_file():
        raise CliError(f"--calibration_file {path!r}: no such file.")
    suffix = file.suffix.lower()
    if suffix not in (".txt", ".json", ".jsonl"):
        raise CliError(f"--calibration_file {path!r}: expected a .txt, .json or .jsonl file; got {suffix or 'none'}.")
    try:
        content = file.read_text(encoding="utf-8")
        if suffix == ".txt":
            texts = content.splitlines()
        else:
            records = json.loads(content) if suffix == ".json" else [json.loads(line) for line in content.splitlines()
                                                                        if line.strip()]
            if isinstance(records, dict):
                records = records.get("data", [records])
            texts = [record["text"] if isinstance(record, dict) else record for record in records]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise CliError(f"Cannot read --calibration_file {path!r}: {_one_line(error)}") from error
    texts = [text for text in texts if isinstance(text, str) and text.strip()][:limit]
    if not texts:
        raise CliError(f"--calibration_file {path!r} holds no text.")
    return texts


def compress_checkpoint(args: argparse.Namespace) -> Path:
    """Load MODEL, compress it, write the Kronecker checkpoint to OUTPUT_DIR atomically; return OUTPUT_DIR."""
    from transformers import AutoConfig, AutoTokenizer

    from . import compression as compression_module
    from .model_card import create_repo, save_pretrained_with_card, upload_folder

    target = Path(args.output_dir).expanduser().absolute()
    _check_output_dir(target, args.overwrite)
    is_local = _check_model_argument(args.model)
    source = str(Path(args.model).expanduser()) if is_local else args.model
    if is_local:
        _check_not_inside(target, Path(source), args.model)
    _remove_leftovers(target)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as error:
        where = "a local folder" if is_local else "not a local folder; fetching it from the Hub failed"
        raise CliError(f"Cannot read the config of MODEL {args.model!r} ({where}): {_one_line(error)}") from error
    auto = auto_class_for(config, args.task)

    # Check the architecture on a weightless copy before reading any weights: unsupported models fail at once.
    try:
        with torch.device("meta"):
            skeleton = auto.from_config(config)
    except ValueError as error:
        raise CliError(f"{auto.__name__} cannot load MODEL {args.model!r}: {_one_line(error)}") from error
    compression = args.preset if args.preset is not None else args.compression
    overrides = {"rank": args.rank} if args.rank is not None else {}
    if args.embedding_rank is not None:
        overrides["embedding_rank"] = args.embedding_rank
    if args.target_modules is not None:
        overrides["target_modules"] = args.target_modules
    try:
        # The same validation `compress` does first (architecture, preset, targets resolved against the module tree,
        # shapes that factor, rank), before the weights are read.
        compression_module.kronecker_config_for(skeleton, compression, **overrides)
    except ValueError as error:
        raise CliError(_one_line(error)) from error
    del skeleton

    calibration_texts = None
    if args.calibration_file is not None:
        calibration_texts = read_calibration_texts(args.calibration_file, args.calibration_samples)

    if args.export == "onnx":  # fail before the long part if the exporter is missing
        import importlib.util

        missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise CliError(f"--export onnx needs {', '.join(missing)}: pip install 'kron-transformers[export]'.")

    repo_id = None
    if args.push_to_hub:  # fail before the long part if the Hub refuses the repo
        try:
            repo_id = create_repo(args.hub_model_id or target.name)
        except (OSError, ValueError) as error:
            name = args.hub_model_id or target.name
            raise CliError(f"Cannot create the Hub repo {name!r}: {_one_line(error)}") from error

    dense = _load_dense(auto, source, args.model)
    tokenizer = None
    if not is_local or any((Path(source) / name).is_file() for name in _TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            if is_local:
                raise CliError(f"Cannot load the tokenizer of MODEL {args.model!r}: {_one_line(error)}") from error
            print(f"{PROG}: note: no tokenizer saved ({_one_line(error)})", file=sys.stderr)

    calibration_data = None
    if calibration_texts is not None:
        if tokenizer is None:
            raise CliError(f"--calibration_file needs the tokenizer of MODEL {args.model!r}, and it has none.")
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        max_length = min(args.calibration_max_length, limit or args.calibration_max_length)
        encoded = tokenizer(calibration_texts, truncation=True, max_length=max_length)
        calibration_data = [{"input_ids": ids} for ids in encoded["input_ids"]]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            model = compression_module.compress(
                dense, compression, calibration_data=calibration_data, show_progress=True, **overrides
            )
        for warning in caught:  # compress()'s own (an unreachable ratio, maps kept dense) as one line each
            if issubclass(warning.category, UserWarning) and "kron_transformers" in warning.filename:
                print(f"{PROG}: warning: {_one_line(warning.message)}", file=sys.stderr)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    except ValueError as error:
        raise CliError(_one_line(error)) from error
    except torch.linalg.LinAlgError as error:  # non-finite weights, should `compress` not name them itself
        raise CliError(f"Cannot compress MODEL {args.model!r}: {_one_line(error)}") from error
    report = model.compression_report
    if args.dtype == "auto":
        dtype = getattr(config, "dtype", None)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
    else:
        dtype = DTYPES[args.dtype]
    model = model.to(dtype)
    del dense

    print(f"Compressed {type(model).__mro__[1].__name__} {args.model} into {type(model).__name__} ({dtype}):")
    print(report.to_markdown())

    created, staging = [], None
    try:
        created = _make_parent(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), suffix=".partial", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the checkpoint private to its writer
        save_pretrained_with_card(
            model,
            staging,
            tokenizer=tokenizer,
            # A local folder is named, not linked: its path means nothing on the Hub.
            base_model=args.model if not is_local else Path(source).absolute().name,
            base_model_on_hub=not is_local,
            report=report,
            preset=args.preset,
            repo_id=repo_id,
            model_name=repo_id.split("/")[-1] if repo_id else target.name,
            license=args.license or _base_license(args.model, is_local),
        )
        if args.export == "onnx":
            from .export import export_onnx

            try:
                export_onnx(model.float() if dtype != torch.float32 else model, staging / "model.onnx")
            except (RuntimeError, ValueError) as error:
                raise CliError(f"ONNX export failed: {_one_line(error)}") from error
            print("Exported model.onnx (onnxruntime outputs checked against PyTorch)")
        if target.exists():  # --overwrite (or an empty folder): swap, then drop the old one
            old = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), suffix=".old", dir=target.parent))
            os.replace(target, old / "previous")
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old / "previous", target)  # put the old checkpoint back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(error, OSError):
            raise CliError(f"Cannot write OUTPUT_DIR {str(target)!r}: {_one_line(error)}") from error
        raise
    args.saved_to = target  # an interruption from here on leaves a complete checkpoint, not nothing
    print(f"Saved the Kronecker checkpoint to {target}")

    if repo_id is not None:
        try:
            commit = upload_folder(target, repo_id)
        except (OSError, ValueError) as error:
            raise CliError(
                f"Pushing to {repo_id!r} failed ({_one_line(error)}); the checkpoint is in {target}."
            ) from error
        print(f"Pushed to {getattr(commit, 'commit_url', None) or repo_id}")
    return target


_CAUGHT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_interrupted(signum, frame):
    raise CliInterrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kron-compress`` and ``python -m kron_transformers``; returns the exit status.

    SIGINT, SIGTERM and SIGHUP become an exception while it runs, so a run stopped while writing removes its staging
    folder and exits with ``128 + signal number`` after one line on stderr.
    """
    args = build_parser().parse_args(argv)
    args.saved_to = None
    previous = {}
    try:
        if threading.current_thread() is threading.main_thread():
            previous = {signum: signal.signal(signum, _raise_interrupted) for signum in _CAUGHT_SIGNALS}
        compress_checkpoint(args)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        where = f"the checkpoint is in {args.saved_to}" if args.saved_to is not None else "nothing was written"
        print(f"{PROG}: interrupted ({signal.Signals(signum).name}); {where}", file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
