"""``tritonobs::entropy_divergence``: the prefix-sum divergences against ModelOpt's loop body.

The fast values are compared with :func:`modelopt_divergence` (ModelOpt's arithmetic replayed,
itself checked against ModelOpt in ``tests/test_amax_histogram.py``) to 1e-12, and the Triton
kernel (interpreter) against the torch reference to 4e-15; inf/NaN where ModelOpt has them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the ops)
from tritonobs.ops.entropy_divergence import modelopt_divergence

pytestmark = pytest.mark.interpret


def make_counts(kind: str, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    b = torch.randint(0, 60, (n,), generator=g)
    if kind == "sparse":
        b[torch.rand(n, generator=g) < 0.6] = 0
    elif kind == "head_empty":
        b[: n // 2] = 0
    elif kind == "gap_before_tail":
        b[n // 3 : 2 * n // 3] = 0
    b[0] = b[1]
    return b


CASES = [
    ("dense", 300, 128, 1, 128),
    ("sparse", 300, 100, 3, 128),
    ("head_empty", 257, 64, 1, 128),
    ("gap_before_tail", 200, 1, 1, 8),
    ("sparse", 90, 5, 2, 256),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_modelopt_arithmetic(backend: str, case) -> None:
    kind, n, start, stride, nbins = case
    b = make_counts(kind, n)
    fast = torch.ops.tritonobs.entropy_divergence(b, start, stride, nbins).numpy()
    b32 = b.numpy().astype(np.int32)
    exact = np.array([modelopt_divergence(b32, i, nbins) for i in range(start, n + 1, stride)])
    assert fast.shape == exact.shape
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(exact))
    np.testing.assert_array_equal(np.isinf(fast), np.isinf(exact))
    finite = np.isfinite(exact)
    np.testing.assert_allclose(fast[finite], exact[finite], rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:3], ids=str)
def test_triton_matches_torch_reference(case) -> None:
    from tritonobs.backend import use_backend

    kind, n, start, stride, nbins = case
    b = make_counts(kind, n)
    with use_backend("torch"):
        expected = torch.ops.tritonobs.entropy_divergence(b, start, stride, nbins)
    with use_backend("triton"):
        out = torch.ops.tritonobs.entropy_divergence(b, start, stride, nbins)
    # float64 sums in another order: measured 1.2e-15.
    torch.testing.assert_close(out, expected, rtol=0, atol=4e-15, equal_nan=True)


def test_empty_and_all_zero(backend: str) -> None:
    b = torch.zeros(20, dtype=torch.int64)
    out = torch.ops.tritonobs.entropy_divergence(b, 3, 1, 8)
    assert out.shape == (18,) and torch.isnan(out).all()
    assert torch.ops.tritonobs.entropy_divergence(b, 25, 1, 8).shape == (0,)
    assert math.isnan(modelopt_divergence(b.numpy().astype(np.int32), 5, 8))


def test_opcheck(backend: str) -> None:
    torch.library.opcheck(
        torch.ops.tritonobs.entropy_divergence.default, (make_counts("sparse", 40), 4, 2, 8)
    )
