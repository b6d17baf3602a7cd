# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``kron-compress``: a dense BERT/GPT-2 checkpoint in, a Kronecker checkpoint with its model card out.

    kron-compress bert-base-uncased kronecker-bert-8 --preset kronecker-bert-8
    kron-compress ./my-gpt2 ./my-gpt2-4x --compression 4 --rank 2 --dtype bfloat16
    python -m kron_transformers ./my-bert ./out --compression 8 --push_to_hub --hub_model_id me/my-bert-8x

The output folder holds the config (with ``auto_map``), ``model.safetensors``, the modelling code (loadable with
``trust_remote_code=True``), the tokenizer when the source has one, and a filled README.md model card. It is written
beside the target under a temporary name and renamed at the end: a failure leaves nothing behind. Bad input prints
one ``kron-compress: error: ...`` line on stderr and exits with status 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
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
        description="Compress a dense BERT or GPT-2 checkpoint with Kronecker decomposition (KroneckerBERT, KnGPT2): "
        "every factored weight becomes the nearest sum of Kronecker products of the dense one.",
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


def compress_checkpoint(args: argparse.Namespace) -> Path:
    """Load MODEL, compress it, write the Kronecker checkpoint to OUTPUT_DIR atomically; return OUTPUT_DIR."""
    from transformers import AutoConfig, AutoTokenizer

    from . import compression as compression_module
    from .model_card import create_repo, save_pretrained_with_card, upload_folder

    target = Path(args.output_dir).expanduser().absolute()
    _check_output_dir(target, args.overwrite)
    is_local = _check_model_argument(args.model)
    source = str(Path(args.model).expanduser()) if is_local else args.model
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
    try:
        kronecker_class = compression_module.kronecker_class_for(skeleton)
        # The same validation `compress` does first (preset, shapes that factor, rank), before the weights are read.
        kronecker_class.config_class.from_dense_config(config, compression, **overrides)
    except ValueError as error:
        raise CliError(_one_line(error)) from error
    del skeleton

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

    try:
        dense = auto.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise CliError(f"Cannot load the weights of MODEL {args.model!r}: {_one_line(error)}") from error
    tokenizer = None
    if not is_local or any((Path(source) / name).is_file() for name in _TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            if is_local:
                raise CliError(f"Cannot load the tokenizer of MODEL {args.model!r}: {_one_line(error)}") from error
            print(f"{PROG}: note: no tokenizer saved ({_one_line(error)})", file=sys.stderr)

    try:
        model = compression_module.compress(dense, compression, show_progress=True, **overrides)
    except ValueError as error:
        raise CliError(_one_line(error)) from error
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

    created = _make_parent(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
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
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
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
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(error, OSError):
            raise CliError(f"Cannot write OUTPUT_DIR {str(target)!r}: {_one_line(error)}") from error
        raise
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kron-compress`` and ``python -m kron_transformers``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        compress_checkpoint(args)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
