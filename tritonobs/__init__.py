"""tritonobs: a Triton-kernel backend for PyTorch quantization observers.

A drop-in for ``torch.ao.quantization.observer``: change the import, keep the numbers.
"""

from tritonobs.backend import get_backend, set_backend, use_backend

# ``tritonobs.calibrate`` is the function; import the module's other names with
# ``from tritonobs.calibrate import ...``.
from tritonobs.calibrate import CalibrationError, CalibrationResult, calibrate
from tritonobs.llm_calibrators import AmaxHistogramObserver, histogram_amax, weight_qparams
from tritonobs.observer import (
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    NoopObserver,
    ObserverBase,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    RecordingObserver,
    ReuseInputObserver,
    UniformQuantizationObserverBase,
    default_affine_fixed_qparams_observer,
    default_debug_observer,
    default_dynamic_quant_observer,
    default_fixed_qparams_range_0to1_observer,
    default_fixed_qparams_range_neg1to1_observer,
    default_float_qparams_observer,
    default_float_qparams_observer_4bit,
    default_histogram_observer,
    default_observer,
    default_per_channel_weight_observer,
    default_placeholder_observer,
    default_reuse_input_observer,
    default_symmetric_fixed_qparams_observer,
    default_weight_observer,
    get_observer_state_dict,
    load_observer_state_dict,
    per_channel_weight_observer_range_neg_127_to_127,
    weight_observer_range_neg_127_to_127,
)
from tritonobs.observer import __all__ as _observer_all

__version__ = "0.1.0"

__all__ = [
    *_observer_all,
    "AmaxHistogramObserver",
    "histogram_amax",
    "weight_qparams",
    "CalibrationError",
    "CalibrationResult",
    "calibrate",
    "get_backend",
    "set_backend",
    "use_backend",
    "__version__",
]
