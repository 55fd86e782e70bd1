"""``tritonobs::quantization_error``: torch.ao's L2 quantization error of many candidate ranges at once.

For a histogram of ``bins`` counts over ``[min_val, max_val]`` and a candidate range made of the
source bins ``start..end``, torch.ao's ``HistogramObserver._compute_quantization_error`` splits the
candidate range into ``dst_nbins`` equal destination bins and sums, over every source bin, the
squared distance of its (uniformly spread) values to the centre of the destination bins they fall
in; values outside the range are clamped into the first/last destination bin. This op evaluates that
error for ``K`` candidates in one call, with the same float32 arithmetic per element (only the order
of the final sum may differ on other backends).
"""

from __future__ import annotations

import torch

from tritonobs.ops._dispatch import define_op


def range_widths(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    bins: int,
    start_bins: torch.Tensor,
    end_bins: torch.Tensor,
    dst_nbins: int,
) -> tuple[float, torch.Tensor]:
    """torch.ao's source and destination bin widths, in float64 as its Python scalars are.

    Returns:
        ``(bin_width, dst_bin_width)``: the source bin width ``(max - min) / bins`` and, per
        candidate, ``bin_width * (end - start + 1) / dst_nbins`` (float64 tensor, shape ``[K]``).
    """
    bin_width = (max_val.item() - min_val.item()) / bins
    n_src = (end_bins - start_bins + 1).to(torch.float64)
    return bin_width, n_src * bin_width / dst_nbins


def _cube_difference(delta_begin: torch.Tensor, delta_end: torch.Tensor) -> torch.Tensor:
    # torch.ao's _get_norm without the density factor, in its operation order.
    return (delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3


# On CPU the sweep runs in blocks of rows below torch's intra-op grain size (32768 elements): the
# tensors stay in cache, and no op waits on the thread pool, which costs milliseconds per op when
# the cores are busy.
CPU_BLOCK_ELEMENTS = 16384


def _sweep(
    density: torch.Tensor,
    bin_width: float,
    start_bins: torch.Tensor,
    dst_width64: torch.Tensor,
    dst_nbins: int,
) -> torch.Tensor:
    # torch.ao multiplies float32 tensors by Python doubles, which torch rounds to float32 first.
    dst_width = dst_width64.to(torch.float32)[:, None]
    half = (dst_width64 / 2).to(torch.float32)[:, None]
    src_bin = torch.arange(density.numel(), device=density.device)
    src_begin = (src_bin[None, :] - start_bins[:, None]).to(torch.float32) * bin_width
    src_end = src_begin + bin_width
    dst_of_begin = torch.clamp(
        torch.div(src_begin, dst_width, rounding_mode="floor"), 0, dst_nbins - 1
    )
    dst_of_end = torch.clamp(torch.div(src_end, dst_width, rounding_mode="floor"), 0, dst_nbins - 1)

    begin_center = (dst_of_begin + 0.5) * dst_width
    norm = density * _cube_difference(src_begin - begin_center, half)
    norm = norm + (dst_of_end - dst_of_begin - 1) * (density * _cube_difference(-half, half))
    end_center = dst_of_end * dst_width + half
    norm = norm + density * _cube_difference(-half, src_end - end_center)
    errors = norm.sum(dim=1)
    # torch.ao returns 0 for an empty range (min_val == max_val) instead of 0/0.
    return torch.where(dst_width64 == 0.0, 0.0, errors)


def quantization_error_torch(
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    start_bins: torch.Tensor,
    end_bins: torch.Tensor,
    dst_nbins: int,
) -> torch.Tensor:
    """Torch reference of :func:`quantization_error`: a ``[K, bins]`` float32 sweep."""
    bins = histogram.numel()
    bin_width, dst_width64 = range_widths(min_val, max_val, bins, start_bins, end_bins, dst_nbins)
    density = histogram / bin_width
    k = start_bins.numel()
    rows = max(1, CPU_BLOCK_ELEMENTS // bins) if histogram.device.type == "cpu" else max(k, 1)
    errors = [
        _sweep(density, bin_width, start_bins[i : i + rows], dst_width64[i : i + rows], dst_nbins)
        for i in range(0, k, rows)
    ]
    return torch.cat(errors) if errors else histogram.new_empty(0)


def _quantization_error_fake(histogram, min_val, max_val, start_bins, end_bins, dst_nbins):
    return histogram.new_empty(start_bins.shape, dtype=torch.float32)


@define_op(
    quantization_error_torch,
    "quantization_error:quantization_error_triton",
    _quantization_error_fake,
)
def quantization_error(
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    start_bins: torch.Tensor,
    end_bins: torch.Tensor,
    dst_nbins: int,
) -> torch.Tensor:
    """L2 quantization error of each candidate range, as torch.ao's ``_compute_quantization_error``.

    Args:
        histogram: float32 counts, shape ``[bins]``, over ``[min_val, max_val]``.
        min_val: 0-d float32, the histogram's lower edge.
        max_val: 0-d float32, the histogram's upper edge.
        start_bins: int64 ``[K]``, first source bin of each candidate range.
        end_bins: int64 ``[K]``, last source bin of each candidate range (``>= start_bins``).
        dst_nbins: number of quantization levels (``2 ** bits``).

    Returns:
        float32 ``[K]``: the error of each candidate, 0 where ``min_val == max_val``.
    """
