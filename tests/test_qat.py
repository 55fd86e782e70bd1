"""Quantization-aware training with tritonobs observers: torch.ao's ``FakeQuantize`` takes them.

torch.ao's default QAT qconfig builds ``FusedMovingAvgObsFakeQuantize``, which computes min/max
itself and accepts only torch.ao's own MovingAverage observer classes; ``FakeQuantize`` with a
tritonobs observer is the way (docs/observers.md).
"""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch.ao.quantization import FakeQuantize, FusedMovingAvgObsFakeQuantize

import tritonobs

ACTIVATION = {"quant_min": 0, "quant_max": 255}
WEIGHT = {
    "quant_min": -128,
    "quant_max": 127,
    "dtype": torch.qint8,
    "qscheme": torch.per_channel_symmetric,
}


def _qconfig(module) -> tq.QConfig:
    return tq.QConfig(
        activation=FakeQuantize.with_args(
            observer=module.MovingAverageMinMaxObserver, **ACTIVATION
        ),
        weight=FakeQuantize.with_args(
            observer=module.MovingAveragePerChannelMinMaxObserver, **WEIGHT
        ),
    )


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        tq.QuantStub(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 4),
        tq.DeQuantStub(),
    )


def _train(module) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    model = _model()
    model.qconfig = _qconfig(module)
    model.train()
    prepared = tq.prepare_qat(model)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(5):
        x = torch.randn(32, 16, generator=generator) * (step + 1)
        loss = prepared(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return prepared, losses


def test_fake_quantize_with_tritonobs_observers_trains_like_torch_ao(backend):
    ours, our_losses = _train(tritonobs)
    reference, reference_losses = _train(torch.ao.quantization.observer)
    assert any(
        isinstance(m.activation_post_process, tritonobs.MovingAverageMinMaxObserver)
        for m in ours.modules()
        if isinstance(m, FakeQuantize)
    )
    torch.testing.assert_close(
        torch.stack(our_losses), torch.stack(reference_losses), atol=0, rtol=0
    )
    fake_quants = [m for m in ours.modules() if isinstance(m, FakeQuantize)]
    reference_fake_quants = [m for m in reference.modules() if isinstance(m, FakeQuantize)]
    assert len(fake_quants) == len(reference_fake_quants) >= 4
    for got, expected in zip(fake_quants, reference_fake_quants, strict=True):
        torch.testing.assert_close(got.scale, expected.scale, atol=0, rtol=0)
        torch.testing.assert_close(got.zero_point, expected.zero_point, atol=0, rtol=0)
    converted = tq.convert(ours.eval())
    expected = tq.convert(reference.eval())
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(converted(x), expected(x), atol=0, rtol=0)


def test_fused_fake_quantize_rejects_tritonobs_observers():
    """What get_default_qat_qconfig builds: documented, with the error a user sees."""
    with pytest.raises(AssertionError, match="only works with MovingAverageMinMaxObserver"):
        FusedMovingAvgObsFakeQuantize(observer=tritonobs.MovingAverageMinMaxObserver, **ACTIVATION)
