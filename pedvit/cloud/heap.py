"""Hand freed heap memory back to the operating system between requests.

A worker computes on several gRPC threads; glibc gives each thread its own malloc arena and keeps freed
blocks there, so a long-running worker's resident memory climbs in steps with the largest batches it has seen
(docs/hardening.md, the soak). `malloc_trim(0)` returns the free tops and free pages of every arena.
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_heap() -> bool:
    """Return free heap memory to the OS (glibc `malloc_trim(0)`); True when some was released."""
    return bool(_TRIM(0)) if _TRIM is not None else False
