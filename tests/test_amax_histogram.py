"""AmaxHistogramObserver and histogram_amax against NVIDIA ModelOpt 0.47.0's HistogramCalibrator.

Every comparison is exact (``atol=0, rtol=0``): the collected histogram and edges value for value,
the amax of each method bit for bit. The fixtures (``tests/fixtures``, written by
``tests/make_peer_fixtures.py``) hold ModelOpt's answers, so these run without ModelOpt; where it is
installed, hypothesis-drawn streams and histograms are compared with ModelOpt itself.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import tritonobs
from tests import make_peer_fixtures as peer
from tritonobs.llm_calibrators import AmaxHistogramObserver, histogram_amax

EXACT = {"atol": 0.0, "rtol": 0.0}


@pytest.fixture(scope="module")
def fixtures() -> dict[str, torch.Tensor]:
    with safe_open(str(peer.FIXTURES), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118


def observe(stream_name: str, fixtures: dict[str, torch.Tensor]) -> AmaxHistogramObserver:
    name, bins, skip_zeros, batches = next(s for s in peer.STREAMS if s[0] == stream_name)
    obs = AmaxHistogramObserver(bins=bins, skip_zeros=skip_zeros)
    for i in range(len(batches)):
        obs(fixtures[f"stream.{name}.batch{i}"])
    return obs


STREAM_NAMES = [s[0] for s in peer.STREAMS]


def test_fixture_cases_are_the_generator_cases() -> None:
    with safe_open(str(peer.FIXTURES), framework="pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["amax_cases"]) == json.loads(json.dumps(peer.AMAX_CASES))


@pytest.mark.parametrize("stream", STREAM_NAMES)
def test_collect_matches_modelopt_fixture(fixtures, stream: str) -> None:
    hist, edges = observe(stream, fixtures).collected()
    torch.testing.assert_close(hist, fixtures[f"stream.{stream}.histogram"], **EXACT)
    torch.testing.assert_close(edges, fixtures[f"stream.{stream}.bin_edges"], **EXACT)


@pytest.mark.parametrize("stream", STREAM_NAMES)
@pytest.mark.parametrize("index", range(len(peer.AMAX_CASES)))
def test_compute_amax_matches_modelopt_fixture(fixtures, stream: str, index: int) -> None:
    method, case = peer.AMAX_CASES[index]
    obs = observe(stream, fixtures)
    options = peer.amax_options(case, int(obs.num_bins))
    amax = obs.compute_amax(method, **options)
    assert amax.shape == () and amax.dtype == torch.float32
    torch.testing.assert_close(amax, fixtures[f"amax.{stream}.{index}"], **EXACT)


def test_histogram_amax_on_modelopt_buffers(fixtures) -> None:
    hist, edges = fixtures["stream.heavy.histogram"], fixtures["stream.heavy.bin_edges"]
    for index, (method, case) in enumerate(peer.AMAX_CASES):
        amax = histogram_amax(hist, edges, method, **peer.amax_options(case, hist.numel()))
        torch.testing.assert_close(amax, fixtures[f"amax.heavy.{index}"], **EXACT)


# --- against ModelOpt itself --------------------------------------------------------------------


def _modelopt():
    pytest.importorskip("modelopt.torch.quantization.calib.histogram")
    warnings.filterwarnings("ignore", module="modelopt")


batch = st.tuples(
    st.sampled_from(["normal", "relu", "ties", "zeros", "spike"]),
    st.integers(1, 600),
    st.floats(0.01, 50.0),
    st.integers(0, 2**16),
)


def _draw_batch(kind: str, size: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, generator=g)
    if kind == "relu":
        x = x.relu()
    elif kind == "ties":
        x = (x * 3).round()
    elif kind == "zeros":
        x[torch.rand(size, generator=g) < 0.7] = 0.0
    elif kind == "spike":
        x = torch.full((size,), 0.5)
        x[0] = 3.0
    x[0] = x[0] if x.abs().max() > 0 else 1.0  # ModelOpt cannot start from zeros only
    return x * scale


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(batch, min_size=1, max_size=4),
    bins=st.sampled_from([1, 2, 7, 64, 300]),
    skip_zeros=st.booleans(),
)
def test_collect_matches_modelopt_on_drawn_streams(batches, bins, skip_zeros) -> None:
    _modelopt()
    xs = [_draw_batch(*b) for b in batches]
    if skip_zeros:
        xs = [x for x in xs if (x != 0).any()]
    calibrator = peer.modelopt_collect(xs, bins, skip_zeros)
    obs = AmaxHistogramObserver(bins=bins, skip_zeros=skip_zeros, max_bins=1 << 20)
    for x in xs:
        obs(x)
    hist, edges = obs.collected()
    torch.testing.assert_close(hist, calibrator._calib_hist, **EXACT)
    torch.testing.assert_close(edges, calibrator._calib_bin_edges, **EXACT)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 40), min_size=2, max_size=300),
    zero_fraction=st.sampled_from([0.0, 0.3, 0.8]),
    num_bits=st.sampled_from([3, 4, 8]),
    unsigned=st.booleans(),
    start_bin=st.integers(1, 160),
    stride=st.integers(1, 4),
    method=st.sampled_from(["entropy", "mse", "percentile"]),
    seed=st.integers(0, 2**16),
)
def test_histogram_amax_matches_modelopt_on_drawn_histograms(
    counts, zero_fraction, num_bits, unsigned, start_bin, stride, method, seed
) -> None:
    _modelopt()
    from modelopt.torch.quantization.calib.histogram import HistogramCalibrator

    g = torch.Generator().manual_seed(seed)
    hist = torch.tensor(counts, dtype=torch.float32)
    hist[torch.rand(hist.numel(), generator=g) < zero_fraction] = 0.0
    hist[-1] = max(hist[-1].item(), 1.0)
    edges = torch.linspace(0, float(torch.rand(1, generator=g)) * 10 + 0.1, hist.numel() + 1)
    calibrator = HistogramCalibrator(num_bits=num_bits, unsigned=unsigned)
    calibrator._calib_hist, calibrator._calib_bin_edges = hist, edges
    start_bin = min(start_bin, hist.numel() - (method == "mse"))
    if start_bin < 1:
        return
    options = {"num_bits": num_bits, "unsigned": unsigned, "start_bin": start_bin, "stride": stride}
    expected = peer.modelopt_compute_amax(calibrator, method, {**options, "percentile": 99.0})
    amax = histogram_amax(hist, edges, method, **options, percentile=99.0)
    torch.testing.assert_close(amax, expected, **EXACT)


def test_modelopt_mse_bug_is_what_the_docs_say() -> None:
    # ModelOpt 0.47.0 calls fake_tensor_quant(centers, amax, num_bits, unsigned): num_bits (8)
    # lands in the bias and 0 bits in num_bits, whose empty clamp range maps every centre to
    # amax + 8. The search then returns the cut nearest to the count-weighted mean of |x| less 8:
    # the centre of bin start_bin whenever that mean is below 8.
    _modelopt()
    from modelopt.torch.quantization.calib.histogram import HistogramCalibrator

    for scale in (1.0, 30.0):
        calibrator = HistogramCalibrator()
        calibrator.collect(torch.randn(5000, generator=torch.Generator().manual_seed(0)) * scale)
        edges, counts = calibrator._calib_bin_edges, calibrator._calib_hist.int().float()
        centers = (edges[1:] + edges[:-1]) / 2
        errors = [((centers[i] + 8 - centers) ** 2 * counts).mean() for i in range(128, 2048)]
        expected = centers[128 + int(torch.stack(errors).argmin())]
        torch.testing.assert_close(calibrator.compute_amax("mse"), expected, **EXACT)
        if scale == 1.0:
            torch.testing.assert_close(expected, centers[128], **EXACT)


# --- the observer -------------------------------------------------------------------------------


def test_calculate_qparams_is_amax_over_bound() -> None:
    x = torch.randn(4000, generator=torch.Generator().manual_seed(1))
    for kwargs, bound in (
        ({}, 127),
        ({"unsigned": True}, 255),
        ({"num_bits": (4, 3), "method": "mse"}, 448),
    ):
        obs = AmaxHistogramObserver(**kwargs)
        obs(x)
        scale, zero_point = obs.calculate_qparams()
        torch.testing.assert_close(scale, (obs.compute_amax() / bound).reshape(1), **EXACT)
        assert zero_point.tolist() == [0]


def test_calculate_qparams_before_data_warns() -> None:
    obs = AmaxHistogramObserver()
    with pytest.warns(UserWarning, match="must run observer"):
        scale, zero_point = obs.calculate_qparams()
    assert scale.tolist() == [1.0] and zero_point.tolist() == [0]
    with pytest.raises(RuntimeError, match="no data"):
        obs.compute_amax()


def test_nonfinite_values_are_skipped_and_counted() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    dirty = x.clone()
    dirty[::10] = float("nan")
    dirty[5::10] = float("inf")
    clean = AmaxHistogramObserver()
    clean(x[torch.isfinite(dirty)])
    obs = AmaxHistogramObserver()
    obs(dirty)
    assert int(obs.nonfinite_count) == 200
    torch.testing.assert_close(obs.histogram, clean.histogram, **EXACT)
    obs(torch.full((3,), float("nan")))
    torch.testing.assert_close(obs.histogram, clean.histogram, **EXACT)
    assert "nonfinite_count" not in obs.state_dict()


def test_input_dtypes_are_observed_as_float32() -> None:
    x = torch.randn(3, 77, generator=torch.Generator().manual_seed(3)).bfloat16()
    a, b = AmaxHistogramObserver(bins=64), AmaxHistogramObserver(bins=64)
    a(x)
    b(x.float())
    torch.testing.assert_close(a.histogram, b.histogram, **EXACT)
    with pytest.raises(TypeError, match="floating-point"):
        a(torch.ones(3, dtype=torch.int32))
    a(torch.empty(0))  # passes through, nothing changes
    torch.testing.assert_close(a.histogram, b.histogram, **EXACT)


def test_overflow_past_max_bins_is_refused() -> None:
    obs = AmaxHistogramObserver(bins=16, max_bins=64)
    obs(torch.tensor([1.0, 0.5]))
    obs(torch.tensor([2.0]))
    assert int(obs.num_bins) == 32
    obs(torch.tensor([100.0]))
    with pytest.raises(RuntimeError, match="max_bins=64"):
        obs.compute_amax()


def test_zeros_first_then_data_restarts_the_range() -> None:
    # ModelOpt raises OverflowError here (zero bin width); tritonobs keeps the zeros in bin 0.
    obs = AmaxHistogramObserver(bins=8, start_bin=2)
    obs(torch.zeros(5))
    hist, edges = obs.collected()
    assert hist[4].item() == 5.0 and edges.abs().max().item() == 0.0
    obs(torch.tensor([1.0, 2.0]))
    hist, edges = obs.collected()
    assert hist[0].item() == 5.0 and hist.sum().item() == 7.0 and edges[-1].item() == 2.0


def test_state_dict_round_trip() -> None:
    obs = AmaxHistogramObserver(bins=100)
    obs(torch.randn(500, generator=torch.Generator().manual_seed(4)))
    other = AmaxHistogramObserver(bins=100)
    other.load_state_dict(obs.state_dict())
    assert set(obs.state_dict()) == {"histogram", "bin_edges", "num_bins", "num_edges"}
    torch.testing.assert_close(other.compute_amax("percentile"), obs.compute_amax("percentile"))


def test_compiled_forward_has_no_graph_break() -> None:
    obs = AmaxHistogramObserver(bins=64)
    eager = AmaxHistogramObserver(bins=64)
    compiled = torch.compile(obs, fullgraph=True, backend="aot_eager")
    for seed in range(3):
        x = torch.randn(200, generator=torch.Generator().manual_seed(seed)) * (seed + 1)
        compiled(x)
        eager(x)
    torch.testing.assert_close(obs.histogram, eager.histogram, **EXACT)
    torch.testing.assert_close(obs.bin_edges, eager.bin_edges, **EXACT)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "kl"}, "entropy, mse, percentile"),
        ({"num_bits": 1}, "from 2 to 16 or \\(4, 3\\)"),
        ({"num_bits": (5, 2)}, "from 2 to 16 or \\(4, 3\\)"),
        ({"num_bits": (4, 3)}, "entropy needs an integer"),
        ({"percentile": 101}, "percentile"),
        ({"stride": 0}, "stride"),
        ({"bins": 64, "max_bins": 32}, "max_bins"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        AmaxHistogramObserver(**kwargs)


def test_bad_compute_amax_arguments() -> None:
    obs = AmaxHistogramObserver(bins=64, start_bin=8)
    obs(torch.randn(100, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="choose one of entropy, mse, percentile"):
        obs.compute_amax("max")
    with pytest.raises(ValueError, match="unknown compute_amax arguments"):
        obs.compute_amax(bins=3)
    with pytest.raises(ValueError, match="start_bin"):
        obs.compute_amax("entropy", start_bin=65)


def test_calibrate_with_the_observer_factory() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    batches = [torch.randn(16, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    factory = AmaxHistogramObserver.with_args(bins=64, start_bin=8, method="entropy")
    result = tritonobs.calibrate(model, batches, observer=factory, progress=False)
    qparams = result.qparams()
    assert len(qparams) == 2
    for scale, zero_point in qparams.values():
        assert scale.shape == (1,) and scale.item() > 0 and zero_point.item() == 0
