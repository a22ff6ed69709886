"""Window geometry, assignment schemes, constraints and sensitive-region detection (numpy, cv2 only).

``sensitivity`` imports OpenCV lazily, so geometry and schemes work without it.
"""

from .check import check_assignment
from .constraints import Assignment, ConstraintError, Constraints, max_share
from .detectors import DEFAULT_KEEP_LOCAL, DetectorError, constraints_for_image, parse_keep_local
from .geometry import Box, Window, WindowGrid, boxes_intersect, resized_shape
from .schemes import SCHEMES, assign
from .search import spread_feasible
from .sensitivity import (
    Region,
    detect_objects,
    detect_sensitive_regions,
    object_groups,
    sensitive_windows,
)

__all__ = [
    "DEFAULT_KEEP_LOCAL",
    "DetectorError",
    "parse_keep_local",
    "SCHEMES",
    "Assignment",
    "Box",
    "boxes_intersect",
    "ConstraintError",
    "Constraints",
    "Region",
    "Window",
    "WindowGrid",
    "assign",
    "check_assignment",
    "constraints_for_image",
    "detect_objects",
    "detect_sensitive_regions",
    "max_share",
    "object_groups",
    "resized_shape",
    "sensitive_windows",
    "spread_feasible",
]
