"""Triton kernel of ``tritonobs::entropy_divergence``: every cut point's KL divergence in one launch."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tritonobs.kernels._launch import LaunchConfig, cdiv, device_guard, next_power_of_2, options
from tritonobs.ops.entropy_divergence import prefix_sums

BLOCK_CUTS = 16
MAX_BLOCK_GROUPS = 64
NUM_WARPS = 4


@triton.jit
def _log_mean(c_ptr, z_ptr, k, cut, NBINS: tl.constexpr):
    # ln(S_k / N_k) of group k of cut ``cut`` (0 for a group without non-zero bins), and S_k.
    lo = (k * cut + NBINS - 1) // NBINS
    hi = ((k + 1) * cut + NBINS - 1) // NBINS
    sums = tl.load(c_ptr + hi) - tl.load(c_ptr + lo)
    nonzero = tl.load(z_ptr + hi) - tl.load(z_ptr + lo)
    safe = tl.where(nonzero > 0, nonzero, 1.0)
    return tl.where(nonzero > 0, tl.log(tl.where(nonzero > 0, sums, 1.0) / safe), 0.0), sums


@triton.jit
def _entropy_divergence_kernel(
    prefix_ptr,
    b_ptr,
    out_ptr,
    n,
    start_bin,
    stride,
    num_cuts,
    NBINS: tl.constexpr,
    BLOCK_CUTS: tl.constexpr,
    BLOCK_GROUPS: tl.constexpr,
):
    """KL divergence of ``BLOCK_CUTS`` cut points ``i = start_bin + stride * c``, float64.

    ``prefix`` is ``[3, n + 1]``: ``C``, ``Z``, ``L``, the prefix sums of ``b``, ``b > 0`` and
    ``b ln b``. Per cut, with groups ``k`` of bins ``ceil(k i / NBINS) .. ceil((k+1) i / NBINS) - 1``,
    ``S_k``/``N_k`` their sums and non-zero counts, ``a_k = S_k / N_k``, ``T = C[n]``,
    ``Q = C[i]``, ``r = b[i-1] + T - Q`` and ``K`` the group of bin ``i - 1``::

        KL = (L[i-1] - sum_k S_k ln a_k + b[i-1] ln a_K + C[i-1] ln(Q/T)
              + [r > 0] r (ln r - ln a_K + ln(Q/T))) / T

    ``inf`` where ``r > 0 = b[i-1]``, NaN where ``Q = 0``.
    """
    c_ptr = prefix_ptr
    z_ptr = prefix_ptr + (n + 1)
    ell_ptr = prefix_ptr + 2 * (n + 1)
    offs = tl.program_id(0) * BLOCK_CUTS + tl.arange(0, BLOCK_CUTS)
    valid = offs < num_cuts
    cut = tl.where(valid, start_bin + offs * stride, n).to(tl.int64)
    acc = tl.zeros((BLOCK_CUTS,), dtype=tl.float64)
    for k0 in range(0, NBINS, BLOCK_GROUPS):
        k = k0 + tl.arange(0, BLOCK_GROUPS).to(tl.int64)
        log_mean, sums = _log_mean(c_ptr, z_ptr, k[None, :], cut[:, None], NBINS)
        acc -= tl.sum(sums * log_mean, axis=1)
    last = cut - 1
    b_last = tl.load(b_ptr + last).to(tl.float64)
    log_mean_last, _ = _log_mean(c_ptr, z_ptr, (last * NBINS) // cut, cut, NBINS)
    # An empty histogram (total 0) has q = 0 at every cut: NaN below; 1 avoids 0/0 meanwhile.
    total = tl.load(c_ptr + n)
    total = tl.where(total > 0, total, 1.0)
    q = tl.load(c_ptr + cut)
    r = b_last + total - q
    log_qt = tl.log(tl.where(q > 0, q, 1.0) / total)
    acc += tl.load(ell_ptr + last) + b_last * log_mean_last + tl.load(c_ptr + last) * log_qt
    log_r = tl.log(tl.where(r > 0, r, 1.0))
    acc += tl.where(r > 0, r * (log_r - log_mean_last + log_qt), 0.0)
    kl = acc / total
    kl = tl.where((b_last == 0) & (r > 0), float("inf"), kl)
    kl = tl.where(q == 0, float("nan"), kl)
    tl.store(out_ptr + offs, kl, mask=valid)


@functools.cache
def launch_config(nbins: int) -> LaunchConfig:
    """The launch of ``_entropy_divergence_kernel`` for ``nbins`` quantization levels."""
    constexprs = {
        "NBINS": nbins,
        "BLOCK_CUTS": BLOCK_CUTS,
        "BLOCK_GROUPS": min(next_power_of_2(nbins), MAX_BLOCK_GROUPS),
    }
    return LaunchConfig(_entropy_divergence_kernel, constexprs, options(NUM_WARPS))


COMPILE_SPECS = [
    launch_config(nbins).spec(
        {
            "prefix_ptr": "*fp64",
            "b_ptr": "*i64",
            "out_ptr": "*fp64",
            "n": "i32",
            "start_bin": "i32",
            "stride": "i32",
            "num_cuts": "i32",
        }
    )
    for nbins in (8, 128, 256)
]


def entropy_divergence_triton(
    counts: torch.Tensor, start_bin: int, stride: int, nbins: int
) -> torch.Tensor:
    """Launcher of :func:`tritonobs.ops.entropy_divergence.entropy_divergence` (one launch).

    The prefix sums are three float64 ``cumsum`` ops on the device; no host sync.
    """
    n = counts.numel()
    num_cuts = len(range(start_bin, n + 1, stride))
    out = torch.empty(num_cuts, dtype=torch.float64, device=counts.device)
    if num_cuts == 0:
        return out
    prefix = prefix_sums(counts).contiguous()
    with device_guard(counts.device):
        _entropy_divergence_kernel[(cdiv(num_cuts, BLOCK_CUTS),)](
            prefix,
            counts.to(torch.int64).contiguous(),
            out,
            n,
            start_bin,
            stride,
            num_cuts,
            **launch_config(nbins).kwargs,
        )
    return out
