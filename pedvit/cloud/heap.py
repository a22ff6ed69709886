"""Hand freed heap memory back to the operating system between requests.

A worker computes on several gRPC threads; glibc gives each thread its own malloc arena and keeps freed
blocks there, so a long-running worker's resident memory climbs in steps with the largest batches it has seen
(docs/hardening.md, the soak). `malloc_trim(0)` returns the free tops and free pages of every arena, and
`limit_heap_growth` caps the number of arenas at worker start. Elsewhere than glibc both do nothing.
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

# glibc's mallopt parameter number (malloc.h)
_M_ARENA_MAX = -8


def limit_heap_growth(arenas: int = 2) -> bool:
    """Allow at most `arenas` glibc malloc arenas in this process; call once, before the server starts its threads.

    glibc's default is up to 8 arenas per core, one for each thread that allocates: every gRPC thread that
    computed a batch keeps that batch's freed blocks in its own arena. In a 90-request soak (6 workers, faults
    injected, `malloc_trim` after each request in both runs) the largest worker grew 4.8 % with 2 arenas and
    8.4 % without. A fixed 1 MiB mmap threshold on top of it was measured too and changed nothing (5.0 %).
    True when glibc accepted the setting (False elsewhere: nothing to configure)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def release_free_heap() -> bool:
    """Return free heap memory to the OS (glibc `malloc_trim(0)`); True when some was released."""
    return bool(_TRIM(0)) if _TRIM is not None else False
