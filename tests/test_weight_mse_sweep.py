"""``tritonobs::weight_mse_sweep``: the (step, group) errors of llm-compressor's MSE search.

The torch reference against a loop of compressed-tensors' operations on llm-compressor's
``[1, groups, n]`` layout, one candidate at a time (exact); the Triton kernel (interpreter) against
the reference: exact for bfloat16/float16 (the interpreter's pow, rounded to 8 or 11 bits, lands
on the same value here), within 1.5e-6 for float32 (``exp2(norm * log2(x))`` instead of torch's pow).
"""

from __future__ import annotations

import pytest
import torch

import tritonobs.ops  # noqa: F401  (registers the ops)
from tritonobs.backend import use_backend
from tritonobs.ops.weight_mse_sweep import fake_quantize, qparams_from_range

pytestmark = pytest.mark.interpret

FORMATS = [
    (8, False, True),
    (4, False, False),
    (8, True, True),
    (8, True, False),
    (16, False, False),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make_case(dtype: torch.dtype, fmt, rows: int = 7, n: int = 37):
    g = torch.Generator().manual_seed(rows * n)
    x = torch.randn(rows, n, generator=g) * 0.05
    x[1] = 0.0
    x[2] = 0.02  # an all-equal group
    x = x.to(
        dtype
    )  # row 1 is all zero: asymmetric zero points are NaN there, as in compressed-tensors
    lo, hi = x.amin(-1), x.amax(-1)
    qparams = [qparams_from_range(lo * p, hi * p, *fmt) for p in (1.0, 0.99, 0.9)]
    return x, torch.stack([s for s, _ in qparams]), torch.stack([z for _, z in qparams])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_reference_matches_step_by_step_loop(dtype, fmt) -> None:
    x, scales, zero_points = make_case(dtype, fmt)
    num_bits, fp8, symmetric = fmt
    with use_backend("torch"):
        out = torch.ops.tritonobs.weight_mse_sweep(x, scales, zero_points, *fmt, 2.4)
    observed = x[None]
    for step in range(scales.shape[0]):
        q = fake_quantize(
            observed, scales[step, :, None], zero_points[step, :, None], num_bits, fp8
        )
        expected = torch.sum((q - observed).abs().pow(2.4), dim=(0, -1))
        torch.testing.assert_close(out[step], expected, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS[:4], ids=str)
def test_triton_matches_torch_reference(dtype, fmt) -> None:
    x, scales, zero_points = make_case(dtype, fmt, rows=5, n=70)
    with use_backend("torch"):
        expected = torch.ops.tritonobs.weight_mse_sweep(x, scales, zero_points, *fmt, 2.4)
    with use_backend("triton"):
        out = torch.ops.tritonobs.weight_mse_sweep(x, scales, zero_points, *fmt, 2.4)
    assert out.dtype == dtype
    # float32: measured 8.4e-7 (exp2/log2 for pow); 16-bit results round to the same value.
    tolerance = {"atol": 0, "rtol": 1.5e-6 if dtype == torch.float32 else 0, "equal_nan": True}
    torch.testing.assert_close(out, expected, **tolerance)


def test_opcheck(backend: str) -> None:
    x, scales, zero_points = make_case(torch.float32, FORMATS[1], rows=3, n=9)
    torch.library.opcheck(
        torch.ops.tritonobs.weight_mse_sweep.default, (x, scales, zero_points, 4, False, False, 2.4)
    )
