"""Clusters of workers: the cluster file, local worker subprocesses and their status (for `pedvit cluster
up/down/status`, `pedvit.cli.cluster`).

Cluster file (JSON; relative paths are relative to the file's directory)::

    {"workers": [{"address": "127.0.0.1:50051", "name": "w0", "pid": 1234}],
     "tls": {"ca": "pki/ca.pem", "cert": "pki/edge.pem", "key": "pki/edge.key"} | null,
     "token_file": "token.txt" | null}

`pid` is only present for workers started by `pedvit cluster up` (so `cluster down` can stop them).

    with start_local_workers(4) as cluster:          # 4 `pedvit worker --port 0` processes on loopback
        predictor = DistributedSamPredictor(model, cluster.executors())
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pedvit.cloud.launch import LaunchError, WorkerProcess, pid_alive, spawn_worker, stop_workers, wait_ready, worker_argv
from pedvit.transport.tls import ClientTLS, ServerTLS

#: Where `pedvit cluster up` writes the cluster file by default.
DEFAULT_CLUSTER_FILE = ".pedvit/cluster.json"


class ClusterError(RuntimeError):
    """A worker could not be started, reached, or the cluster file is invalid."""


# ------------------------------------------------------------------------------------------ cluster file
@dataclass
class WorkerEntry:
    """One worker of a cluster file."""

    address: str
    name: str
    pid: int | None = None


@dataclass
class Cluster:
    """A set of workers plus the edge's credentials to reach them."""

    workers: list[WorkerEntry]
    tls: ClientTLS | None = None
    token_file: str | None = None
    path: Path | None = None

    def token(self) -> str | None:
        if not self.token_file:
            return None
        from pedvit.transport.auth import read_token_file

        return read_token_file(self.token_file)

    def executors(self) -> list[Any]:
        """One `RemoteExecutor` per worker, with the cluster's TLS and token applied."""
        from pedvit.transport.client import RemoteExecutor

        token = self.token()
        return [RemoteExecutor(w.address, tls=self.tls, token=token, name=w.name) for w in self.workers]

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        def rel(p: Any) -> str:
            path = Path(p).resolve()
            if base is not None:
                try:
                    return str(path.relative_to(base.resolve()))
                except ValueError:
                    pass
            return str(path)

        workers = []
        for w in self.workers:
            entry: dict[str, Any] = {"address": w.address, "name": w.name}
            if w.pid is not None:
                entry["pid"] = w.pid
            workers.append(entry)
        tls = {"ca": rel(self.tls.ca), "cert": rel(self.tls.cert), "key": rel(self.tls.key)} if self.tls else None
        return {"workers": workers, "tls": tls, "token_file": rel(self.token_file) if self.token_file else None}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the cluster file (paths relative to its directory when they lie below it)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(out.parent), indent=2) + "\n", encoding="utf-8")
        self.path = out
        return out


def load_cluster(path: str | os.PathLike[str]) -> Cluster:
    """Read and validate a cluster file. Raises ClusterError with the reason (missing file, bad JSON, ...)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClusterError(f"cluster file {p} not found (start workers with `pedvit cluster up`)") from None
    except json.JSONDecodeError as error:
        raise ClusterError(f"cluster file {p} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list) or not data["workers"]:
        raise ClusterError(f"cluster file {p}: needs a non-empty 'workers' list")
    base = p.parent

    def resolve(value: Any, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise ClusterError(f"cluster file {p}: {what} must be a path string")
        q = Path(value)
        return str(q if q.is_absolute() else base / q)

    workers = []
    for i, w in enumerate(data["workers"]):
        if not isinstance(w, dict) or not isinstance(w.get("address"), str) or ":" not in w["address"]:
            raise ClusterError(f"cluster file {p}: worker {i} needs an 'address' of the form host:port")
        pid = w.get("pid")
        workers.append(WorkerEntry(w["address"], str(w.get("name") or w["address"]), int(pid) if pid is not None else None))
    names = [w.name for w in workers]
    if len(set(names)) != len(names):
        raise ClusterError(f"cluster file {p}: worker names must be unique, got {names}")
    tls = None
    if data.get("tls"):
        t = data["tls"]
        if not isinstance(t, dict) or not all(k in t for k in ("ca", "cert", "key")):
            raise ClusterError(f"cluster file {p}: 'tls' needs 'ca', 'cert' and 'key'")
        tls = ClientTLS(resolve(t["ca"], "tls.ca"), resolve(t["cert"], "tls.cert"), resolve(t["key"], "tls.key"), t.get("server_name"))
    token_file = resolve(data["token_file"], "token_file") if data.get("token_file") else None
    return Cluster(workers, tls, token_file, p)


# ----------------------------------------------------------------------------------- local subprocesses
def _tls_material(tls: ServerTLS | str | os.PathLike[str] | None) -> tuple[ServerTLS | None, ClientTLS | None]:
    """A dev-PKI directory (see `generate_dev_pki`) -> worker and edge TLS; a ServerTLS -> (it, None)."""
    if tls is None or isinstance(tls, ServerTLS):
        return tls, None
    d = Path(tls)
    if not (d / "ca.pem").exists():
        from pedvit.transport.tls import generate_dev_pki

        generate_dev_pki(d)
    return ServerTLS(d / "worker.pem", d / "worker.key", d / "ca.pem"), ClientTLS(d / "ca.pem", d / "edge.pem", d / "edge.key")


@dataclass
class LocalCluster:
    """Worker subprocesses on loopback. Stop with `.stop()` or a `with` block (also stopped at exit)."""

    workers: list[WorkerProcess]
    client_tls: ClientTLS | None = None
    token: str | None = None
    token_file: str | None = None
    _log_dir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def addresses(self) -> list[str]:
        return [w.address for w in self.workers]

    def executors(self, **kwargs: Any) -> list[Any]:
        """A `RemoteExecutor` per worker (named like the workers, TLS/token applied)."""
        from pedvit.transport.client import RemoteExecutor

        return [RemoteExecutor(w.address, tls=self.client_tls, token=self.token, name=w.name, **kwargs) for w in self.workers]

    def cluster(self) -> Cluster:
        """The cluster-file view of these workers (with PIDs)."""
        return Cluster([WorkerEntry(w.address, w.name, w.pid) for w in self.workers], self.client_tls, self.token_file)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (default SIGKILL) to worker `index` (failure tests)."""
        self.workers[index].process.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate every worker, kill those still alive after `timeout` seconds."""
        if self._stopped:
            return
        self._stopped = True
        stop_workers(self.workers, timeout)
        if self._log_dir is not None:
            self._log_dir.cleanup()
        atexit.unregister(self.stop)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_workers(
    n: int,
    model: str = "mobile_sam",
    checkpoint: str | None = None,
    tls: ServerTLS | str | os.PathLike[str] | None = None,
    token_file: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] | Callable[[int], Sequence[str]] = (),
    *,
    timeout_s: float = 120.0,
    log_dir: str | os.PathLike[str] | None = None,
    detached: bool = False,
    client_tls: ClientTLS | None = None,
    names: Sequence[str] | None = None,
) -> LocalCluster:
    """Start `n` `pedvit worker --port 0` subprocesses in parallel on 127.0.0.1 and wait until all serve.

    Args:
        tls: a `ServerTLS`, or a dev-PKI directory (created with `generate_dev_pki` when empty; the edge
            certificate from it becomes `client_tls`).
        token_file: bearer-token file the workers require (and the edge sends).
        extra_args: extra worker arguments, or a function worker index -> arguments (e.g. a slowdown for one).
        timeout_s: how long to wait for all ready lines (`pedvit.cloud.launch`).
        log_dir: where worker stdout/stderr go (default: a temporary directory removed on stop).
        detached: start the workers in their own session and do not tie them to this process (cluster up).

    Raises:
        ClusterError: a worker exited or did not get ready in time (message has its stderr tail).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    server_tls, derived_client = _tls_material(tls)
    client_tls = client_tls or derived_client
    token = None
    if token_file:
        from pedvit.transport.auth import read_token_file

        token = read_token_file(token_file)
    tmp = None
    if log_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pedvit-workers-")
        log_dir = tmp.name
    names = list(names) if names else [f"w{i}" for i in range(n)]
    workers: list[WorkerProcess] = []
    try:
        for i in range(n):
            argv = worker_argv(model, checkpoint=checkpoint, tls=server_tls, token_file=str(token_file) if token_file else None,
                               extra_args=extra_args(i) if callable(extra_args) else extra_args)
            workers.append(spawn_worker(argv, Path(log_dir) / f"{names[i]}.log", name=names[i], own_session=detached))
        wait_ready(workers, timeout_s)
    except BaseException as error:
        stop_workers(workers, 2.0)
        if tmp is not None:
            tmp.cleanup()
        if isinstance(error, LaunchError):
            raise ClusterError(str(error)) from None
        raise
    cluster = LocalCluster(workers, client_tls, token, str(token_file) if token_file else None, tmp)
    if not detached:
        atexit.register(cluster.stop)
    _health_check(cluster)
    return cluster


def _health_check(cluster: LocalCluster) -> None:
    """Every worker must answer the gRPC health check (skipped for TLS workers without an edge cert)."""
    if cluster.workers and cluster.client_tls is None and _uses_tls(cluster):
        return
    for executor, w in zip(cluster.executors(), cluster.workers):
        try:
            if not executor.health(timeout=10.0):
                cluster.stop()
                raise ClusterError(f"worker {w.name} at {w.address} printed READY but fails its health check:\n{w.log_tail()}")
        finally:
            executor.close()


def _uses_tls(cluster: LocalCluster) -> bool:
    return any("--tls-cert" in (w.process.args or []) for w in cluster.workers)


# ------------------------------------------------------------------------------------------------ status
@dataclass
class WorkerStatus:
    """What `cluster status` reports per worker."""

    name: str
    address: str
    healthy: bool
    model: str = ""
    stages: list[str] = field(default_factory=list)
    pid: int | None = None
    pid_alive: bool | None = None
    error: str = ""
    #: Filled by the caller's status extras (e.g. the scheduler's throughput estimates).
    extra: dict[str, Any] = field(default_factory=dict)


#: A function `(cluster, statuses) -> None` that adds fields to each `WorkerStatus.extra` (and so to the
#: `cluster status` table/JSON), e.g. `pedvit.edge.membership.scheduler_estimates`.
StatusExtra = Callable[[Cluster, list[WorkerStatus]], None]


def cluster_status(cluster: Cluster, timeout: float = 3.0, extras: Sequence[StatusExtra] = ()) -> list[WorkerStatus]:
    """Health, model and stages of every worker (queried in parallel), then each of `extras` in turn."""
    executors = cluster.executors()
    out: list[WorkerStatus | None] = [None] * len(executors)

    def probe(i: int) -> None:
        w, ex = cluster.workers[i], executors[i]
        status = WorkerStatus(w.name, w.address, False, pid=w.pid, pid_alive=pid_alive(w.pid) if w.pid else None)
        try:
            status.healthy = ex.health(timeout=timeout)
            if status.healthy:
                info = ex.info(timeout=timeout)
                status.model, status.stages = info.model_name, sorted(info.stages)
        except Exception as error:  # noqa: BLE001 - report, never crash the status command
            status.error = str(error)[:300]
        out[i] = status

    threads = [threading.Thread(target=probe, args=(i,)) for i in range(len(executors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ex in executors:
        ex.close()
    statuses = [s for s in out if s is not None]
    for add_extra in extras:
        add_extra(cluster, statuses)
    return statuses
