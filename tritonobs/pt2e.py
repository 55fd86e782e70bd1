"""tritonobs observers in torchao's PT2E flow (``prepare_pt2e`` / ``convert_pt2e``).

torchao's PT2E code recognises observers with ``isinstance(module, torchao.quantization.pt2e.
ObserverBase)``, its own copy of the observer base class, not ``torch.ao``'s (which tritonobs
observers subclass). Without :func:`register_with_torchao`, ``prepare_pt2e`` inserts tritonobs
observers and calibration runs, but ``convert_pt2e`` does not see them: they stay in the graph and
the model is not quantized (no error is raised). torchao's base class is an ABC, so registering
tritonobs's base as a virtual subclass is all that is needed.
"""

from __future__ import annotations

from tritonobs._base import ObserverBase

__all__ = ["register_with_torchao"]


def register_with_torchao() -> bool:
    """Make torchao's PT2E flow treat every tritonobs observer as one of its observers.

    Idempotent; call it once before ``prepare_pt2e``.

    Returns:
        ``True`` when torchao is installed (and the registration done), ``False`` otherwise.
    """
    try:
        from torchao.quantization.pt2e import ObserverBase as TorchAOObserverBase
    except ImportError:
        return False
    TorchAOObserverBase.register(ObserverBase)
    return True
