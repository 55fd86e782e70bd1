"""``tritonobs::histogram_mse``: the quantization error of every cut of ModelOpt's "mse" search at once.

ModelOpt 0.47.0's ``_compute_amax_mse`` takes the bin centres ``c = (edges[1:] + edges[:-1]) / 2``
and the integer counts ``n`` (as float32) and, for every cut ``i`` in
``range(start_bin, len(c), stride)``, fake-quantizes the centres with ``amax = c[i]`` and computes
``mean((fq(c, amax) - c) ** 2 * n)`` in float32; the amax is the centre of the first cut with the
smallest error. ``fq`` is, for integer formats (``_tensor_quant``, narrow range)::

    s = (2 ** (num_bits - 1 + unsigned) - 1) / amax        (0 when amax <= 2 ** -24)
    fq(c) = clamp(round(c * s), -bound or 0, bound) / s    (/ 1 when amax <= 2 ** -24)

and for FP8 E4M3 (``num_bits=(4, 3)``, ``fp8_eager``)::

    s = 448 / amax  (448 when amax <= 2 ** -24),  fq(c) = e4m3(clamp(c * s, -448, 448)) * (1 / s)

This op evaluates every cut: each term ``(fq(c_j) - c_j) ** 2 * n_j`` with ModelOpt's float32
operations, summed in float64 (ModelOpt's float32 mean differs by about ``1e-6`` relative).
:func:`tritonobs.llm_calibrators.histogram_amax` recomputes the near-minimal cuts with ModelOpt's
own operation order (:func:`modelopt_mse`) before it picks one.
"""

from __future__ import annotations

import torch

from tritonobs.ops._dispatch import define_op

ZERO_AMAX = 1.0 / (1 << 24)
"""ModelOpt's threshold below which an amax counts as zero."""

FP8_MAX = 448.0

# Centres per block of the torch reference ([cuts, CENTER_BLOCK] float32 tiles).
CENTER_BLOCK = 1 << 20


def _fake_quant(centers: torch.Tensor, amax: torch.Tensor, bound: float, unsigned: bool, fp8: bool):
    # ModelOpt's fake quantization of ``centers`` (broadcast against ``amax``), float32.
    zero = amax <= ZERO_AMAX
    if fp8:
        scale = FP8_MAX / torch.where(zero, torch.ones_like(amax), amax)
        scaled = (centers * scale).clamp(min=-FP8_MAX, max=FP8_MAX)
        return scaled.to(torch.float8_e4m3fn).to(torch.float32) * (1 / scale)
    scale = torch.where(zero, 0.0, torch.tensor(bound, dtype=torch.float32) / amax)
    low = 0.0 if unsigned else -bound
    outputs = torch.clamp((centers * scale).round_(), low, bound)
    return outputs / torch.where(zero, 1.0, scale)


def int_bound(num_bits: int, unsigned: bool) -> float:
    """ModelOpt's integer ``max_bound``: ``2 ** (num_bits - 1 + unsigned) - 1``."""
    return 2.0 ** (num_bits - 1 + int(unsigned)) - 1.0


def histogram_mse_torch(
    counts: torch.Tensor,
    centers: torch.Tensor,
    start_bin: int,
    stride: int,
    num_bits: int,
    unsigned: bool,
    fp8: bool,
) -> torch.Tensor:
    """Torch reference of :func:`histogram_mse`: a ``[cuts, centres]`` sweep per block of cuts."""
    cuts = torch.arange(start_bin, centers.numel(), stride, device=centers.device)
    bound = int_bound(num_bits, unsigned)
    rows = max(1, CENTER_BLOCK // max(centers.numel(), 1))
    errors = []
    for block in cuts.split(rows):
        amax = centers[block][:, None]
        diff = _fake_quant(centers[None, :], amax, bound, unsigned, fp8) - centers[None, :]
        errors.append((diff**2 * counts[None, :]).sum(dim=1, dtype=torch.float64))
    if not errors:
        return torch.empty(0, dtype=torch.float64, device=centers.device)
    return torch.cat(errors)


def _histogram_mse_fake(counts, centers, start_bin, stride, num_bits, unsigned, fp8):
    n = len(range(start_bin, centers.shape[0], stride))
    return centers.new_empty((n,), dtype=torch.float64)


@define_op(histogram_mse_torch, "histogram_mse:histogram_mse_triton", _histogram_mse_fake)
def histogram_mse(
    counts: torch.Tensor,
    centers: torch.Tensor,
    start_bin: int,
    stride: int,
    num_bits: int,
    unsigned: bool,
    fp8: bool,
) -> torch.Tensor:
    """Sum of ModelOpt's squared fake-quantization errors for every cut ``amax = centers[i]``.

    Args:
        counts: float32 ``[n]``, the integer counts as float32.
        centers: float32 ``[n]``, the bin centres.
        start_bin: first cut.
        stride: distance between cuts, ``>= 1``.
        num_bits: integer bits (ignored with ``fp8``).
        unsigned: unsigned integer range.
        fp8: FP8 E4M3 (ModelOpt's ``num_bits=(4, 3)``).

    Returns:
        float64 ``[len(range(start_bin, n, stride))]``: per cut, the sum over bins of
        ``(fq(c) - c) ** 2 * n`` (ModelOpt's error times ``n``).
    """


def modelopt_mse(
    counts: torch.Tensor,
    centers: torch.Tensor,
    cut: int,
    num_bits: int,
    unsigned: bool,
    fp8: bool,
) -> float:
    """ModelOpt's float32 error of one cut, with its operations in its order (bit for bit)."""
    amax = centers[cut]
    quantized = _fake_quant(centers, amax, int_bound(num_bits, unsigned), unsigned, fp8)
    return ((quantized - centers) ** 2 * counts).mean().item()
