"""Drop-in fidelity of the buffers (the observers that have buffers): where torch.ao's observer updates a buffer in place (the same
tensor object, the same storage), tritonobs' does too, for every observer and buffer, and a
DataParallel-style replica updates the original as torch.ao's does. PyTorch's own observer tests
rely on both."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization.observer as ao

import tritonobs

CASES = [
    ("MinMaxObserver", {}),
    ("MovingAverageMinMaxObserver", {"averaging_constant": 0.5}),
    ("PerChannelMinMaxObserver", {"ch_axis": 1}),
    ("MovingAveragePerChannelMinMaxObserver", {"ch_axis": 0, "averaging_constant": 0.5}),
    ("HistogramObserver", {"bins": 64}),
    ("FixedQParamsObserver", {"scale": 0.1, "zero_point": 3}),
]


def _id(case):
    return case[0]


def _batches():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(5, 7, generator=generator) * (1 + 2 * k) for k in range(3)]


def _storage_kept(observer) -> dict[str, tuple[bool, bool]]:
    """Per buffer: (same tensor object, same storage) across three forwards."""
    before = {
        name: (buffer, buffer.untyped_storage().data_ptr())
        for name, buffer in observer._buffers.items()
    }
    for x in _batches():
        observer(x)
    return {
        name: (
            observer._buffers[name] is tensor,
            observer._buffers[name].untyped_storage().data_ptr() == pointer,
        )
        for name, (tensor, pointer) in before.items()
    }


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_buffers_are_updated_in_place_where_torch_ao_does(case):
    name, kwargs = case
    reference = _storage_kept(getattr(ao, name)(**kwargs))
    ours = _storage_kept(getattr(tritonobs, name)(**kwargs))
    for buffer, kept in reference.items():
        assert buffer in ours, buffer
        object_kept, storage_kept = kept
        if object_kept:
            assert ours[buffer][0], f"{name}.{buffer} is replaced; torch.ao keeps the tensor"
        if storage_kept:
            assert ours[buffer][1], f"{name}.{buffer} gets new storage; torch.ao keeps it"


@pytest.mark.parametrize("case", CASES[:5], ids=_id)
def test_replica_updates_the_original_as_torch_ao(case):
    name, kwargs = case
    reference, ours = getattr(ao, name)(**kwargs), getattr(tritonobs, name)(**kwargs)
    x = _batches()[1]
    reference._replicate_for_data_parallel()(x)
    ours._replicate_for_data_parallel()(x)
    for buffer, expected in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[buffer], expected, atol=0, rtol=0)
