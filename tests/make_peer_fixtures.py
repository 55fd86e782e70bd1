"""Write ``tests/fixtures/peer_fixtures.safetensors``: what ModelOpt and llm-compressor return.

The tests compare tritonobs with these answers always, and with the libraries themselves where
they are installed. Regenerate after changing a case (needs ``nvidia-modelopt==0.47.0`` and
``llmcompressor==0.14.0.1``)::

    python tests/make_peer_fixtures.py

The inputs are stored too (a few hundred kilobytes in all), so the fixtures do not depend on
torch's random generators. ModelOpt's "mse" is called with ``fake_tensor_quant`` and
``scaled_e4m3`` bound correctly (``bias=None``); 0.47.0 passes ``num_bits`` as the bias.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

FIXTURES = Path(__file__).with_name("fixtures") / "peer_fixtures.safetensors"

# Streams for ModelOpt's collector: (name, bins, skip_zeros, batches as (kind, size, scale)).
STREAMS: list[tuple[str, int, bool, list[tuple[str, int, float]]]] = [
    ("normal", 2048, False, [("normal", 1500, 1.0), ("normal", 1500, 1.0), ("normal", 700, 1.0)]),
    ("heavy", 2048, False, [("student", 1500, 1.0), ("student", 1500, 1.5)]),
    ("growing", 512, False, [("normal", 800, 1.0), ("normal", 800, 3.0), ("normal", 800, 7.5)]),
    ("relu_skip", 300, True, [("relu", 1200, 1.0), ("relu", 1200, 2.0)]),
    ("ties", 128, False, [("ties", 1000, 1.0), ("ties", 1000, 2.0)]),
    ("few", 7, False, [("normal", 50, 1.0), ("normal", 50, 2.0)]),
]

# compute_amax cases: (method, options); start_bin is lowered for the small histograms.
AMAX_CASES: list[tuple[str, dict[str, Any]]] = [
    ("entropy", {}),
    ("entropy", {"num_bits": 4}),
    ("entropy", {"unsigned": True, "start_bin": 64, "stride": 3}),
    ("percentile", {"percentile": 99.99}),
    ("percentile", {"percentile": 90.0}),
    ("mse", {}),
    ("mse", {"num_bits": 4, "stride": 2}),
    ("mse", {"num_bits": [4, 3]}),
]

# Weights for llm-compressor: (name, shape, dtype).
WEIGHTS: list[tuple[str, tuple[int, int], torch.dtype]] = [
    ("w_fp32", (48, 256), torch.float32),
    ("w_bf16", (64, 384), torch.bfloat16),
    ("w_odd", (37, 200), torch.float32),
]

# weight_qparams cases (QuantizationArgs fields), for both observers.
WEIGHT_CASES: list[dict[str, Any]] = [
    {"strategy": "tensor"},
    {"strategy": "channel"},
    {"strategy": "channel", "symmetric": False},
    {"strategy": "group", "group_size": 8, "num_bits": 4},
    {"strategy": "group", "group_size": 8, "num_bits": 4, "symmetric": False},
    {"strategy": "block", "block_structure": [16, 64]},
    {"strategy": "channel", "type": "float", "num_bits": 8},
    {"strategy": "block", "block_structure": [32, 48], "type": "float", "num_bits": 8},
]


def stream_batches(
    stream: tuple[str, int, bool, list[tuple[str, int, float]]],
) -> list[torch.Tensor]:
    """The batches of a stream (seeded; the fixture file stores them anyway)."""
    g = torch.Generator().manual_seed(sum(map(ord, stream[0])))
    batches = []
    for kind, size, scale in stream[3]:
        x = torch.randn(size, generator=g)
        if kind == "student":
            x = x / torch.rand(size, generator=g).clamp_min(1e-3).sqrt()
        elif kind == "relu":
            x = x.relu()
        elif kind == "ties":
            x = (x * 4).round() / 4
        batches.append(x * scale)
    return batches


def make_weight(name: str, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """A weight with a zero row, an all-equal row and an outlier column."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    w = torch.randn(shape, generator=g) * 0.02
    w[1] = 0.0
    w[2] = 0.01
    w[:, 3] *= 20
    return w.to(dtype)


def case_id(index: int, case: dict[str, Any]) -> str:
    return f"{index}:" + json.dumps(case, sort_keys=True)


def amax_options(case: dict[str, Any], bins: int) -> dict[str, Any]:
    """A compute_amax case's options, with ``start_bin`` kept below the histogram's size."""
    options = dict(case)
    options.setdefault("start_bin", 128)
    options["start_bin"] = min(options["start_bin"], max(1, bins // 2))
    if "num_bits" in options and isinstance(options["num_bits"], list):
        options["num_bits"] = tuple(options["num_bits"])
    return options


def modelopt_compute_amax(calibrator: Any, method: str, options: dict[str, Any]) -> torch.Tensor:
    """ModelOpt's compute_amax, with its "mse" method's quantizer call fixed."""
    from modelopt.torch.quantization.calib import histogram
    from modelopt.torch.quantization.tensor_quant import (
        FakeTensorQuantFunction,
        ScaledE4M3Function,
    )

    def fake_tensor_quant(inputs, amax, num_bits, unsigned):
        return FakeTensorQuantFunction.apply(inputs, amax, None, num_bits, unsigned)

    def scaled_e4m3(inputs, amax, exponent_bits, mantissa_bits):
        return ScaledE4M3Function.apply(inputs, amax, None, exponent_bits, mantissa_bits)

    saved = histogram.fake_tensor_quant, histogram.scaled_e4m3
    histogram.fake_tensor_quant, histogram.scaled_e4m3 = fake_tensor_quant, scaled_e4m3
    try:
        calibrator._num_bits = options.get("num_bits", 8)
        calibrator._unsigned = options.get("unsigned", False)
        search = {k: v for k, v in options.items() if k in ("start_bin", "stride", "percentile")}
        return calibrator.compute_amax(method, **search).reshape(()).float()
    finally:
        histogram.fake_tensor_quant, histogram.scaled_e4m3 = saved


def modelopt_collect(batches: list[torch.Tensor], bins: int, skip_zeros: bool) -> Any:
    """ModelOpt's HistogramCalibrator after ``batches``."""
    from modelopt.torch.quantization.calib.histogram import HistogramCalibrator

    calibrator = HistogramCalibrator(num_bins=bins, skip_zeros=skip_zeros)
    for x in batches:
        calibrator.collect(x)
    return calibrator


def llmcompressor_qparams(
    w: torch.Tensor, observer: str, case: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """llm-compressor's memoryless observer's (scale, zero_point) of ``w``."""
    from compressed_tensors.quantization import QuantizationArgs
    from llmcompressor.observers import Observer

    args = QuantizationArgs(**case)
    obs = Observer.load_from_registry(f"memoryless_{observer}", base_name="weight", args=args)
    obs(w)
    qparams = obs.get_qparams()
    return qparams["scale"], qparams["zero_point"]


def main() -> int:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    tensors: dict[str, torch.Tensor] = {}
    for stream in STREAMS:
        name, bins, skip_zeros, _ = stream
        batches = stream_batches(stream)
        for i, x in enumerate(batches):
            tensors[f"stream.{name}.batch{i}"] = x
        calibrator = modelopt_collect(batches, bins, skip_zeros)
        tensors[f"stream.{name}.histogram"] = calibrator._calib_hist
        tensors[f"stream.{name}.bin_edges"] = calibrator._calib_bin_edges
        for index, (method, case) in enumerate(AMAX_CASES):
            options = amax_options(case, calibrator._calib_hist.numel())
            amax = modelopt_compute_amax(calibrator, method, options)
            tensors[f"amax.{name}.{index}"] = amax
    for name, shape, dtype in WEIGHTS:
        w = make_weight(name, shape, dtype)
        tensors[f"weight.{name}"] = w
        for index, case in enumerate(WEIGHT_CASES):
            for observer in ("minmax", "mse"):
                scale, zero_point = llmcompressor_qparams(w, observer, case)
                tensors[f"qparams.{name}.{observer}.{index}.scale"] = scale
                tensors[f"qparams.{name}.{observer}.{index}.zero_point"] = zero_point
    metadata = {
        "amax_cases": json.dumps(AMAX_CASES),
        "weight_cases": json.dumps(WEIGHT_CASES),
        "versions": "nvidia-modelopt 0.47.0, llmcompressor 0.14.0.1, compressed-tensors 0.19.0",
    }
    FIXTURES.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(FIXTURES), metadata=metadata)
    print(f"wrote {len(tensors)} tensors, {FIXTURES.stat().st_size} bytes to {FIXTURES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
