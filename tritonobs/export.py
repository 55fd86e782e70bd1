"""Export a calibrated Hugging Face model as a compressed-tensors checkpoint.

compressed-tensors is the format llm-compressor writes and vLLM serves; transformers loads it too
(with the ``compressed-tensors`` package installed). :func:`export_compressed_tensors` writes it
with torch, safetensors and json alone: the input scales come from the activation observers of a
:class:`~tritonobs.calibrate.CalibrationResult`, the weight scales from
:func:`tritonobs.weight_qparams` (llm-compressor's weight observers). Three schemes:

========  ===================  ===========================================================
scheme    ``format``           tensors per quantized Linear
========  ===================  ===========================================================
fp8       ``float-quantized``  ``weight`` FP8 E4M3, ``weight_scale [out, 1]``, ``input_scale [1]``
int8      ``int-quantized``    ``weight`` int8, ``weight_scale [out, 1]``, ``input_scale [1]``
                               (+ ``input_zero_point [1]`` int8 for an affine observer)
w4a16     ``pack-quantized``   ``weight_packed`` int32 ``[out, in / 8]``, ``weight_scale
                               [out, in / 128]``, ``weight_shape`` int64 ``[2]``
========  ===================  ===========================================================

See ``docs/export.md`` for what a serving engine expects and what was verified.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tritonobs.llm_calibrators import WEIGHT_OBSERVERS, weight_qparams
from tritonobs.ops.histogram_search import histogram_search
from tritonobs.ops.weight_mse_sweep import qparams_from_range
from tritonobs.qparams import SYMMETRIC_QSCHEMES

if TYPE_CHECKING:
    from tritonobs.calibrate import CalibrationResult

__all__ = [
    "SCHEMES",
    "ExportError",
    "add_export_arguments",
    "check_export_args",
    "export_compressed_tensors",
    "export_from_args",
    "pack_int4",
]

GROUP_SIZE = 128
"""Columns per weight scale of w4a16."""

# Files of the source folder that hold weights: the export has its own, quantized ones.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class ExportError(ValueError):
    """Bad input to :func:`export_compressed_tensors`; nothing was written."""


@dataclass(frozen=True)
class _Scheme:
    format: str
    num_bits: int
    type: str
    strategy: str
    group_size: int | None
    activations: bool


SCHEMES: dict[str, _Scheme] = {
    "fp8": _Scheme("float-quantized", 8, "float", "channel", None, activations=True),
    "int8": _Scheme("int-quantized", 8, "int", "channel", None, activations=True),
    "w4a16": _Scheme("pack-quantized", 4, "int", "group", GROUP_SIZE, activations=False),
}
"""The export schemes: W8A8 FP8 and INT8 with static per-tensor input scales, W4A16 group 128."""


def export_compressed_tensors(
    model: nn.Module,
    result: CalibrationResult | None,
    directory: str | Path,
    scheme: str,
    *,
    weight_observer: str = "minmax",
    source: str | Path | None = None,
    ignore: Iterable[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a compressed-tensors checkpoint folder that transformers and vLLM load.

    Every ``nn.Linear`` is quantized, except the output embeddings (``lm_head``), the layers
    ``ignore`` names, and the layers the scheme cannot take: under w4a16 those whose
    ``in_features`` is not a multiple of 128; under fp8/int8 those whose input has no calibrated
    range. These go to the config's ``ignore`` list (in float) with one warning listing them.

    Input scales (fp8, int8) are per tensor, from the range the layer's input observer measured
    (``compute_amax()`` for amax observers, the searched range for ``HistogramObserver``, else
    ``min_val``/``max_val`` over all channels), with compressed-tensors' formulas: FP8
    ``amax / 448``; int8 ``amax / 127.5`` when the observer's qscheme is symmetric, else
    ``(max - min) / 255`` with ``input_zero_point = round(-128 - min / scale)`` (torch.ao's
    quint8 zero point minus 128). Weight scales are :func:`tritonobs.weight_qparams` per output
    channel (fp8, int8) or per group of 128 columns (w4a16), symmetric.

    Args:
        model: a transformers model (it has a ``.config``), calibrated as it is now.
        result: what :func:`~tritonobs.calibrate.calibrate` observed on ``model``'s Linear inputs;
            ``None`` is accepted for w4a16, which quantizes weights only.
        directory: the folder to write: ``config.json`` (with ``quantization_config``),
            ``model.safetensors`` and the other files of ``source`` (tokenizer, generation
            config), except its weights and folders that hold weights.
        scheme: ``"fp8"``, ``"int8"`` or ``"w4a16"``.
        weight_observer: ``"minmax"`` or ``"mse"`` (llm-compressor's weight observers).
        source: the model's folder; by default ``model.name_or_path`` when it is a folder.
        ignore: Linear layers to leave in float: qualified names, or ``"re:<regex>"`` matched
            against whole names.
        overwrite: replace ``directory`` if it exists and is not empty.

    Returns:
        ``directory``.

    Raises:
        ExportError: ``model`` is not a transformers model, no source folder, unknown scheme or
            weight observer, an ``ignore`` entry that matches no Linear layer, a missing
            ``result`` for fp8/int8, no layer left to quantize, or ``directory`` not empty (or
            the source folder itself) without ``overwrite``.
    """
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(config, "to_dict", None)):
        raise ExportError(
            f"{type(model).__name__} is not a Hugging Face transformers model (it has no "
            ".config); export needs one loaded from a model folder"
        )
    if scheme not in SCHEMES:
        raise ExportError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if weight_observer not in WEIGHT_OBSERVERS:
        raise ExportError(
            f"unknown weight observer {weight_observer!r}; choose one of "
            f"{', '.join(WEIGHT_OBSERVERS)}"
        )
    spec = SCHEMES[scheme]
    if spec.activations and result is None:
        raise ExportError(f"scheme {scheme} needs the calibration result for its input scales")
    folder = _source_folder(model, source)
    directory = Path(directory)
    _check_directory(directory, folder, overwrite)

    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    ignored = _ignored(model, linears, ignore)
    unfit = {}
    inputs: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for name, linear in linears.items():
        if name in ignored:
            continue
        if spec.group_size is not None and linear.in_features % spec.group_size:
            unfit[name] = f"in_features {linear.in_features} is not a multiple of {GROUP_SIZE}"
        elif spec.activations:
            qparams = _input_qparams(result, name, spec)  # type: ignore[arg-type]
            if qparams is None:
                unfit[name] = "no calibrated input range"
            else:
                inputs[name] = qparams
    if unfit:
        warnings.warn(
            f"{scheme} leaves {len(unfit)} Linear layers in float (added to ignore): "
            + "; ".join(f"{name} ({why})" for name, why in unfit.items()),
            stacklevel=2,
        )
    ignored |= set(unfit)
    quantized = [name for name in linears if name not in ignored]
    if not quantized:
        raise ExportError(f"no Linear layer of {type(model).__name__} is left to quantize")

    tensors = _float_state(model)
    for name in quantized:
        weight = linears[name].weight.detach()
        del tensors[f"{name}.weight"]
        for suffix, tensor in _quantize_weight(weight, spec, weight_observer).items():
            tensors[f"{name}.{suffix}"] = tensor
        if name in inputs:
            scale, zero_point = inputs[name]
            tensors[f"{name}.input_scale"] = scale.to(weight.dtype)
            if zero_point is not None:
                tensors[f"{name}.input_zero_point"] = zero_point
    document = _config_document(model, config)
    document["quantization_config"] = _quantization_config(
        spec, weight_observer, inputs, [name for name in linears if name in ignored]
    )
    _write(directory, folder, tensors, document)
    return directory


def _source_folder(model: nn.Module, source: str | Path | None) -> Path:
    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise ExportError(f"source {folder} is not a folder")
        return folder
    for name in (getattr(model, "name_or_path", None), getattr(model.config, "_name_or_path", "")):
        if name and Path(name).is_dir():
            return Path(name)
    raise ExportError(
        f"{type(model).__name__} was not loaded from a local model folder; pass source=FOLDER "
        "(its tokenizer files go into the export)"
    )


def _check_directory(directory: Path, source: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"{directory} exists and is not a folder")
    if directory.exists() and directory.resolve() == source.resolve():
        raise ExportError(f"{directory} is the source model folder; export to another folder")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise ExportError(f"{directory} exists and is not empty; pass overwrite to replace it")


def _ignored(model: nn.Module, linears: dict[str, nn.Linear], ignore: Iterable[str]) -> set[str]:
    ignored = set()
    for entry in ignore:
        if entry.startswith("re:"):
            pattern = re.compile(entry[3:])
            matched = {name for name in linears if pattern.fullmatch(name)}
        else:
            matched = {entry} & linears.keys()
        if not matched:
            raise ExportError(f"ignore entry {entry!r} matches no Linear layer of the model")
        ignored |= matched
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    # The output embeddings stay in float, as llm-compressor's recipes leave lm_head.
    ignored |= {name for name, module in linears.items() if module is output}
    return ignored


def _input_qparams(
    result: CalibrationResult, name: str, spec: _Scheme
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(input_scale, input_zero_point or None)`` of Linear ``name``; ``None`` without a range."""
    entry = result.entries.get(f"{name}.input")
    if entry is None or entry.calls == 0:
        return None
    observer = entry.observer
    low, high = _observed_range(observer)
    if not (torch.isfinite(low) and torch.isfinite(high)):
        return None
    fp8 = spec.type == "float"
    symmetric = fp8 or getattr(observer, "qscheme", None) in SYMMETRIC_QSCHEMES
    scale, zero_point = qparams_from_range(
        low.float().cpu(), high.float().cpu(), spec.num_bits, fp8, symmetric
    )
    return scale, None if symmetric else zero_point


def _observed_range(observer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The range an input observer settled on, as two 0-d tensors."""
    if callable(getattr(observer, "compute_amax", None)):
        amax = observer.compute_amax()
        return -amax, amax
    min_val = getattr(observer, "min_val", None)
    max_val = getattr(observer, "max_val", None)
    if not isinstance(min_val, torch.Tensor) or not isinstance(max_val, torch.Tensor):
        raise ExportError(
            f"{type(observer).__name__} has neither compute_amax() nor min_val/max_val; "
            "export cannot read an input range from it"
        )
    histogram = getattr(observer, "histogram", None)
    if isinstance(histogram, torch.Tensor) and hasattr(observer, "dst_nbins"):
        # HistogramObserver: the L2-optimal range its own calculate_qparams uses.
        return histogram_search(histogram, min_val, max_val, observer.dst_nbins)
    if min_val.numel() == 0:
        return torch.tensor(float("inf")), torch.tensor(float("-inf"))
    return min_val.min(), max_val.max()


def _quantize_weight(weight: torch.Tensor, spec: _Scheme, observer: str) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of one Linear weight, as compressed-tensors' compressors write them:
    ``q = clamp(W / scale, q_min, q_max)``, rounded (int) or cast (FP8)."""
    scale, _ = weight_qparams(
        weight,
        observer=observer,
        num_bits=spec.num_bits,
        type=spec.type,
        strategy=spec.strategy,
        group_size=spec.group_size,
    )
    if spec.type == "float":
        fp8_max = torch.finfo(torch.float8_e4m3fn).max
        q = (weight / scale).clamp(-fp8_max, fp8_max).to(torch.float8_e4m3fn)
        return {"weight": q, "weight_scale": scale}
    half = 2 ** (spec.num_bits - 1)
    if spec.group_size is None:
        q = torch.round((weight / scale).clamp(-half, half - 1)).to(torch.int8)
        return {"weight": q, "weight_scale": scale}
    out_features, in_features = weight.shape
    groups = weight.reshape(out_features, -1, spec.group_size) / scale.unsqueeze(-1)
    q = torch.round(groups.clamp(-half, half - 1)).reshape(out_features, in_features)
    return {
        "weight_packed": pack_int4(q.to(torch.int8)),
        "weight_scale": scale,
        "weight_shape": torch.tensor([out_features, in_features], dtype=torch.int64),
    }


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack int4 values ``[rows, cols]`` (int8 in ``[-8, 7]``, ``cols`` a multiple of 8) into
    int32 ``[rows, cols / 8]``: value ``j`` of a row, plus 8, goes to bits ``4 * (j % 8)`` of
    word ``j // 8`` (compressed-tensors' ``pack-quantized`` layout)."""
    nibbles = (q.to(torch.int32) + 8).reshape(q.shape[0], -1, 8)
    packed = torch.zeros(nibbles.shape[:2], dtype=torch.int32, device=q.device)
    for k in range(8):
        packed |= nibbles[..., k] << (4 * k)
    return packed


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without aliases: a tensor sharing another's memory (tied
    embeddings) is left out, as transformers' save_pretrained does; loading re-ties it."""
    tensors: dict[str, torch.Tensor] = {}
    seen = set()
    for name, tensor in model.state_dict().items():
        alias = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape)
        if tensor.numel() and alias in seen:
            continue
        seen.add(alias)
        tensors[name] = tensor.detach()
    return tensors


def _config_document(model: nn.Module, config: Any) -> dict[str, Any]:
    document = config.to_dict()
    if not document.get("architectures"):
        document["architectures"] = [type(model).__name__]
    dtypes = [p.dtype for p in model.parameters() if p.is_floating_point()]
    if dtypes:
        document["dtype"] = str(dtypes[0]).removeprefix("torch.")
    return document


def _quantization_config(
    spec: _Scheme,
    weight_observer: str,
    inputs: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
    ignore: list[str],
) -> dict[str, Any]:
    weights = _args(spec.num_bits, spec.type, True, spec.strategy, spec.group_size)
    weights["observer"] = weight_observer
    input_activations = None
    if spec.activations:
        symmetric = all(zero_point is None for _, zero_point in inputs.values())
        if not symmetric and any(zero_point is None for _, zero_point in inputs.values()):
            raise ExportError("the input observers mix symmetric and affine qschemes")
        input_activations = _args(spec.num_bits, spec.type, symmetric, "tensor", None)
    return {
        "quant_method": "compressed-tensors",
        "format": spec.format,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": input_activations,
                "output_activations": None,
                "format": spec.format,
            }
        },
        "ignore": ignore,
    }


def _args(
    num_bits: int, type: str, symmetric: bool, strategy: str, group_size: int | None
) -> dict[str, Any]:
    """compressed-tensors' ``QuantizationArgs`` fields of a static scheme."""
    return {
        "num_bits": num_bits,
        "type": type,
        "symmetric": symmetric,
        "strategy": strategy,
        "group_size": group_size,
        "dynamic": False,
        "observer": None,
    }


def _write(
    directory: Path, source: Path, tensors: dict[str, torch.Tensor], document: dict[str, Any]
) -> None:
    """Build the folder next to ``directory`` and move it in place once complete."""
    from safetensors.torch import save_file

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for path in source.iterdir():
            if path.name.startswith(".") or path.name == "config.json" or _holds_weights(path):
                continue
            if path.is_dir():
                shutil.copytree(path, staging / path.name)
            else:
                shutil.copy2(path, staging / path.name)
        (staging / "config.json").write_text(json.dumps(document, indent=2) + "\n")
        cpu = {name: t.to("cpu").contiguous() for name, t in tensors.items()}
        save_file(cpu, str(staging / "model.safetensors"), metadata={"format": "pt"})
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _holds_weights(path: Path) -> bool:
    if path.is_dir():
        return any(_holds_weights(p) for p in path.rglob("*") if p.is_file())
    return path.name.endswith(_WEIGHT_SUFFIXES) or path.name in _WEIGHT_INDEXES


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--export``, ``--export-dir``, ``--ignore`` and ``--overwrite`` to ``tritonobs
    calibrate``'s parser (whose ``--weight-observer`` the export uses too)."""
    group = parser.add_argument_group("export (a compressed-tensors checkpoint, docs/export.md)")
    group.add_argument(
        "--export",
        choices=tuple(SCHEMES),
        default=None,
        help="after calibrating, write the model as a compressed-tensors checkpoint: fp8 and "
        "int8 (W8A8, static input scales from --observer), w4a16 (int4 weights, group 128); "
        "weight scales by --weight-observer",
    )
    group.add_argument("--export-dir", type=Path, default=None, help="the folder --export writes")
    group.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="LAYER",
        help="a Linear layer --export leaves in float: a name or re:REGEX; repeatable "
        "(lm_head always stays in float)",
    )
    group.add_argument("--overwrite", action="store_true", help="replace a non-empty --export-dir")


def check_export_args(args: argparse.Namespace) -> None:
    """Refuse bad export options before calibrating.

    Raises:
        ExportError: ``--export`` without ``--export-dir`` or the other way round, or an
            ``--export-dir`` that is not empty without ``--overwrite``.
    """
    if args.export is None:
        if args.export_dir is not None:
            raise ExportError("--export-dir needs --export fp8|int8|w4a16")
        return
    if args.export_dir is None:
        raise ExportError(f"--export {args.export} needs --export-dir DIR")
    directory = args.export_dir
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"--export-dir {directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not args.overwrite:
        raise ExportError(
            f"--export-dir {directory} exists and is not empty; pass --overwrite to replace it"
        )


def export_from_args(
    args: argparse.Namespace, model: nn.Module, result: CalibrationResult, source: Path
) -> Path | None:
    """Run the export ``args`` ask for (``None`` when ``--export`` is not given).

    Args:
        args: parsed options: those of :func:`add_export_arguments` and ``weight_observer``.
        model: the calibrated model.
        result: its calibration.
        source: the model's folder (tokenizer files).

    Returns:
        The export folder, or ``None``.
    """
    if args.export is None:
        return None
    return export_compressed_tensors(
        model,
        result,
        args.export_dir,
        args.export,
        weight_observer=args.weight_observer,
        source=source,
        ignore=args.ignore,
        overwrite=args.overwrite,
    )
