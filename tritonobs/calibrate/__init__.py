"""Calibrate a model: observe what flows into its layers and hand back quantization parameters.

:func:`calibrate` attaches one observer to the input of every target module (``nn.Linear`` by
default; weights and outputs on request) through forward hooks, runs the calibration batches under
``torch.inference_mode()``, always removes its hooks, and returns a :class:`CalibrationResult`:
per-layer scale/zero point and statistics, a summary table, and save/load (tensors in
safetensors, metadata in JSON) that restores every observer's state exactly. With a checkpoint
folder the run survives a crash (``resume=True``).

One module per concern: ``session`` (hooks, batch loop, progress), ``result`` (the result and its
files), ``checkpoint`` (atomic state and resume), ``observers`` (which observer, rebuilt from a
file), ``weights`` (weight scales without an observer), ``errors``.
"""

from tritonobs.calibrate.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from tritonobs.calibrate.errors import (
    BatchTypeError,
    CalibrationError,
    CheckpointError,
    CheckpointMismatchError,
    DeviceMismatchError,
    EmptyBatchesError,
    NoTargetModulesError,
)
from tritonobs.calibrate.observers import (
    OBSERVER_NAMES,
    TORCH_AO_OBSERVER_NAMES,
    ObservedTensor,
    ObserverSpec,
    Role,
    observer_factory,
)
from tritonobs.calibrate.result import FORMAT_NAME, FORMAT_VERSION, CalibrationResult
from tritonobs.calibrate.session import Targets, calibrate
from tritonobs.calibrate.weights import (
    WEIGHT_SCHEMES,
    WEIGHT_SEARCHES,
    WeightQParams,
    compute_weight_qparams,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "OBSERVER_NAMES",
    "TORCH_AO_OBSERVER_NAMES",
    "WEIGHT_SCHEMES",
    "WEIGHT_SEARCHES",
    "BatchTypeError",
    "CalibrationError",
    "CalibrationResult",
    "CheckpointError",
    "CheckpointMismatchError",
    "DeviceMismatchError",
    "EmptyBatchesError",
    "NoTargetModulesError",
    "ObservedTensor",
    "ObserverSpec",
    "Role",
    "Targets",
    "WeightQParams",
    "calibrate",
    "compute_weight_qparams",
    "observer_factory",
]
