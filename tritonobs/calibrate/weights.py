"""Weight scales without an observer: llm-compressor's presets through ``weight_qparams``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from tritonobs.calibrate.errors import CalibrationError

# The weight_qparams arguments of each scheme, all symmetric (llm-compressor's W8A8 int8, W4A16
# and FP8 presets).
WEIGHT_SCHEMES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "int8-channel": {"num_bits": 8, "type": "int", "strategy": "channel"},
        "int4-group128": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128},
        "fp8-channel": {"num_bits": 8, "type": "float", "strategy": "channel"},
        "fp8-block128": {
            "num_bits": 8,
            "type": "float",
            "strategy": "block",
            "block_structure": (128, 128),
        },
    }
)
WEIGHT_SEARCHES = ("minmax", "mse")


@dataclass
class WeightQParams:
    """Scale and zero point of each layer's weight under one scheme.

    Attributes:
        scheme: a name of :data:`WEIGHT_SCHEMES`.
        observer: ``"minmax"`` or ``"mse"`` (the search of ``tritonobs.weight_qparams``).
        values: ``(scale, zero_point)`` by layer name, in model order.
    """

    scheme: str
    observer: str
    values: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def keyed(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The values by ``<layer>.weight``, the key an observed weight would have."""
        return {_key(layer): value for layer, value in self.values.items()}

    def describe(self) -> dict[str, Any]:
        """What the JSON file records: the scheme, the search and the layers."""
        return {"scheme": self.scheme, "observer": self.observer, "layers": list(self.values)}

    @classmethod
    def restore(
        cls, described: dict[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> WeightQParams:
        """Rebuild from :meth:`describe` and the saved tensors."""
        values = {
            layer: (tensors[f"{_key(layer)}.scale"], tensors[f"{_key(layer)}.zero_point"])
            for layer in described["layers"]
        }
        return cls(described["scheme"], described["observer"], values)


def _key(layer: str) -> str:
    return f"{layer}.weight" if layer else "weight"


def compute_weight_qparams(
    model: nn.Module,
    scheme: str,
    *,
    observer: str = "minmax",
    targets: tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool] = (nn.Linear,),
) -> WeightQParams:
    """``tritonobs.weight_qparams`` of every target module's weight under a named scheme.

    Args:
        model: the model.
        scheme: ``int8-channel``, ``int4-group128`` (128 columns per scale), ``fp8-channel`` or
            ``fp8-block128`` (128 x 128 blocks), each symmetric.
        observer: ``minmax`` or ``mse`` (llm-compressor's ``memoryless_minmax`` /
            ``memoryless_mse``).
        targets: module types, or a predicate ``(name, module) -> bool``; modules without a
            ``weight`` tensor are skipped.

    Returns:
        The :class:`WeightQParams`; attach it to a result (``result.weight_qparams``) to save it.

    Raises:
        CalibrationError: unknown scheme or observer (the message lists the choices), or a weight
            the scheme does not fit (named), e.g. columns not divisible by 128 for
            ``int4-group128``.
    """
    from tritonobs.calibrate.session import select_targets
    from tritonobs.llm_calibrators import weight_qparams

    if scheme not in WEIGHT_SCHEMES:
        raise CalibrationError(
            f"unknown weight scheme {scheme!r}; choose one of {', '.join(WEIGHT_SCHEMES)}"
        )
    if observer not in WEIGHT_SEARCHES:
        raise CalibrationError(
            f"unknown weight observer {observer!r}; choose one of {', '.join(WEIGHT_SEARCHES)}"
        )
    values = {}
    for name, module in select_targets(model, targets):
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        try:
            values[name] = weight_qparams(weight, observer=observer, **WEIGHT_SCHEMES[scheme])
        except ValueError as error:
            raise CalibrationError(
                f"{scheme} does not fit {_key(name)} of shape {list(weight.shape)}: {error}"
            ) from error
    return WeightQParams(scheme, observer, values)
