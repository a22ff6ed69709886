"""The worker hands freed heap memory back to the OS after each request (glibc's malloc_trim)."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from pedvit.cloud import heap


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_malloc_trim_is_found_and_releases_freed_blocks():
    assert heap._TRIM is not None  # the mitigation is active where the soak measured the growth
    blocks = [np.ones(1 << 20) for _ in range(64)]  # 512 MiB of small-ish blocks, then freed
    del blocks
    assert isinstance(heap.release_free_heap(), bool)


def test_release_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_TRIM", None)
    assert heap.release_free_heap() is False


_COUNT_ARENAS = """
import ctypes, sys, tempfile, threading
import numpy as np
from pedvit.cloud import heap
if sys.argv[1] == "limit":
    assert heap.limit_heap_growth(2)
threads = [threading.Thread(target=lambda: [np.ones(4096) for _ in range(100)]) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(open(f.name).read().count("<heap nr="))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_worker_start_caps_the_malloc_arenas():
    # eight allocating threads get eight arenas by default (the main one included, more than two), two with the cap
    import subprocess
    import sys

    def arenas(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _COUNT_ARENAS, mode], capture_output=True, text=True, check=True)
        return int(done.stdout.strip().splitlines()[-1])

    assert arenas("limit") <= 2 < arenas("default")
