"""Resumable calibration: the observers' state every N batches, written atomically.

A checkpoint folder holds ``checkpoint.json`` (the manifest) and one ``state-<batches>.safetensors``
with every observer buffer. A checkpoint is written in this order, each file to a temporary name
in the folder first (flushed, fsynced, renamed, the folder fsynced): the tensors, then the
manifest, which names the tensors file and records its size and SHA-256. The manifest's rename is
the commit: until it happens the previous manifest and its tensors file stay untouched, so a
process killed at any moment leaves a complete checkpoint (or none). Older tensors files and
leftover temporary files are removed after the commit.

On reading, a manifest that does not parse, a missing tensors file or one whose size or SHA-256
differs raises :class:`CheckpointError` naming the file; there is no fallback to an older
checkpoint (after a commit none is kept). A manifest written for another model, observer or
argument set raises :class:`CheckpointMismatchError` listing what differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from tritonobs.calibrate.errors import CheckpointError, CheckpointMismatchError
from tritonobs.calibrate.observers import ObservedTensor, class_name, observer_config

CHECKPOINT_FORMAT = "tritonobs.checkpoint"
CHECKPOINT_VERSION = 1
MANIFEST = "checkpoint.json"
_STATE = re.compile(r"state-\d+\.safetensors")
_TEMPORARY = re.compile(r"\..*\.tmp")
# How many differences a mismatch message lists.
_SHOWN = 6


@dataclass
class SavedEntry:
    """One observer in a checkpoint: its buffers, call count and observer time."""

    calls: int
    seconds: float
    buffers: dict[str, torch.Tensor]


@dataclass
class SavedState:
    """The state of a calibration after ``batches`` batches (weights observed, if asked)."""

    batches: int
    seconds: float
    overhead_seconds: float
    entries: dict[str, SavedEntry]


def fingerprint(
    model: nn.Module,
    modules: Sequence[tuple[str, nn.Module]],
    entries: Sequence[ObservedTensor],
    total: int | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the caller's metadata, the number of batches
    planned, the model's class and target modules (with their weights' dtypes and shapes), and
    each key's observer class and configuration. JSON-normalised (tuples become lists)."""

    def weight(module: nn.Module) -> str | None:
        w = getattr(module, "weight", None)
        return (
            f"{str(w.dtype).removeprefix('torch.')}{list(w.shape)}"
            if isinstance(w, torch.Tensor)
            else None
        )

    described = {
        "metadata": metadata or {},
        "batches": total,
        "model": {"class": type(model).__qualname__, "targets": {n: weight(m) for n, m in modules}},
        "observers": {
            e.key: {"class": class_name(e.observer), "config": observer_config(e.observer)}
            for e in entries
        },
    }
    return json.loads(json.dumps(described))


def differences(saved: Any, now: Any, path: str = "") -> list[str]:
    """Each place where two fingerprints differ, as ``path: <saved> in the checkpoint, <now>
    now`` (``path: only in the checkpoint`` / ``only now`` for keys on one side)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        if "class" in saved and "class" in now and saved["class"] != now["class"]:
            # Another class: its configuration differs too, and says nothing more.
            return differences(saved["class"], now["class"], f"{path}/class")
        found = []
        for key in [*saved, *(k for k in now if k not in saved)]:
            where = f"{path}/{key}" if path else str(key)
            if key not in now:
                found.append(f"{where}: only in the checkpoint")
            elif key not in saved:
                found.append(f"{where}: only now")
            else:
                found.extend(differences(saved[key], now[key], where))
        return found
    if saved == now:
        return []
    return [f"{path}: {saved!r} in the checkpoint, {now!r} now"]


class Checkpoint:
    """A checkpoint folder of one calibration.

    Args:
        folder: the folder; created at the first write.
        fingerprint: this calibration's :func:`fingerprint`.
    """

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = folder / MANIFEST
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        """Whether the folder holds a committed checkpoint."""
        return self.manifest.is_file()

    def read(self) -> SavedState:
        """The committed state, checked against this calibration and against its checksum.

        Raises:
            CheckpointError: the manifest or the tensors file is missing, truncated or corrupt.
            CheckpointMismatchError: the checkpoint belongs to another calibration.
        """
        from safetensors.torch import load

        try:
            document = json.loads(self.manifest.read_bytes())
            if document.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format {document.get('format')!r}")
            if document.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"version {document.get('version')!r}")
            tensors_name = document["tensors"]
            size, digest = document["bytes"], document["sha256"]
            saved_fingerprint = document["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"{self.manifest} is not a complete {CHECKPOINT_FORMAT} manifest of version "
                f"{CHECKPOINT_VERSION} ({type(error).__name__}: {error}); remove the folder to "
                "start over"
            ) from error
        found = differences(saved_fingerprint, self.fingerprint)
        if found:
            more = f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
            raise CheckpointMismatchError(
                f"{self.manifest} was written by another calibration: "
                f"{'; '.join(found[:_SHOWN])}{more}"
            )
        tensors_path = self.folder / tensors_name
        try:
            data = tensors_path.read_bytes()
        except OSError as error:
            raise CheckpointError(f"{tensors_path}, named by {self.manifest}: {error}") from error
        actual = hashlib.sha256(data).hexdigest()
        if len(data) != size or actual != digest:
            raise CheckpointError(
                f"{tensors_path} is truncated or corrupt: {len(data)} bytes with SHA-256 "
                f"{actual[:16]}..., {self.manifest} records {size} bytes with SHA-256 "
                f"{digest[:16]}...; remove the folder to start over"
            )
        tensors = load(data)
        entries = {
            key: SavedEntry(
                item["calls"],
                item["seconds"],
                {name: tensors[f"{key}.state.{name}"] for name in item["buffers"]},
            )
            for key, item in document["entries"].items()
        }
        return SavedState(
            document["batches"], document["seconds"], document["overhead_seconds"], entries
        )

    def write(self, state: SavedState) -> None:
        """Commit ``state`` as the folder's checkpoint (see the module docstring)."""
        from safetensors.torch import save

        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{key}.state.{name}": tensor.detach().to("cpu").contiguous()
            for key, entry in state.entries.items()
            for name, tensor in entry.buffers.items()
        }
        data = save(tensors)
        tensors_name = f"state-{state.batches:08d}.safetensors"
        _write_atomically(self.folder / tensors_name, data)
        document = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "batches": state.batches,
            "seconds": state.seconds,
            "overhead_seconds": state.overhead_seconds,
            "tensors": tensors_name,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "fingerprint": self.fingerprint,
            "entries": {
                key: {"calls": e.calls, "seconds": e.seconds, "buffers": list(e.buffers)}
                for key, e in state.entries.items()
            },
        }
        _write_atomically(self.manifest, (json.dumps(document, indent=1) + "\n").encode())
        for stale in self.folder.iterdir():
            if stale.name != tensors_name and (
                _STATE.fullmatch(stale.name) or _TEMPORARY.fullmatch(stale.name)
            ):
                stale.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds either its old content or ``data``, whenever the process dies."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class DeferredSignals:
    """SIGINT and SIGTERM held until the batch in progress has finished, so that the last
    checkpoint holds whole batches: :attr:`pending` is set by the first signal, :meth:`stop`
    raises what the signal means (``KeyboardInterrupt``, ``SystemExit(128 + SIGTERM)``). A second
    signal raises at once. Installed only in the main thread (Python delivers signals there), and
    the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                # None: a handler installed outside Python, which could not be put back.
                if signal.getsignal(signum) is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is not None:
            self._raise(signum)
        self.pending = signum

    def stop(self) -> None:
        """Raise for the pending signal."""
        if self.pending is not None:
            self._raise(self.pending)

    @staticmethod
    def _raise(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
