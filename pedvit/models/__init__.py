"""The Segment Anything family, exposed block by block for split inference."""

from .registry import MODEL_NAMES, build_model, load_checkpoint
from .sam import Sam
from .weights import WeightsNotFoundError, mobile_sam_checkpoint

__all__ = ["MODEL_NAMES", "Sam", "WeightsNotFoundError", "build_model", "load_checkpoint", "mobile_sam_checkpoint"]
