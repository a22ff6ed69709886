"""Window geometry, assignment schemes, constraints and sensitive-region detection (numpy, cv2 only).

``sensitivity`` imports OpenCV lazily, so geometry and schemes work without it.
"""

from .constraints import Assignment, ConstraintError, Constraints, check_assignment, max_share
from .detectors import DEFAULT_KEEP_LOCAL, DetectorError, parse_keep_local
from .geometry import Box, Window, WindowGrid, resized_shape
from .schemes import SCHEMES, assign, spread_feasible
from .sensitivity import (
    Region,
    constraints_for_image,
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
