"""``tritonobs::entropy_divergence``: ModelOpt's KL divergence of every cut point at once.

ModelOpt 0.47.0's ``_compute_amax_entropy`` loops in Python over the cut points
``i = start_bin, start_bin + stride, ..., len(bins)`` of the integer histogram ``b`` (its float32
counts truncated to int32, with ``b[0]`` replaced by ``b[1]``). For a cut ``i`` it compares

* the reference ``p``: ``b[:i]`` with the clipped tail ``sum(b[i:])`` added to ``b[i - 1]``, and
* the quantized ``q``: ``b[:i]`` split into ``nbins`` groups (bin ``j`` goes to group
  ``floor(j * nbins / i)``), each non-zero bin replaced by its group's mean over non-zero bins,
  zero bins staying 0,

both normalised, with ``scipy.stats.entropy(p, q)``, and keeps the last cut of smallest divergence.

This op evaluates every cut from prefix sums, ``O(nbins)`` per cut instead of ``O(i)``. With
``T = sum(b)``, ``C``/``Z``/``L`` the prefix sums of ``b``, of ``b > 0`` and of ``b ln b``, and, per
group ``k`` of cut ``i``, ``S_k``/``N_k`` its sum and non-zero count (``a_k = S_k / N_k``),
``Q = C[i]``, ``r = b[i-1] + T - Q`` and ``K`` the group of bin ``i - 1``:

    T * KL = L[i-1] - sum_k S_k ln a_k + b[i-1] ln a_K + C[i-1] ln(Q/T)
             + r (ln r - ln a_K + ln(Q/T))            (the last term only when r > 0)

It is ``inf`` where ``r > 0`` but ``b[i-1] = 0`` (``p > 0`` where ``q = 0``) and NaN where
``Q = 0`` (``q`` is 0/0), as in ModelOpt. The values agree with ModelOpt's to about ``1e-12``
(another summation order): :func:`tritonobs.llm_calibrators.histogram_amax` re-evaluates the cuts
within a tolerance of the minimum with ModelOpt's exact arithmetic (:func:`modelopt_divergence`) to
pick the same cut bit for bit.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from tritonobs.ops._dispatch import define_op

# Cuts per block of the torch reference (a [cuts, nbins] float64 tile per block).
CUT_BLOCK = 2048


def cut_points(bins: int, start_bin: int, stride: int) -> torch.Tensor:
    """ModelOpt's cut points ``range(start_bin, bins + 1, stride)`` as int64."""
    return torch.tensor(range(start_bin, bins + 1, stride), dtype=torch.int64)


def prefix_sums(counts: torch.Tensor) -> torch.Tensor:
    """``[3, n + 1]`` float64: the prefix sums of ``b``, of ``b > 0`` and of ``b ln b``."""
    b = counts.to(torch.float64)
    terms = torch.stack([b, (b > 0).to(torch.float64), torch.where(b > 0, b * b.log(), 0.0)])
    return torch.nn.functional.pad(terms.cumsum(dim=1), (1, 0))


def _divergence_block(prefix: torch.Tensor, b: torch.Tensor, cuts: torch.Tensor, nbins: int):
    c, z, ell = prefix
    total = c[-1]
    k = torch.arange(nbins + 1, dtype=torch.int64, device=b.device)
    # Group k of cut i holds bins ceil(k i / nbins) .. ceil((k + 1) i / nbins) - 1.
    bounds = (k[None, :] * cuts[:, None] + nbins - 1) // nbins
    sums = c[bounds[:, 1:]] - c[bounds[:, :-1]]
    nonzero = z[bounds[:, 1:]] - z[bounds[:, :-1]]
    log_mean = torch.where(nonzero > 0, (sums / nonzero).log(), 0.0)
    last = cuts - 1
    b_last = b[last]
    log_mean_last = log_mean.gather(1, ((last * nbins) // cuts)[:, None])[:, 0]
    q = c[cuts]
    r = b_last + total - q
    log_qt = (q / total).log()
    acc = ell[last] - (sums * log_mean).sum(dim=1) + b_last * log_mean_last + c[last] * log_qt
    acc = acc + torch.where(r > 0, r * (r.log() - log_mean_last + log_qt), 0.0)
    kl = acc / total
    kl = torch.where((b_last == 0) & (r > 0), math.inf, kl)
    return torch.where(q == 0, math.nan, kl)


def entropy_divergence_torch(
    counts: torch.Tensor, start_bin: int, stride: int, nbins: int
) -> torch.Tensor:
    """Torch reference of :func:`entropy_divergence` (float64, blocks of ``CUT_BLOCK`` cuts)."""
    b = counts.to(torch.float64)
    prefix = prefix_sums(counts)
    cuts = cut_points(counts.numel(), start_bin, stride).to(counts.device)
    if cuts.numel() == 0:
        return torch.empty(0, dtype=torch.float64, device=counts.device)
    return torch.cat(
        [_divergence_block(prefix, b, block, nbins) for block in cuts.split(CUT_BLOCK)]
    )


def _entropy_divergence_fake(counts, start_bin, stride, nbins):
    n = len(range(start_bin, counts.shape[0] + 1, stride))
    return counts.new_empty((n,), dtype=torch.float64)


@define_op(
    entropy_divergence_torch,
    "entropy_divergence:entropy_divergence_triton",
    _entropy_divergence_fake,
)
def entropy_divergence(
    counts: torch.Tensor, start_bin: int, stride: int, nbins: int
) -> torch.Tensor:
    """KL divergence of every cut point of ModelOpt's entropy calibration, in float64.

    Args:
        counts: int64 ``[n]``, ModelOpt's integer histogram with ``counts[0]`` already replaced
            by ``counts[1]``.
        start_bin: first cut, ``>= 1``.
        stride: distance between cuts, ``>= 1``.
        nbins: quantization levels of one sign (``1 << (num_bits - 1 + unsigned)``).

    Returns:
        float64 ``[len(range(start_bin, n + 1, stride))]``: the divergence of each cut (``inf``
        or NaN where ModelOpt's is).
    """


def _rel_entr(x: float, y: float) -> float:
    # scipy.special.rel_entr (scipy 1.17): log1p for close ratios, the C library's log (Python's
    # math module calls the same one) otherwise.
    if x > 0 and y > 0:
        ratio = x / y
        if 0.5 < ratio < 2:
            return x * math.log1p((x - y) / y)
        if sys.float_info.min < ratio < math.inf:
            return x * math.log(ratio)
        return x * (math.log(x) - math.log(y))
    if x == 0 and y >= 0:
        return 0.0
    return math.inf


def modelopt_divergence(b: np.ndarray, cut: int, nbins: int) -> float:
    """ModelOpt's divergence of one cut, with its exact arithmetic (host, float64).

    Same distributions, same float64 operations and the same summation order as ModelOpt's
    loop body followed by ``scipy.stats.entropy`` (``numpy.sum``'s pairwise sums on arrays of
    the same length), so the value is bit for bit ModelOpt's.

    Args:
        b: int32 histogram with ``b[0]`` replaced by ``b[1]``.
        cut: the cut point ``i``, ``1 <= i <= len(b)``.
        nbins: quantization levels of one sign.

    Returns:
        The divergence (may be ``inf`` or NaN, as ModelOpt's).
    """
    head = b[:cut]
    group = np.digitize(np.arange(cut), np.linspace(0, cut, num=nbins + 1)) - 1
    nonzero = head != 0
    sums = np.zeros(nbins, dtype=np.float64)
    np.add.at(sums, group[nonzero], head[nonzero])
    members = np.bincount(group[nonzero], minlength=nbins)
    sums[members > 0] /= members[members > 0]
    quantized = np.zeros(cut, dtype=np.float64)
    quantized[nonzero] = sums[group[nonzero]]
    reference = np.array(head)
    reference[-1] += np.sum(b[cut:])
    with np.errstate(invalid="ignore", divide="ignore"):
        p = reference.astype(np.float64)
        p = p / np.sum(p, axis=0, keepdims=True)
        q = quantized / np.sum(quantized, axis=0, keepdims=True)
    if np.isnan(p).any() or np.isnan(q).any():
        return math.nan
    return float(
        np.sum(np.array([_rel_entr(x, y) for x, y in zip(p.tolist(), q.tolist(), strict=True)]))
    )
