"""The LLM calibration methods of NVIDIA ModelOpt and llm-compressor, same numbers, vectorized.

* :class:`AmaxHistogramObserver`: ModelOpt 0.47.0's ``HistogramCalibrator`` as an observer: the
  forward collects the same histogram of ``|x|`` (one in-place op, ``tritonobs::amax_histogram_update``),
  :meth:`~AmaxHistogramObserver.compute_amax` runs its "entropy", "percentile" or "mse" method.
* :func:`histogram_amax`: those three methods on any such histogram.
* :func:`weight_qparams`: llm-compressor 0.14.0.1's ``memoryless_minmax`` and ``memoryless_mse``
  weight observers (strategies tensor, channel, group, block; int and FP8 E4M3).

See ``docs/llm_calibrators.md`` for what matches the peer libraries exactly and how it is tested.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tritonobs._base import ObserverBase, detached
from tritonobs.ops.amax_histogram_update import amax_histogram_update
from tritonobs.ops.entropy_divergence import entropy_divergence, modelopt_divergence
from tritonobs.ops.histogram_mse import histogram_mse, int_bound, modelopt_mse
from tritonobs.ops.weight_mse_sweep import blocks, mse_search, qparams_from_range, weight_groups

__all__ = [
    "HISTOGRAM_METHODS",
    "WEIGHT_OBSERVERS",
    "WEIGHT_STRATEGIES",
    "WEIGHT_TYPES",
    "AmaxHistogramObserver",
    "histogram_amax",
    "weight_qparams",
]

HISTOGRAM_METHODS = ("entropy", "mse", "percentile")
FP8_E4M3 = (4, 3)
"""ModelOpt's ``num_bits`` for FP8 E4M3."""

# A cut whose fast divergence is within this of the smallest one is re-evaluated exactly. The fast
# values are within ~1e-12 of ModelOpt's (float64 prefix sums); the margin is a thousand times that.
ENTROPY_TOLERANCE = 1e-9
# The same for "mse": ModelOpt's float32 mean is within ~1e-6 (relative) of the exact sum.
MSE_RTOL = 2e-4

NumBits = int | tuple[int, int]


def _is_fp8(num_bits: NumBits) -> bool:
    return tuple(num_bits) == FP8_E4M3 if isinstance(num_bits, (tuple, list)) else False


def check_num_bits(num_bits: NumBits) -> None:
    """``ValueError`` unless ``num_bits`` is an int from 2 to 16 or ``(4, 3)`` (FP8 E4M3)."""
    if _is_fp8(num_bits):
        return
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 16:
        raise ValueError(
            f"num_bits must be an int from 2 to 16 or (4, 3) for FP8 E4M3; got {num_bits!r}"
        )


def quant_bound(num_bits: NumBits, unsigned: bool) -> float:
    """The largest quantized magnitude: ``2 ** (num_bits - 1 + unsigned) - 1``, or 448 for FP8."""
    return 448.0 if _is_fp8(num_bits) else int_bound(int(num_bits), unsigned)  # type: ignore[arg-type]


def _check_method(method: str) -> None:
    if method not in HISTOGRAM_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(HISTOGRAM_METHODS)}")


def _check_search(start_bin: int, stride: int, percentile: float) -> None:
    if start_bin < 1:
        raise ValueError(f"start_bin must be >= 1; got {start_bin}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1; got {stride}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100]; got {percentile}")


def _edge(edges: np.ndarray, index: int) -> torch.Tensor:
    if index >= len(edges):
        raise ValueError(
            f"the chosen cut {index} has no bin edge ({len(edges)} edges): the histogram and its "
            "edges do not match"
        )
    return torch.tensor(edges[index].item(), dtype=torch.float32)


def _last_argmin(values: np.ndarray) -> int:
    # numpy's argmin on the reversed array: NaN wins, then the smallest, ties to the last index.
    return len(values) - 1 - int(np.argmin(values[::-1]))


def _entropy_cut(counts: torch.Tensor, nbins: int, start_bin: int, stride: int) -> int:
    b = counts.to(torch.int64)
    b[0] = b[1]
    fast = entropy_divergence(b, start_bin, stride, nbins).cpu().numpy()
    finite = np.isfinite(fast)
    if np.isnan(fast).any() or not finite.any():
        return _last_argmin(fast)
    best = fast[finite].min()
    near = np.flatnonzero(finite & (fast <= best + ENTROPY_TOLERANCE * (1 + abs(best))))
    b32 = b.cpu().numpy().astype(np.int32)
    exact = np.array([modelopt_divergence(b32, start_bin + k * stride, nbins) for k in near])
    return int(near[_last_argmin(exact)])


def _mse_amax(
    counts: torch.Tensor,
    edges: torch.Tensor,
    num_bits: NumBits,
    unsigned: bool,
    start_bin: int,
    stride: int,
) -> torch.Tensor:
    centers = (edges[1:] + edges[:-1]) / 2
    if centers.numel() != counts.numel():
        raise ValueError(
            f"mse needs one more edge than bins; got {counts.numel()} bins, {edges.numel()} edges"
        )
    if start_bin >= centers.numel():
        raise ValueError(f"start_bin {start_bin} leaves no cut in {centers.numel()} bins")
    fp8 = _is_fp8(num_bits)
    bits = 8 if fp8 else int(num_bits)  # type: ignore[arg-type]
    weights = counts.to(torch.float32)
    fast = histogram_mse(weights, centers, start_bin, stride, bits, unsigned, fp8).cpu().numpy()
    near = np.flatnonzero(fast <= fast.min() * (1 + MSE_RTOL))
    exact = np.array(
        [modelopt_mse(weights, centers, start_bin + k * stride, bits, unsigned, fp8) for k in near],
        dtype=np.float32,
    )
    return centers[start_bin + int(near[np.argmin(exact)]) * stride].clone()


def histogram_amax(
    histogram: torch.Tensor,
    bin_edges: torch.Tensor,
    method: str,
    *,
    num_bits: NumBits = 8,
    unsigned: bool = False,
    start_bin: int = 128,
    stride: int = 1,
    percentile: float = 99.99,
) -> torch.Tensor:
    """The amax ModelOpt 0.47.0's ``HistogramCalibrator.compute_amax`` picks from a histogram.

    * ``"entropy"``: the last cut point of smallest KL divergence between the clipped histogram
      and its ``nbins``-level quantization (``nbins = 2 ** (num_bits - 1 + unsigned)``), bit for bit
      ModelOpt's choice; every cut is evaluated at once (``tritonobs::entropy_divergence``) and the
      few near the minimum again with ModelOpt's exact arithmetic.
    * ``"percentile"``: the left edge of the bin where the cumulative distribution reaches
      ``percentile`` (numpy's float64 ``cumsum``, as ModelOpt).
    * ``"mse"``: the bin centre of smallest fake-quantization error, as ModelOpt's search would
      return if it called ``fake_tensor_quant`` correctly (0.47.0 passes ``num_bits`` as the bias
      and always returns the centre of bin ``start_bin``; see ``docs/llm_calibrators.md``).

    Synchronizes with the host.

    Args:
        histogram: float32 ``[n]`` counts (ModelOpt's ``_calib_hist``); truncated to int32 as
            ModelOpt does.
        bin_edges: float32 ``[n + 1]`` edges (``_calib_bin_edges``).
        method: ``"entropy"``, ``"mse"`` or ``"percentile"``.
        num_bits: integer bits, or ``(4, 3)`` for FP8 E4M3 ("mse" and "percentile" only).
        unsigned: unsigned integer range.
        start_bin: first cut point of "entropy" and "mse".
        stride: distance between cut points.
        percentile: for "percentile", in ``[0, 100]``.

    Returns:
        0-d float32 tensor on the CPU ("mse": on the histogram's device).

    Raises:
        ValueError: unknown method, bad ``num_bits`` (or FP8 with "entropy"), ``start_bin``,
            ``stride`` or ``percentile``, or a histogram with no cut point to search.
    """
    _check_method(method)
    check_num_bits(num_bits)
    _check_search(start_bin, stride, percentile)
    counts = histogram.detach().to(torch.int32)
    edges = bin_edges.detach().to(torch.float32)
    if method == "percentile":
        hist = counts.cpu().numpy()
        cdf = np.cumsum(hist / hist.sum())
        return _edge(edges.cpu().numpy(), int(np.searchsorted(cdf, percentile / 100)))
    if method == "mse":
        return _mse_amax(counts, edges, num_bits, unsigned, start_bin, stride)
    if _is_fp8(num_bits):
        raise ValueError("entropy needs an integer num_bits (ModelOpt has no FP8 entropy)")
    if counts.numel() < 2 or start_bin > counts.numel():
        raise ValueError(
            f"entropy needs at least 2 bins and start_bin <= bins; got {counts.numel()} bins, "
            f"start_bin {start_bin}"
        )
    nbins = 1 << (int(num_bits) - 1 + int(unsigned))  # type: ignore[arg-type]
    cut = _entropy_cut(counts, nbins, start_bin, stride)
    return _edge(edges.cpu().numpy(), start_bin + cut * stride)


class AmaxHistogramObserver(ObserverBase):
    r"""ModelOpt's ``HistogramCalibrator`` as an observer: a histogram of ``|x|``, amax by search.

    The forward is one op (``tritonobs::amax_histogram_update``) that updates the buffers in place,
    with no host sync in the observer code and no branch on values, so it traces under
    ``torch.compile(fullgraph=True)``. After any stream, ``histogram[:num_bins]`` and
    ``bin_edges[:num_edges]`` are ModelOpt's ``_calib_hist`` and ``_calib_bin_edges`` value for
    value (:meth:`collected` returns them). The histogram grows when a batch passes the range, so
    the buffers have a fixed capacity of ``max_bins`` bins; a stream that needs more is refused by
    :meth:`compute_amax` (raise ``max_bins``). NaN and inf are skipped and counted in the
    non-persistent ``nonfinite_count``.

    Args:
        bins: bins of the first batch (ModelOpt's ``num_bins``).
        skip_zeros: drop zeros before counting.
        method: default method of :meth:`compute_amax`: ``"entropy"``, ``"mse"``, ``"percentile"``.
        num_bits: integer bits, or ``(4, 3)`` for FP8 E4M3.
        unsigned: unsigned integer range.
        start_bin: first cut point of "entropy" and "mse".
        stride: distance between cut points.
        percentile: for "percentile".
        max_bins: capacity of the buffers; ``32 * bins`` by default.
        factory_kwargs: ``device`` for the buffers.
    """

    histogram: torch.Tensor
    bin_edges: torch.Tensor
    num_bins: torch.Tensor
    num_edges: torch.Tensor
    nonfinite_count: torch.Tensor

    def __init__(
        self,
        bins: int = 2048,
        skip_zeros: bool = False,
        method: str = "entropy",
        num_bits: NumBits = 8,
        unsigned: bool = False,
        start_bin: int = 128,
        stride: int = 1,
        percentile: float = 99.99,
        max_bins: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _check_method(method)
        check_num_bits(num_bits)
        _check_search(start_bin, stride, percentile)
        if method == "entropy" and _is_fp8(num_bits):
            raise ValueError("entropy needs an integer num_bits (ModelOpt has no FP8 entropy)")
        max_bins = 32 * bins if max_bins is None else max_bins
        if bins < 1 or max_bins < bins:
            raise ValueError(f"need 1 <= bins <= max_bins; got bins={bins}, max_bins={max_bins}")
        fp8 = _is_fp8(num_bits)
        dtype = torch.float8_e4m3fn if fp8 else torch.quint8 if unsigned else torch.qint8
        super().__init__(dtype=dtype)
        self.qscheme = torch.per_tensor_symmetric
        self.bins = bins
        self.skip_zeros = skip_zeros
        self.method = method
        self.num_bits = tuple(num_bits) if fp8 else num_bits  # type: ignore[arg-type]
        self.unsigned = unsigned
        self.start_bin = start_bin
        self.stride = stride
        self.percentile = percentile
        self.max_bins = max_bins
        device = torch.nn.factory_kwargs(factory_kwargs).get("device")
        self.register_buffer("histogram", torch.zeros(max_bins, device=device))
        self.register_buffer("bin_edges", torch.zeros(max_bins + 1, device=device))
        int64 = {"dtype": torch.int64, "device": device}
        self.register_buffer("num_bins", torch.zeros((), **int64))
        self.register_buffer("num_edges", torch.zeros((), **int64))
        self.register_buffer("nonfinite_count", torch.zeros((), **int64), persistent=False)

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Fold ``|x_orig|`` into the histogram in place; returns ``x_orig``."""
        self._check_input(x_orig)
        if x_orig.numel() == 0:
            return x_orig
        amax_histogram_update(
            detached(x_orig),
            self.histogram,
            self.bin_edges,
            self.num_bins,
            self.num_edges,
            self.nonfinite_count,
            self.bins,
            self.skip_zeros,
        )
        return x_orig

    def collected(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """ModelOpt's ``(_calib_hist, _calib_bin_edges)``: copies of the used part of the buffers.

        Returns ``None`` before any data. Synchronizes.

        Raises:
            RuntimeError: the stream needed more than ``max_bins`` bins.
        """
        used = int(self.num_bins)
        if used == 0:
            return None
        if used > self.max_bins:
            raise RuntimeError(
                f"the histogram needed {used} bins, past max_bins={self.max_bins}: its range grew "
                f"{used / self.bins:.0f}x past the first batch's; observe again with a larger max_bins"
            )
        return self.histogram[:used].clone(), self.bin_edges[: int(self.num_edges)].clone()

    def compute_amax(self, method: str | None = None, **overrides: Any) -> torch.Tensor:
        """The amax of :func:`histogram_amax` on the collected histogram.

        Args:
            method: ``"entropy"``, ``"mse"`` or ``"percentile"``; the constructor's by default.
            overrides: ``num_bits``, ``unsigned``, ``start_bin``, ``stride``, ``percentile``
                for this call.

        Returns:
            0-d float32 tensor on the observer's device.

        Raises:
            RuntimeError: no data observed yet, or the histogram overflowed ``max_bins``.
            ValueError: as :func:`histogram_amax`, or an unknown override.
        """
        known = ("num_bits", "unsigned", "start_bin", "stride", "percentile")
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown compute_amax arguments {unknown}; choose from {known}")
        collected = self.collected()
        if collected is None:
            raise RuntimeError("AmaxHistogramObserver has observed no data: run it first")
        options = {name: overrides.get(name, getattr(self, name)) for name in known}
        amax = histogram_amax(*collected, method or self.method, **options)
        return amax.to(self.histogram.device)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Symmetric ``(amax / bound, 0)`` of :meth:`compute_amax` (bound: 127, 255 unsigned,
        448 FP8), shapes ``[1]``; a zero amax gives float32 epsilon. Synchronizes.

        Before any data: warns and returns ``(1.0, 0)`` as torch.ao's observers do.
        """
        device = self.histogram.device
        if int(self.num_bins) == 0:
            warnings.warn(
                "must run observer before calling calculate_qparams. "
                "Returning default scale and zero point ",
                stacklevel=2,
            )
            return torch.tensor([1.0], device=device), torch.tensor([0], device=device)
        bound = quant_bound(self.num_bits, self.unsigned)
        scale = (self.compute_amax() / bound).clamp_min(torch.finfo(torch.float32).eps)
        return scale.reshape(1), torch.zeros(1, dtype=torch.int64, device=device)

    def extra_repr(self) -> str:
        return (
            f"bins={self.bins}, method={self.method!r}, num_bits={self.num_bits}, "
            f"unsigned={self.unsigned}, skip_zeros={self.skip_zeros}, max_bins={self.max_bins}"
        )


WEIGHT_OBSERVERS = ("minmax", "mse")
WEIGHT_TYPES = ("int", "float")
WEIGHT_STRATEGIES = ("tensor", "channel", "group", "block")


def _check_weight_args(
    w: torch.Tensor,
    observer: str,
    num_bits: int,
    type: str,
    strategy: str,
    group_size: int | None,
    block_structure: Sequence[int] | None,
) -> None:
    if observer not in WEIGHT_OBSERVERS:
        raise ValueError(
            f"unknown observer {observer!r}; choose one of {', '.join(WEIGHT_OBSERVERS)}"
        )
    if type not in WEIGHT_TYPES:
        raise ValueError(f"unknown type {type!r}; choose one of {', '.join(WEIGHT_TYPES)}")
    if strategy not in WEIGHT_STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(WEIGHT_STRATEGIES)}"
        )
    if type == "float" and num_bits != 8:
        raise ValueError(f"type 'float' supports num_bits 8 (FP8 E4M3); got {num_bits}")
    if type == "int" and (isinstance(num_bits, bool) or num_bits not in range(2, 17)):
        raise ValueError(f"type 'int' supports num_bits from 2 to 16; got {num_bits}")
    if group_size is not None and strategy != "group":
        raise ValueError("group_size needs strategy 'group'")
    if block_structure is not None and strategy != "block":
        raise ValueError("block_structure needs strategy 'block'")
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(
            f"weight_qparams needs a floating-point tensor; got {getattr(w, 'dtype', w)}"
        )
    if w.numel() == 0:
        raise ValueError("weight_qparams needs a non-empty weight")


def weight_qparams(
    w: torch.Tensor,
    *,
    observer: str = "minmax",
    num_bits: int = 8,
    type: str = "int",
    symmetric: bool = True,
    strategy: str = "channel",
    group_size: int | None = None,
    block_structure: Sequence[int] | None = None,
    grid: float = 100,
    maxshrink: float = 0.2,
    patience: int = 5,
    norm: float = 2.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight scale and zero point as llm-compressor 0.14.0.1's memoryless observers compute them.

    ``observer="minmax"`` is ``memoryless_minmax`` (the min/max of each group), exactly.
    ``observer="mse"`` is ``memoryless_mse`` on the CPU: each group's range is shrunk by
    ``p = 1 - i / grid`` for ``i < int(maxshrink * grid)``, the candidate with the smallest
    ``sum |fq(x) - x| ** norm`` wins, and the search stops once no group improved for ``patience``
    steps. The candidates of several steps are evaluated at once (``tritonobs::weight_mse_sweep``),
    with llm-compressor's operations and dtypes; see ``docs/llm_calibrators.md`` for how exact.
    Scales and zero points then come from compressed-tensors' ``calculate_qparams``.

    Args:
        w: the weight, floating point; ``[out, in]`` for channel, group and block.
        observer: ``"minmax"`` or ``"mse"``.
        num_bits: bits: 2 to 16 for ``"int"``, 8 for ``"float"``.
        type: ``"int"`` or ``"float"`` (FP8 E4M3).
        symmetric: symmetric scheme (zero point 0) or asymmetric.
        strategy: ``"tensor"``, ``"channel"`` (one scale per row), ``"group"`` (``group_size``
            columns per scale; the columns must divide evenly, as in llm-compressor) or ``"block"``
            (``block_structure = [rows, cols]``; the weight is zero-padded to whole blocks).
        group_size: columns per group, for ``"group"``.
        block_structure: ``[rows, cols]`` of a block, for ``"block"``.
        grid: MSE grid resolution.
        maxshrink: MSE's largest shrink.
        patience: MSE steps without improvement before stopping.
        norm: MSE error exponent.

    Returns:
        ``(scale, zero_point)``: the scale in ``w``'s dtype, the zero point int8 (int16 past 8
        bits) or FP8 E4M3; shape ``[1]`` (tensor), ``[*w.shape[:-1], 1]`` (channel),
        ``[*w.shape[:-1], in // group_size]`` (group), ``[ceil(out / rows), ceil(in / cols)]``
        (block).

    Raises:
        ValueError: unknown observer, type, strategy or bit width (the message lists the
            choices), or a group/block layout that does not fit the weight.
        TypeError: a weight that is not floating point.
    """
    _check_weight_args(w, observer, num_bits, type, strategy, group_size, block_structure)
    quant = (num_bits, type == "float", symmetric)
    w = w.detach()
    if observer == "minmax" and strategy == "block" and w.dtype == torch.float32:
        # float32: min/max of the blocks in place, without llm-compressor's transposed copy (for
        # 16-bit weights torch's short reductions are slower than the copy).
        view = blocks(w, block_structure)
        # Along the contiguous block columns first: 4x faster than both dimensions at once.
        lo, hi = view.amin(dim=3).amin(dim=1), view.amax(dim=3).amax(dim=1)
        return qparams_from_range(lo, hi, *quant)
    groups, shape = weight_groups(w, strategy, group_size, block_structure)
    groups = groups.contiguous()
    # amin/amax: torch.aminmax along a dimension is ~20x slower on the CPU.
    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)
    if observer == "mse":
        lo, hi = mse_search(groups, lo, hi, quant, grid, maxshrink, patience, norm)
    scale, zero_point = qparams_from_range(lo, hi, *quant)
    return scale.reshape(shape), zero_point.reshape(shape)
