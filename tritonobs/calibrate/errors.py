"""The errors of :func:`tritonobs.calibrate.calibrate`: all of them are ``CalibrationError``."""

from __future__ import annotations


class CalibrationError(ValueError):
    """Bad input to :func:`calibrate`; the model is left without the calibration hooks."""


class NoTargetModulesError(CalibrationError):
    """The model has no module that ``targets`` selects."""


class EmptyBatchesError(CalibrationError):
    """The batch iterable yielded nothing."""


class BatchTypeError(CalibrationError, TypeError):
    """A batch is not a tensor, a tuple/list of tensors or a dict of tensors."""


class DeviceMismatchError(CalibrationError):
    """The model is spread over several devices, or is not on the requested one."""


class CheckpointError(CalibrationError):
    """A checkpoint folder cannot be used: truncated or corrupt files, a checkpoint left there
    without ``resume=True``, or fewer batches than the checkpoint has folded in."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by another model, observer or set of arguments."""
