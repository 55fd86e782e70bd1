"""What calibrate hands back: :class:`CalibrationResult`, its table, and save/load."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tritonobs.calibrate.observers import (
    ObservedTensor,
    build_observer,
    class_name,
    observer_config,
    set_buffers,
)
from tritonobs.calibrate.weights import WeightQParams

FORMAT_NAME = "tritonobs.calibration"
FORMAT_VERSION = 1


def _range(observer: nn.Module) -> tuple[float, float] | None:
    """Smallest and largest observed value, over all channels; ``None`` before any data."""
    min_val = getattr(observer, "min_val", None)
    max_val = getattr(observer, "max_val", None)
    if not isinstance(min_val, torch.Tensor) or not isinstance(max_val, torch.Tensor):
        return None
    if min_val.numel() == 0 or max_val.numel() == 0:
        return None
    low, high = float(min_val.min()), float(max_val.max())
    return (low, high) if low <= high else None


def observer_buffers(observer: nn.Module) -> dict[str, torch.Tensor]:
    """Every buffer of the observer by name, non-persistent ones (``nonfinite_count``) included."""
    return dict(observer.named_buffers())


class CalibrationResult:
    """What :func:`calibrate` observed: one :class:`ObservedTensor` per key, in model order.

    Args:
        entries: the observed tensors.
        batches: number of batches folded in (those of a resumed checkpoint included).
        seconds: wall time of the calibration loop (model, observers and calibrate's own code;
            on CUDA up to the end of the queued GPU work), added up over resumed runs.
        metadata: free-form JSON-serialisable description (saved with the result).
        overhead_seconds: calibrate's own host time in that loop, outside the model and the
            observers: its hooks from entry to exit less the observer call (finding the tensor,
            timing, counting) and moving each batch to the device. PyTorch's dispatch of the
            hooks inside ``nn.Module.__call__`` is not calibrate's code and not in it
            (docs/calibrate.md measures both). ``None`` when unknown (a file saved without it).
        weight_qparams: weight scales and zero points computed without an observer
            (:func:`~tritonobs.calibrate.compute_weight_qparams`), saved beside the entries.
    """

    def __init__(
        self,
        entries: Iterable[ObservedTensor],
        batches: int,
        seconds: float,
        metadata: dict[str, Any] | None = None,
        *,
        overhead_seconds: float | None = None,
        weight_qparams: WeightQParams | None = None,
    ) -> None:
        self.entries: dict[str, ObservedTensor] = {e.key: e for e in entries}
        self.batches = batches
        self.seconds = seconds
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.overhead_seconds = overhead_seconds
        self.weight_qparams = weight_qparams

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __getitem__(self, key: str) -> ObservedTensor:
        return self.entries[key]

    @property
    def observers(self) -> dict[str, nn.Module]:
        """The observer of each key."""
        return {k: e.observer for k, e in self.entries.items()}

    @property
    def observer_seconds(self) -> float:
        """Time spent in all observers' forward together."""
        return sum(e.seconds for e in self.entries.values())

    def qparams(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Scale and zero point of every key whose observer has seen data. Synchronizes."""
        return {k: e.qparams() for k, e in self.entries.items() if e.calls > 0}

    def statistics(self) -> dict[str, dict[str, float | int | None]]:
        """Per key: ``calls``, ``seconds``, observed ``min``/``max`` (over all channels; ``None``
        before any data or for observers without min/max) and ``nonfinite`` (NaN/inf values
        skipped, for observers that count them)."""
        stats: dict[str, dict[str, float | int | None]] = {}
        for key, entry in self.entries.items():
            value_range = _range(entry.observer)
            nonfinite = getattr(entry.observer, "nonfinite_count", None)
            stats[key] = {
                "calls": entry.calls,
                "seconds": entry.seconds,
                "min": None if value_range is None else value_range[0],
                "max": None if value_range is None else value_range[1],
                "nonfinite": int(nonfinite) if isinstance(nonfinite, torch.Tensor) else None,
            }
        return stats

    def table(self) -> str:
        """A fixed-width table: layer, role, calls, range, scale, zero point, observer time.

        Per-channel scale and zero point show as ``lowest..highest (C ch)``.
        """
        header = ("layer", "role", "calls", "min", "max", "scale", "zero_point", "time ms")
        rows = [header]
        qparams = self.qparams()
        for key, entry in self.entries.items():
            value_range = _range(entry.observer)
            scale, zero_point = qparams.get(key, (None, None))
            rows.append(
                (
                    entry.module or "<model>",
                    entry.role,
                    str(entry.calls),
                    "-" if value_range is None else f"{value_range[0]:.5g}",
                    "-" if value_range is None else f"{value_range[1]:.5g}",
                    _format_values(scale),
                    _format_values(zero_point),
                    f"{entry.seconds * 1e3:.3f}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for n, row in enumerate(rows):
            cells = [
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        overhead = self.overhead_seconds
        lines.append(
            f"{len(self.entries)} observed tensors, {self.batches} batches, "
            f"observers {self.observer_seconds * 1e3:.1f} ms, calibrate overhead "
            f"{'not recorded' if overhead is None else f'{overhead * 1e3:.2f} ms'}, "
            f"total {self.seconds:.2f} s"
        )
        return "\n".join(lines)

    def export(self, model: nn.Module, directory: str | Path, scheme: str, **options: Any) -> Path:
        """Write ``model`` as a compressed-tensors checkpoint with this result's input scales.

        Args:
            model: the calibrated transformers model.
            directory: the folder to write.
            scheme: ``"fp8"``, ``"int8"`` or ``"w4a16"``.
            options: ``weight_observer``, ``source``, ``ignore``, ``overwrite`` of
                :func:`tritonobs.export.export_compressed_tensors`.

        Returns:
            ``directory``.
        """
        from tritonobs.export import export_compressed_tensors

        return export_compressed_tensors(model, self, directory, scheme, **options)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.safetensors`` (tensors) and ``<stem>.json`` (metadata).

        The safetensors file holds, per key, ``<key>.scale`` and ``<key>.zero_point`` (keys with
        data only) and every observer buffer as ``<key>.state.<buffer>`` (non-persistent buffers
        such as ``nonfinite_count`` included), and with :attr:`weight_qparams`
        ``<layer>.weight.scale`` and ``<layer>.weight.zero_point``. The JSON file holds the format
        version, each observer's class and constructor configuration, call counts, timings,
        the weight scheme and ``metadata``.

        Args:
            path: the file name, with or without a ``.safetensors``/``.json`` suffix.

        Returns:
            The paths of the safetensors file and of the JSON file.

        Raises:
            ValueError: :attr:`weight_qparams` has a layer whose weight is also an observed key.
        """
        from safetensors.torch import save_file

        tensors_path, json_path = _paths(path)
        tensors: dict[str, torch.Tensor] = {}
        entries = []
        for key, (scale, zero_point) in self.qparams().items():
            tensors[f"{key}.scale"] = scale
            tensors[f"{key}.zero_point"] = zero_point
        if self.weight_qparams is not None:
            for key, (scale, zero_point) in self.weight_qparams.keyed().items():
                if key in self.entries:
                    raise ValueError(
                        f"{key} is both an observed weight and a {self.weight_qparams.scheme} "
                        "weight scale; calibrate without weights=True to save both"
                    )
                tensors[f"{key}.scale"] = scale
                tensors[f"{key}.zero_point"] = zero_point
        for key, entry in self.entries.items():
            observer = entry.observer
            persistent = set(observer.state_dict())
            buffers = observer_buffers(observer)
            for name, buffer in buffers.items():
                tensors[f"{key}.state.{name}"] = buffer
            entries.append(
                {
                    "key": key,
                    "module": entry.module,
                    "role": entry.role,
                    "observer": class_name(observer),
                    "config": observer_config(observer),
                    "buffers": {name: name in persistent for name in buffers},
                    "calls": entry.calls,
                    "seconds": entry.seconds,
                }
            )
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tensors_path), metadata={"format": "pt"})
        document = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "tensors": tensors_path.name,
            "torch_version": torch.__version__,
            "batches": self.batches,
            "seconds": self.seconds,
            "overhead_seconds": self.overhead_seconds,
            "metadata": self.metadata,
            "entries": entries,
            "weight_qparams": None
            if self.weight_qparams is None
            else self.weight_qparams.describe(),
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        return tensors_path, json_path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> CalibrationResult:
        """Rebuild a saved result: same keys, observer classes, configuration and buffers.

        Args:
            path: as given to :meth:`save` (either file, or the common stem).
            device: where the observers' buffers go.

        Returns:
            The result; its observers compute the same qparams as the saved ones.

        Raises:
            ValueError: the JSON file is not a tritonobs calibration of a known version, or names
                an observer class outside tritonobs and torch.ao.
        """
        from safetensors.torch import load_file

        tensors_path, json_path = _paths(path)
        document = json.loads(json_path.read_text())
        if document.get("format") != FORMAT_NAME or document.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{json_path} is not a {FORMAT_NAME} file of version {FORMAT_VERSION} "
                f"(format={document.get('format')!r}, version={document.get('version')!r})"
            )
        tensors = load_file(str(tensors_path), device=str(device))
        entries = []
        for item in document["entries"]:
            observer = build_observer(item["observer"], item["config"])
            key = item["key"]
            set_buffers(
                observer, {name: tensors[f"{key}.state.{name}"] for name in item["buffers"]}
            )
            entries.append(
                ObservedTensor(
                    module=item["module"],
                    role=item["role"],
                    observer=observer.to(device),
                    calls=item["calls"],
                    seconds=item["seconds"],
                )
            )
        weights = document.get("weight_qparams")
        return cls(
            entries,
            document["batches"],
            document["seconds"],
            document["metadata"],
            overhead_seconds=document.get("overhead_seconds"),
            weight_qparams=None if weights is None else WeightQParams.restore(weights, tensors),
        )


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _format_values(values: torch.Tensor | None) -> str:
    if values is None:
        return "-"
    flat = values.detach().flatten().double()
    if flat.numel() == 1:
        return f"{float(flat[0]):.5g}"
    return f"{float(flat.min()):.4g}..{float(flat.max()):.4g} ({flat.numel()} ch)"
