"""``tritonobs::amax_histogram_update``: the collect step, torch reference and CUDA launcher path.

ModelOpt parity of whole streams is in ``tests/test_amax_histogram.py``; here the op itself: the
in-place contract (buffers keep their identity), both backends giving the same buffers, and opcheck.
"""

from __future__ import annotations

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the ops)

# The CUDA launcher is the torch reference for now (kernels/amax_histogram_update.py): the
# [triton] cases run it on CPU tensors and launch no kernel.
pytestmark = [
    pytest.mark.interpret,
    pytest.mark.fallback("amax_histogram_update_triton runs the torch reference (no kernel yet)"),
]


def state(capacity: int = 256):
    return (
        torch.zeros(capacity),
        torch.zeros(capacity + 1),
        torch.zeros((), dtype=torch.int64),
        torch.zeros((), dtype=torch.int64),
        torch.zeros((), dtype=torch.int64),
    )


def test_stream_updates_buffers_in_place(backend: str) -> None:
    buffers = state()
    ids = [b.data_ptr() for b in buffers]
    g = torch.Generator().manual_seed(0)
    for scale in (1.0, 2.5, 0.5):
        x = torch.randn(3, 50, generator=g) * scale
        torch.ops.tritonobs.amax_histogram_update(x, *buffers, 32, False)
    hist, edges, num_bins, num_edges, nonfinite = buffers
    assert [b.data_ptr() for b in buffers] == ids
    assert int(num_bins) > 32 and int(num_edges) >= int(num_bins) and hist.sum() == 450
    assert edges[int(num_edges) - 1] >= 2.5 * 0.0 and int(nonfinite) == 0


def test_opcheck(backend: str) -> None:
    x = torch.randn(40, generator=torch.Generator().manual_seed(1))
    torch.library.opcheck(
        torch.ops.tritonobs.amax_histogram_update.default, (x, *state(64), 16, True)
    )
