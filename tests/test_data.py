"""Offline evaluation data: real photos and ground-truth instances."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pedvit.data import DATASETS, FACE_PHOTOS, face_photos, gt_instances, mask_box_xyxy, photo, real_photos
from pedvit.data.gt import instances_from_label_image
from pedvit.privacy.detection import detect


@pytest.fixture(scope="module")
def photos():
    return real_photos()


def test_real_photos_are_distinct_rgb_uint8(photos) -> None:
    assert len(photos) >= 20
    names = [p.name for p in photos]
    assert len(set(names)) == len(names)
    digests = set()
    for p in photos:
        assert p.image.dtype == np.uint8
        assert p.image.ndim == 3 and p.image.shape[2] == 3
        assert min(p.image.shape[:2]) >= 64
        assert p.source
        digests.add(hashlib.sha1(p.image.tobytes()).hexdigest())
    assert len(digests) == len(photos)


def test_real_photos_deterministic_and_copies(photos) -> None:
    again = real_photos()
    assert [p.name for p in again] == [p.name for p in photos]
    again[0].image[:] = 0  # callers get private copies; the cache stays intact
    assert real_photos()[0].image.any()
    assert [p.name for p in real_photos(min_count=0, names=["voc", "astronaut"])] == ["astronaut", "voc"]
    with pytest.raises(RuntimeError):
        real_photos(min_count=10_000)
    with pytest.raises(KeyError):
        photo("no-such-photo")


def test_grayscale_option(photos) -> None:
    colour = real_photos(min_count=0, grayscale=False)
    assert 0 < len(colour) < len(photos)
    assert any(not np.array_equal(p.image[..., 0], p.image[..., 1]) for p in colour)


def test_face_photos_have_haar_detectable_faces(photos) -> None:
    faces = face_photos(photos)
    assert {p.name for p in faces} == set(FACE_PHOTOS)
    for p in faces:
        assert detect(p.image, ["frontal_face"])["frontal_face"], p.name


@pytest.mark.parametrize("dataset", DATASETS)
def test_gt_instances(dataset: str) -> None:
    insts = gt_instances(dataset)  # type: ignore[arg-type]
    assert insts
    img = photo(dataset).image
    for inst in insts:
        assert inst.image_name == dataset
        assert np.array_equal(inst.image, img)
        assert inst.mask.dtype == np.bool_ and inst.mask.shape == img.shape[:2]
        assert inst.area >= 256
        x0, y0, x1, y1 = inst.box
        assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
        assert inst.box == mask_box_xyxy(inst.mask)
        # mask lies inside the box and touches all four sides
        assert inst.mask[y0:y1, x0:x1].sum() == inst.area
        assert inst.mask[y0, x0:x1].any() and inst.mask[y1 - 1, x0:x1].any()
        assert inst.mask[y0:y1, x0].any() and inst.mask[y0:y1, x1 - 1].any()
        assert inst.class_name and inst.class_name != "background"
    # deterministic
    assert [i.index for i in gt_instances(dataset)] == [i.index for i in insts]  # type: ignore[arg-type]
    assert len(gt_instances(dataset, min_area=1)) >= len(insts)  # type: ignore[arg-type]


def test_gt_counts_and_unknown() -> None:
    assert len(gt_instances("voc")) == 17
    assert len(gt_instances("arc2017")) == 8
    assert {i.class_name for i in gt_instances("voc")} >= {"person", "chair"}
    with pytest.raises(ValueError):
        gt_instances("coco")  # type: ignore[arg-type]


def test_instances_from_label_image_ignores_void() -> None:
    inst = np.zeros((40, 40), np.int32)
    inst[5:25, 5:25] = 1
    inst[4, :] = 255  # void boundary band
    inst[30:32, 30:32] = 2  # tiny, dropped
    cls = np.where(inst == 1, 3, 0)
    cls[inst == 255] = 255
    out = instances_from_label_image("x", np.zeros((40, 40, 3), np.uint8), inst, cls, [f"c{i}" for i in range(5)],
                                     min_area=10)
    assert len(out) == 1
    assert out[0].box == (5, 5, 25, 25) and out[0].label == 3 and out[0].class_name == "c3"
