"""Offline evaluation data: real photographs and ground-truth instances shipped inside installed packages."""

from pedvit.data.gt import DATASETS, GTInstance, all_gt_instances, gt_instances, mask_box_xyxy
from pedvit.data.photos import FACE_PHOTOS, Photo, face_photos, photo, read_photo, real_photos, to_rgb_uint8

__all__ = [
    "DATASETS",
    "FACE_PHOTOS",
    "GTInstance",
    "Photo",
    "all_gt_instances",
    "face_photos",
    "gt_instances",
    "mask_box_xyxy",
    "photo",
    "read_photo",
    "real_photos",
    "to_rgb_uint8",
]
