"""Local workers never outlive the command that started them: not on SIGTERM, not when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A parent that starts two workers the way every pedvit command does (pedvit.cloud.launch), prints their pids,
# then waits inside `try/finally: stop_workers` as the commands do.
PARENT = textwrap.dedent("""
    import sys, time
    from pedvit.cloud.launch import spawn_worker, stop_workers, wait_ready
    argv = [sys.executable, "-m", "pedvit", "worker", "--port", "0",
            "--stages-factory", "test_worker_server:make_test_stages"]
    workers = [spawn_worker(argv, sys.argv[1] + f"/w{i}.log", name=f"w{i}") for i in range(2)]
    try:
        wait_ready(workers, 120)
        print(" ".join(str(w.pid) for w in workers), flush=True)
        if sys.argv[2] == "cli":  # the pedvit CLI's own SIGTERM handling
            import signal
            from pedvit.cli import _terminate
            signal.signal(signal.SIGTERM, _terminate)
        time.sleep(600)
    finally:
        stop_workers(workers)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout_s: float = 30.0) -> bool:
    """Whether every process in `pids` has exited within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(_alive(p) for p in pids)


@pytest.mark.parametrize("how", ["sigterm_cli", "sigkill"])
def test_workers_stop_with_their_parent(tmp_path: Path, how: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), "cli" if how == "sigterm_cli" else "-"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGTERM if how == "sigterm_cli" else signal.SIGKILL)
        parent.wait(timeout=30)
        assert _wait_gone(pids), "a worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _children_of(parent_pid: int) -> list[int]:
    """Worker processes tied to `parent_pid` by the launcher (PEDVIT_PARENT_PID in their environment)."""
    marker = f"PEDVIT_PARENT_PID={parent_pid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_the_real_demo_command_stops_its_workers(tmp_path: Path, sig: signal.Signals) -> None:
    """`pedvit demo --local 2` (what `docker stop` / Ctrl-C hit): once it serves, a signal ends it and both of its
    real MobileSAM workers."""
    demo = subprocess.Popen([sys.executable, "-m", "pedvit", "demo", "--local", "2", "--port", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        for line in demo.stdout:  # "starting 2 local workers ...", then the serving line
            if line.startswith("pedvit demo: http") or time.monotonic() > deadline:
                break
        workers = _children_of(demo.pid)
        assert len(workers) == 2 and all(_alive(p) for p in workers), line
        demo.send_signal(sig)
        demo.wait(timeout=30)
        assert _wait_gone(workers), "a worker outlived `pedvit demo`"
    finally:
        if demo.poll() is None:
            demo.kill()
        for pid in _children_of(demo.pid):
            os.kill(pid, signal.SIGKILL)
