"""Merge observer statistics across processes with ``torch.distributed``.

After each rank has calibrated on its own shard of the data, :func:`sync_observers` leaves every
rank with the statistics of one process that saw the union of the shards:

* ``MinMaxObserver`` / ``PerChannelMinMaxObserver``: ``min_val`` is the minimum over the ranks of
  ``min_val`` and ``max_val`` the maximum (exact). Ranks that saw nothing hold ``(+inf, -inf)``
  (or a ``[0]``-shaped per-channel buffer, padded to ``[C]`` with ``(+inf, -inf)``), which the
  reduction ignores.
* ``MovingAverageMinMaxObserver`` / ``MovingAveragePerChannelMinMaxObserver``: each element
  becomes the mean, over the ranks whose value is finite (initialised) there, of the ranks'
  moving averages: summed in float64, divided by the number of such ranks, rounded once to
  float32. The moving average is linear in the batch statistics, so when every rank saw the same
  number of batches with the same ``averaging_constant`` this equals (up to float32 rounding) the
  moving average of the rank-averaged per-batch min/max. Elements no rank initialised stay
  ``(+inf, -inf)``.
* ``HistogramObserver``: the range becomes the union of the ranks' ranges; each rank's histogram
  is re-binned onto it with ``tritonobs::histogram_rebin`` (torch.ao's ``_upscale_histogram``; a
  rank whose range already equals the union keeps its counts as they are, as torch.ao does) and
  the histograms are summed (in float64, rounded once to float32).
* ``nonfinite_count`` is summed over the ranks.

Collectives: one 4-element layout check, one for the channel counts when there are per-channel
observers, one MIN and one SUM, whatever the number of observers (the statistics travel packed in
flat buffers). The only host reads are the agreed layout and channel counts, which size the
buffers; the statistics stay on the device, so with ``nccl`` the merge needs no other host sync.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tritonobs._base import ObserverBase
from tritonobs.histogram_observer import HistogramObserver
from tritonobs.observer import MinMaxObserver, PerChannelMinMaxObserver
from tritonobs.ops.histogram_rebin import histogram_rebin

__all__ = ["sync_observers"]

_MINMAX, _EMA, _PER_CHANNEL, _EMA_PER_CHANNEL, _HISTOGRAM = range(5)


@dataclass
class _Entry:
    """One observer to merge and where its values sit in the flat buffers."""

    observer: ObserverBase
    kind: int
    channels: int = 1
    # Offsets into the flat MIN and SUM buffers (-1: not in that buffer).
    min_at: int = -1
    sum_at: int = -1


def _kind(observer: ObserverBase) -> int | None:
    """The merge rule for ``observer``; ``None`` for observers without statistics."""
    if isinstance(observer, HistogramObserver):
        return _HISTOGRAM
    if isinstance(observer, PerChannelMinMaxObserver):
        return _PER_CHANNEL if observer._averaging_constant is None else _EMA_PER_CHANNEL
    if isinstance(observer, MinMaxObserver):
        return _MINMAX if observer._averaging_constant is None else _EMA
    return None


def _collect(module_or_observers: torch.nn.Module | Iterable[ObserverBase]) -> list[_Entry]:
    """The observers to merge, in ``modules()`` order (or the iterable's)."""
    if isinstance(module_or_observers, torch.nn.Module):
        candidates = list(module_or_observers.modules())
    else:
        candidates = list(module_or_observers)
        for obs in candidates:
            if not isinstance(obs, ObserverBase):
                raise TypeError(
                    f"sync_observers merges tritonobs observers; got {type(obs).__name__}"
                )
    entries = []
    for module in candidates:
        if isinstance(module, ObserverBase):
            kind = _kind(module)
            if kind is not None:
                entries.append(_Entry(module, kind))
    return entries


def _device(entries: list[_Entry], group: dist.ProcessGroup | None) -> torch.device:
    """Where the flat buffers live: the first observer's device, else the backend's."""
    if entries:
        return entries[0].observer.min_val.device  # type: ignore[union-attr]
    if "nccl" in str(dist.get_backend(group)):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _agree_layout(
    entries: list[_Entry], device: torch.device, group: dist.ProcessGroup | None
) -> None:
    """Raise ``ValueError`` on every rank unless all ranks hold the same observers in order."""
    layout = repr(
        [(e.kind, getattr(e.observer, "bins", 0), str(e.observer.dtype)) for e in entries]
    )
    signature = torch.tensor([len(entries), zlib.crc32(layout.encode())], dtype=torch.int64)
    both = torch.cat([signature, -signature]).to(device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    high_count, high_hash, neg_low_count, neg_low_hash = both.tolist()
    if (high_count, high_hash) != (-neg_low_count, -neg_low_hash):
        raise ValueError(
            "sync_observers: the ranks hold different observers (count, kinds, bins or dtypes "
            "differ); every rank must pass the same module or observer list"
        )


def _agree_channels(
    entries: list[_Entry], device: torch.device, group: dist.ProcessGroup | None
) -> None:
    """Set each per-channel entry's channel count ``C``: the same on every rank that observed."""
    per_channel = [e for e in entries if e.kind in (_PER_CHANNEL, _EMA_PER_CHANNEL)]
    if not per_channel:
        return
    counts = torch.tensor([e.observer.min_val.numel() for e in per_channel], dtype=torch.int64)
    # MAX of C, and MAX of -C over the ranks that observed (an empty rank sends -int64 max).
    empty_mark = torch.iinfo(torch.int64).max
    both = torch.cat([counts, -torch.where(counts > 0, counts, empty_mark)]).to(device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    agreed = both.tolist()
    n = len(per_channel)
    for i, entry in enumerate(per_channel):
        high, low = agreed[i], -agreed[n + i]
        if high > 0 and high != low:
            raise ValueError(
                f"sync_observers: per-channel observer #{i} has {low} channels on some rank and "
                f"{high} on another"
            )
        entry.channels = high


def _padded(value: torch.Tensor, channels: int, fill: float) -> torch.Tensor:
    """A per-channel buffer as ``[channels]`` float32 (a ``[0]`` buffer becomes all ``fill``)."""
    if value.numel() == 0:
        return torch.full((channels,), fill, dtype=torch.float32, device=value.device)
    return value.to(torch.float32).reshape(channels)


def _store(observer: ObserverBase, name: str, value: torch.Tensor) -> None:
    """Write ``value`` into buffer ``name``, replacing a buffer of another shape."""
    current = getattr(observer, name)
    if current.shape == value.shape:
        current.copy_(value)
    else:
        setattr(observer, name, value.to(current.dtype))


def sync_observers(
    module_or_observers: torch.nn.Module | Iterable[ObserverBase],
    group: dist.ProcessGroup | None = None,
) -> list[ObserverBase]:
    """Merge the statistics of tritonobs observers across the ranks of ``group``, in place.

    Every rank must call it (it is a collective) with the same observers in the same order. See the
    module docstring for what each observer's merged state equals.

    Args:
        module_or_observers: an ``nn.Module`` (every tritonobs observer among its
            ``named_modules()``, e.g. a model prepared by ``prepare_fx``; torch.ao observers are
            left alone) or an iterable of tritonobs observers. Observers without statistics
            (placeholder, fixed-qparams, recording) are skipped. Their buffers should share one
            device (the one that ``group``'s backend communicates on).
        group: the process group; the default group when ``None``.

    Returns:
        The observers that were merged, in order.

    Raises:
        RuntimeError: ``torch.distributed`` is not initialised.
        TypeError: the iterable holds something other than a tritonobs observer.
        ValueError: the ranks hold different observers, or a per-channel observer saw different
            channel counts on two ranks (raised on every rank).
    """
    entries = _collect(module_or_observers)
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("sync_observers needs an initialised torch.distributed process group")
    device = _device(entries, group)
    _agree_layout(entries, device, group)
    if not entries:
        return []
    _agree_channels(entries, device, group)

    low, high = _reduce_extremes(entries, device, group)
    totals = _reduce_sums(entries, low, high, device, group)
    _write_back(entries, low, high, totals)
    return [e.observer for e in entries]


def _reduce_extremes(
    entries: list[_Entry], device: torch.device, group: dist.ProcessGroup | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-reduce MIN of the min/max and histogram observers' ``min_val`` and negated ``max_val``.

    Returns:
        The flat merged minima and maxima; entry ``e`` owns ``[e.min_at, e.min_at + e.channels)``.
    """
    lows, negated_highs, width = [], [], 0
    for entry in entries:
        obs = entry.observer
        if entry.kind in (_MINMAX, _HISTOGRAM):
            low, high = obs.min_val.reshape(1), obs.max_val.reshape(1)
        elif entry.kind == _PER_CHANNEL:
            low = _padded(obs.min_val, entry.channels, float("inf"))
            high = _padded(obs.max_val, entry.channels, float("-inf"))
        else:
            continue
        entry.min_at = width
        width += entry.channels
        lows.append(low.to(device, torch.float32))
        negated_highs.append(-high.to(device, torch.float32))
    extremes = torch.cat(lows + negated_highs) if lows else torch.empty(0, device=device)
    if width:
        dist.all_reduce(extremes, op=dist.ReduceOp.MIN, group=group)
    return extremes[:width], -extremes[width:]


def _reduce_sums(
    entries: list[_Entry],
    low: torch.Tensor,
    high: torch.Tensor,
    device: torch.device,
    group: dist.ProcessGroup | None,
) -> torch.Tensor:
    """All-reduce SUM (float64) of nonfinite counts, moving-average sums and counts, histograms.

    float64 holds the counts exactly (below 2**53) and rounds the sums of float32 values once.

    Entry ``e`` owns, from ``e.sum_at``: its nonfinite count, then for a moving average the sums of
    the initialised mins and maxes and the number of initialised ranks (``channels`` each), for a
    histogram its ``bins`` re-binned counts.
    """
    parts, offset = [], 0
    for entry in entries:
        obs = entry.observer
        pieces = [obs.nonfinite_count.reshape(1)]
        if entry.kind in (_EMA, _EMA_PER_CHANNEL):
            ema_min = _padded(obs.min_val, entry.channels, float("inf"))
            ema_max = _padded(obs.max_val, entry.channels, float("-inf"))
            seen = ema_min <= ema_max
            zero = torch.zeros_like(ema_min)
            pieces += [torch.where(seen, ema_min, zero), torch.where(seen, ema_max, zero), seen]
        elif entry.kind == _HISTOGRAM:
            at = entry.min_at
            # Same range: unchanged; a rank that saw nothing: zeros (the op's contract).
            pieces.append(
                histogram_rebin(
                    obs.histogram, obs.min_val, obs.max_val, low[at], high[at], obs.upsample_rate
                )
            )
        entry.sum_at = offset
        flat = [p.to(device, torch.float64).reshape(-1) for p in pieces]
        offset += sum(p.numel() for p in flat)
        parts += flat
    totals = torch.cat(parts)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM, group=group)
    return totals


def _write_back(
    entries: list[_Entry], low: torch.Tensor, high: torch.Tensor, totals: torch.Tensor
) -> None:
    """Copy the merged statistics into each observer's buffers."""
    for entry in entries:
        obs, at, channels = entry.observer, entry.sum_at, entry.channels
        obs.nonfinite_count.copy_(totals[at].to(torch.int64))
        if channels == 0:  # a per-channel observer that no rank has fed
            continue
        shape = (channels,) if entry.kind in (_PER_CHANNEL, _EMA_PER_CHANNEL) else ()
        if entry.kind in (_EMA, _EMA_PER_CHANNEL):
            sums = totals[at + 1 : at + 1 + 3 * channels].reshape(3, channels)
            initialised = sums[2] > 0
            new_min = torch.where(initialised, sums[0] / sums[2], float("inf"))
            new_max = torch.where(initialised, sums[1] / sums[2], float("-inf"))
        else:
            new_min = low[entry.min_at : entry.min_at + channels]
            new_max = high[entry.min_at : entry.min_at + channels]
        _store(obs, "min_val", new_min.to(torch.float32).reshape(shape))
        _store(obs, "max_val", new_max.to(torch.float32).reshape(shape))
        if entry.kind == _HISTOGRAM:
            obs.histogram.copy_(totals[at + 1 : at + 1 + obs.bins].to(torch.float32))
