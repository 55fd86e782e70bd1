"""Shared fixtures: the backend under test, shapes, input dtypes and the tolerance table."""

from __future__ import annotations

import pytest
import torch

from tritonobs.backend import use_backend

# Tolerances, in one place, for the results whose accumulation order differs from the reference.
# Everything else (min/max, EMA, histogram counts of a single batch, scale and zero_point of the
# min/max observers, the search's chosen bins) is compared with atol=0, rtol=0.
TOLERANCES: dict[str, dict[str, float]] = {
    # HistogramObserver after the range grew: re-binning spreads mass in another order.
    "histogram_rebinned": {"atol": 1e-3, "rtol": 1e-5},
    # HistogramObserver after the range grew, Triton vs CPU torch.ao: sum(|ours - ao|) / sum(ao).
    # Triton computes linspace as torch's CUDA kernel does; CPU torch rounds it in another order,
    # so a sub-bin mid-point within an ulp of an edge can land in the neighbouring bin.
    "histogram_rebinned_mass": {"atol": 0.0, "rtol": 1e-3},
    # HistogramObserver qparams after range growth, Triton vs torch.ao (issue 3).
    "histogram_scale": {"atol": 0.0, "rtol": 1e-3},
    "histogram_zero_point": {"atol": 1.0, "rtol": 0.0},
    # Quantization-error values of the sweep (fp32 sums in another order).
    "quantization_error": {"atol": 0.0, "rtol": 1e-4},
    # sync_observers: merged moving average vs the moving average of the rank-averaged batch
    # min/max (equal in exact arithmetic; float32 rounds in another order).
    "ema_merged": {"atol": 1e-6, "rtol": 1e-6},
    # sync_observers: merged HistogramObserver qparams vs one process on the union (the ranks'
    # histograms are re-binned once instead of batch after batch).
    "histogram_merged_scale": {"atol": 0.0, "rtol": 1e-2},
}

# Small but awkward shapes for interpreter tests (odd sizes, size 1).
SHAPES = [(1,), (7,), (5, 123), (3, 1, 17), (2, 3, 5, 7), (1, 1)]
INPUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(params=["torch", "triton"])
def backend(request: pytest.FixtureRequest):
    """Runs a test once with the torch reference and once with the Triton kernels (interpreter)."""
    with use_backend(request.param):
        yield request.param
