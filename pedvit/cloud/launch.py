"""Worker processes: the one way to start `pedvit worker` subprocesses, wait for them, and stop them.

A worker prints one line once it serves (`ready_line`): ``PEDVIT_WORKER_READY port=<p>``. A launcher sends the
worker's stdout and stderr to a log file (never a pipe: an undrained pipe would block a chatty worker), reads
the port from that line, and on failure raises `LaunchError` with the end of the log.

    argv = worker_argv("mobile_sam")                           # `python -m pedvit worker --port 0 ...`
    workers = [spawn_worker(argv, log_dir / f"w{i}.log", name=f"w{i}") for i in range(4)]
    wait_ready(workers, timeout_s=120)                         # all four serve: workers[i].address
    stop_workers(workers)

Anything that prints the ready line can be launched the same way (the netem benchmark's delay proxy does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pedvit.transport.tls import ServerTLS

#: First word of the line a worker prints once it serves.
READY_PREFIX = "PEDVIT_WORKER_READY"
#: Set by `spawn_worker` for a worker tied to its parent: the parent's pid. The worker stops when its parent is
#: gone, however the parent ended (SIGKILL and crashes included), so local workers never outlive their command.
PARENT_PID_ENV = "PEDVIT_PARENT_PID"


class LaunchError(RuntimeError):
    """A worker process exited before it was ready, or did not get ready in time."""


def ready_line(port: int) -> str:
    """The line a worker prints (and flushes) once it serves on `port`."""
    return f"{READY_PREFIX} port={port}"


def parse_ready_line(line: str) -> int | None:
    """The port of a ready line, or None for any other line."""
    if not line.startswith(READY_PREFIX + " port="):
        return None
    return int(line.split("port=", 1)[1].split()[0])


def worker_argv(
    model: str = "mobile_sam",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    checkpoint: str | None = None,
    tls: ServerTLS | None = None,
    token_file: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv of one `pedvit worker` (port 0: it picks a free port and prints it in its ready line)."""
    argv = [sys.executable, "-m", "pedvit", "worker", "--port", str(port), "--host", host, "--model", model]
    if checkpoint:
        argv += ["--checkpoint", str(checkpoint)]
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-client-ca", str(tls.client_ca)]
    if token_file:
        argv += ["--token-file", str(token_file)]
    if device is not None:
        argv += ["--device", device]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return argv + [str(a) for a in extra_args]


@dataclass
class WorkerProcess:
    """One launched process and what its ready line told."""

    name: str
    process: subprocess.Popen
    log: Path
    host: str = "127.0.0.1"
    #: Started in its own session: stopped as a process group (with any wrapper such as `ip netns exec`).
    own_session: bool = False
    cpus: tuple[int, ...] | None = None
    port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, n: int = 2000) -> str:
        """The last `n` bytes of the process's output."""
        try:
            return self.log.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


def spawn_worker(
    argv: Sequence[str],
    log: str | os.PathLike[str],
    *,
    name: str,
    host: str = "127.0.0.1",
    own_session: bool = False,
    cpus: Sequence[int] | None = None,
    env: Mapping[str, str] | None = None,
) -> WorkerProcess:
    """Start one process whose output goes to `log`; returns at once (see `wait_ready`).

    Args:
        argv: the command (possibly prefixed, e.g. by `ip netns exec NS`).
        host: the address its ready line's port is reached at.
        own_session: start it in a new session (detached from this terminal; stopped as a process group) and
            let it outlive this process (`pedvit cluster up`); otherwise it stops when this process ends.
        cpus: pin it to these cores (`os.sched_setaffinity` in the child before exec).
        env: variables set on top of this process's environment.
    """
    pinned = tuple(cpus) if cpus else None

    def pin() -> None:  # pragma: no cover - runs in the child between fork and exec
        os.sched_setaffinity(0, pinned)

    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        process = subprocess.Popen(
            list(argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **({} if own_session else {PARENT_PID_ENV: str(os.getpid())}),
                 **(env or {})},
            start_new_session=own_session, preexec_fn=pin if pinned else None,
        )
    return WorkerProcess(name, process, path, host, own_session, pinned)


def start_worker(argv: Sequence[str], log: str | os.PathLike[str], *, name: str, timeout_s: float = 300.0,
                 **spawn_options: Any) -> WorkerProcess:
    """`spawn_worker` + `wait_ready` for one process (stopped again when it does not get ready)."""
    worker = spawn_worker(argv, log, name=name, **spawn_options)
    try:
        wait_ready([worker], timeout_s)
    except BaseException:
        stop_workers([worker])
        raise
    return worker


def wait_ready(workers: Sequence[WorkerProcess], timeout_s: float) -> None:
    """Wait until every worker has printed its ready line (sets `.port`).

    Raises:
        LaunchError: a worker exited first, or `timeout_s` passed (the message ends with its output).
    """
    deadline = time.monotonic() + timeout_s
    waiting = [w for w in workers if w.port is None]
    while waiting:
        for w in list(waiting):
            for line in w.log_tail(1 << 16).splitlines():
                port = parse_ready_line(line)
                if port is not None:
                    w.port = port
            if w.port is not None:
                waiting.remove(w)
            elif w.process.poll() is not None:
                raise LaunchError(f"worker {w.name} exited with code {w.process.returncode} before it was ready; "
                                  f"its output ends with:\n{w.log_tail()}")
        if waiting and time.monotonic() > deadline:
            raise LaunchError(f"{len(waiting)} worker(s) not ready after {timeout_s:.0f} s (e.g. {waiting[0].name}); "
                              f"its output ends with:\n{waiting[0].log_tail()}")
        if waiting:
            time.sleep(0.05)


def stop_workers(workers: Sequence[WorkerProcess], timeout_s: float = 5.0) -> None:
    """SIGTERM every worker (its process group when it has its own session), SIGKILL those still alive after
    `timeout_s` seconds."""
    for w in workers:
        if w.process.poll() is None:
            _signal(w, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for w in workers:
        try:
            w.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(w, signal.SIGKILL)
            w.process.wait()


def _signal(worker: WorkerProcess, sig: int) -> None:
    try:
        if worker.own_session:
            os.killpg(worker.process.pid, sig)
        else:
            worker.process.send_signal(sig)
    except ProcessLookupError:
        pass


def pid_alive(pid: int) -> bool:
    """Is a process with this id running (or a zombie)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stop_pids(pids: Sequence[int], timeout_s: float) -> list[int]:
    """SIGTERM processes that are not our children (workers of a cluster file), SIGKILL those still alive after
    `timeout_s` seconds; returns the killed ones."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if pid_alive(pid) and not _is_zombie(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def exit_with_parent(stop: Callable[[], object], poll_s: float = 0.5) -> threading.Thread | None:
    """In a worker started by `spawn_worker` (tied to its parent): call `stop` once the parent process is
    gone (the worker is re-parented), from a daemon thread. None when the worker was not tied to a parent."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not expected.isdigit():
        return None

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(poll_s)
        stop()

    thread = threading.Thread(target=watch, name="pedvit-parent-watch", daemon=True)
    thread.start()
    return thread

