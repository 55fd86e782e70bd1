"""weight_qparams against llm-compressor 0.14.0.1's memoryless_minmax / memoryless_mse observers.

Same shapes and dtypes always; minmax values exactly; mse values exactly on at least 99.5% of the
groups and within one grid step of llm-compressor's range on the rest (see
``docs/llm_calibrators.md``; on these cases every group matches). Fixtures from
``tests/make_peer_fixtures.py`` always, llm-compressor itself where it is installed.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from tests import make_peer_fixtures as peer
from tritonobs.backend import use_backend
from tritonobs.llm_calibrators import weight_qparams

EXACT = {"atol": 0.0, "rtol": 0.0}
MSE_EXACT_FRACTION = 0.995


@pytest.fixture(scope="module")
def fixtures() -> dict[str, torch.Tensor]:
    with safe_open(str(peer.FIXTURES), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118


def assert_matches(observer: str, ours, expected, grid: float = 100) -> None:
    """Same shapes/dtypes; minmax exact; mse exact on >= 99.5% of groups, the rest one step off."""
    for mine, theirs in zip(ours, expected, strict=True):
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
    scale, zero_point = ours
    # A group of zeros has a NaN asymmetric FP8 zero point in compressed-tensors too.
    if observer == "minmax":
        torch.testing.assert_close(scale, expected[0], **EXACT)
        torch.testing.assert_close(zero_point.float(), expected[1].float(), **EXACT, equal_nan=True)
        return
    zp, expected_zp = zero_point.float(), expected[1].float()
    same_zp = (zp == expected_zp) | (zp.isnan() & expected_zp.isnan())
    same = (scale == expected[0]) & same_zp
    assert same.float().mean().item() >= MSE_EXACT_FRACTION
    ratio = (scale[~same].double() / expected[0][~same].double() - 1).abs()
    assert (ratio <= 1.01 / grid + 1e-3).all()


@pytest.mark.parametrize("observer", ["minmax", "mse"])
@pytest.mark.parametrize("index", range(len(peer.WEIGHT_CASES)))
@pytest.mark.parametrize("weight", [w[0] for w in peer.WEIGHTS])
def test_matches_llmcompressor_fixture(fixtures, weight: str, index: int, observer: str) -> None:
    w = fixtures[f"weight.{weight}"]
    ours = weight_qparams(w, observer=observer, **peer.WEIGHT_CASES[index])
    key = f"qparams.{weight}.{observer}.{index}"
    assert_matches(observer, ours, (fixtures[f"{key}.scale"], fixtures[f"{key}.zero_point"]))


@pytest.mark.interpret
@pytest.mark.parametrize("case", [peer.WEIGHT_CASES[i] for i in (1, 4, 6)], ids=str)
def test_mse_with_triton_kernel_matches_torch(fixtures, case) -> None:
    # The Triton sweep's pow differs from torch's by an ulp or so: allowed by the 99.5% rule.
    w = fixtures["weight.w_bf16"][:6, :64]
    with use_backend("torch"):
        expected = weight_qparams(w, observer="mse", **case)
    with use_backend("triton"):
        ours = weight_qparams(w, observer="mse", **case)
    assert_matches("mse", ours, expected)


# --- against llm-compressor itself ---------------------------------------------------------------


def _llmcompressor():
    pytest.importorskip("llmcompressor.observers")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 24),
    groups=st.integers(1, 6),
    group_size=st.sampled_from([4, 16, 32]),
    kind=st.sampled_from(["normal", "ties", "zeros", "equal_rows"]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    observer=st.sampled_from(["minmax", "mse"]),
    case=st.sampled_from(
        [
            {"strategy": "tensor"},
            {"strategy": "channel"},
            {"strategy": "channel", "symmetric": False, "num_bits": 4},
            {"strategy": "group", "num_bits": 4},
            {"strategy": "group", "num_bits": 4, "symmetric": False},
            {"strategy": "block", "block_structure": [5, 12]},
            {"strategy": "channel", "type": "float", "num_bits": 8},
            {"strategy": "group", "type": "float", "num_bits": 8, "symmetric": False},
        ]
    ),
    seed=st.integers(0, 2**16),
)
def test_matches_llmcompressor_on_drawn_weights(
    rows, groups, group_size, kind, dtype, observer, case, seed
) -> None:
    _llmcompressor()
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, groups * group_size, generator=g) * 0.05
    if kind == "ties":
        w = (w * 40).round() / 40
    elif kind == "zeros":
        w[torch.rand(w.shape, generator=g) < 0.5] = 0.0
    elif kind == "equal_rows":
        w[::2] = 0.03
    w = w.to(dtype)
    if case["strategy"] == "group":
        case = {**case, "group_size": group_size}
    expected = peer.llmcompressor_qparams(w, observer, case)
    assert_matches(observer, weight_qparams(w, observer=observer, **case), expected)


def test_group_size_not_dividing_raises_like_llmcompressor() -> None:
    w = torch.randn(4, 10)
    with pytest.raises(ValueError, match="multiple of group_size"):
        weight_qparams(w, strategy="group", group_size=4)


def test_block_pads_partial_blocks() -> None:
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    scale, zero_point = weight_qparams(w, strategy="block", block_structure=[2, 4])
    assert scale.shape == (3, 2) and zero_point.shape == (3, 2)
    torch.testing.assert_close(scale[2, 1], w[4:, 4:].abs().max() / 127.5, **EXACT)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"observer": "percentile"}, "choose one of minmax, mse"),
        ({"type": "fp4"}, "choose one of int, float"),
        ({"strategy": "token"}, "choose one of tensor, channel, group, block"),
        ({"num_bits": 1}, "from 2 to 16"),
        ({"type": "float", "num_bits": 4}, "num_bits 8"),
        ({"strategy": "group"}, "positive group_size"),
        ({"group_size": 4}, "needs strategy 'group'"),
        ({"strategy": "block"}, "block_structure"),
        ({"block_structure": [2, 2]}, "needs strategy 'block'"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        weight_qparams(torch.randn(4, 8), **kwargs)


def test_non_float_weight() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        weight_qparams(torch.ones(4, 8, dtype=torch.int32))
