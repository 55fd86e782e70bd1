"""``tritonobs::histogram_mse``: every cut's error against ModelOpt's float32 operations.

Each cut of the op is compared with :func:`modelopt_mse` (ModelOpt's fake quantization and mean,
checked against ModelOpt in ``tests/test_amax_histogram.py``): the op sums the same float32 terms in
float64, so they agree to the float32 mean's rounding (1e-5 relative); the Triton kernel
(interpreter) against the torch reference to 5e-16 (float64 sums in another order).
"""

from __future__ import annotations

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the ops)
from tritonobs.backend import use_backend
from tritonobs.ops.histogram_mse import modelopt_mse

pytestmark = pytest.mark.interpret


def make_histogram(n: int, zero_head: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    edges = torch.linspace(0, 3.7, n + 1)
    edges[:zero_head] = 0.0  # zero-width bins: centres and amax at 0
    counts = torch.randint(0, 100, (n,), generator=g).float()
    return counts, (edges[1:] + edges[:-1]) / 2


FORMATS = [(8, False, False), (4, True, False), (8, False, True), (3, False, False)]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_matches_modelopt_operations(backend: str, fmt) -> None:
    num_bits, unsigned, fp8 = fmt
    counts, centers = make_histogram(123, zero_head=4)
    out = torch.ops.tritonobs.histogram_mse(counts, centers, 0, 2, num_bits, unsigned, fp8)
    expected = torch.tensor(
        [modelopt_mse(counts, centers, i, num_bits, unsigned, fp8) * 123 for i in range(0, 123, 2)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_triton_matches_torch_reference(fmt) -> None:
    counts, centers = make_histogram(301, zero_head=3)
    with use_backend("torch"):
        expected = torch.ops.tritonobs.histogram_mse(counts, centers, 5, 3, *fmt)
    with use_backend("triton"):
        out = torch.ops.tritonobs.histogram_mse(counts, centers, 5, 3, *fmt)
    # float64 sums of the same float32 terms in another order: measured 2.2e-16 (exact for 3 bits).
    torch.testing.assert_close(out, expected, rtol=5e-16, atol=0)


@pytest.mark.fallback("no cut: an empty result, nothing to launch")
def test_no_cut(backend: str) -> None:
    counts, centers = make_histogram(10)
    assert torch.ops.tritonobs.histogram_mse(counts, centers, 10, 1, 8, False, False).shape == (0,)


def test_opcheck(backend: str) -> None:
    counts, centers = make_histogram(20)
    torch.library.opcheck(
        torch.ops.tritonobs.histogram_mse.default, (counts, centers, 2, 3, 8, False, True)
    )
