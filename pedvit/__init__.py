"""pedvit: privacy-enhanced distributed inference for Vision Transformers (PED-SAM)."""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("pedvit")
except PackageNotFoundError:  # running from a source tree (the worker reports the same, pedvit.cloud.worker)
    __version__ = "0.0.0+local"

__all__ = ["SamPredictor", "DistributedSamPredictor", "SamAutomaticMaskGenerator", "DistributedSamAutomaticMaskGenerator",
           "build_model", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import pedvit.partition` must not pay for importing torch.
    if name == "SamPredictor":
        from pedvit.edge.predictor import SamPredictor

        return SamPredictor
    if name == "DistributedSamPredictor":
        from pedvit.edge.distributed import DistributedSamPredictor

        return DistributedSamPredictor
    if name in ("SamAutomaticMaskGenerator", "DistributedSamAutomaticMaskGenerator"):
        from pedvit.edge import automatic_masks

        return getattr(automatic_masks, name)
    if name == "build_model":
        from pedvit.models import build_model

        return build_model
    raise AttributeError(f"module 'pedvit' has no attribute {name!r}")
