"""Dynamic membership of a `SplitEngine`: a watched cluster file, health checks with backoff, status export.

* `MembershipWatcher(engine, cluster_file=...)` runs a daemon thread that polls the cluster file's mtime and
  adds / removes workers (by name) when it changes, and health-checks every member (`executor.health()`):
  a worker that fails a check is marked failed in the engine's `PerfTable` (so the scheduler stops offering
  it work) and re-checked only when its backoff ends (1 s, 2 s, 4 s, ... capped); one good answer restores it.
* `dump_status(engine, path)` writes `engine.status()` (estimates + health) as JSON; `pedvit cluster status`
  passes `scheduler_estimates` to `pedvit.edge.cluster.cluster_status`, which reads it from
  ``$PEDVIT_ENGINE_STATUS`` or ``engine-status.json`` next to the cluster file.

The cluster file is the one of `pedvit.edge.cluster.load_cluster` (``{"workers": [{"address", "name"}], "tls",
"token_file"}``); nothing about requests is written to disk, only names, addresses and timing estimates.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

from .build import resolve_executors
from .cluster import Cluster, WorkerStatus, load_cluster
from .engine import SplitEngine

log = logging.getLogger(__name__)

STATUS_FILE = "engine-status.json"
STATUS_ENV = "PEDVIT_ENGINE_STATUS"


def _remote_executors(path: Path) -> dict[str, Any]:
    """Name -> `RemoteExecutor` for every worker of a cluster file."""
    return {ex.name: ex for ex in resolve_executors(path)}


def _worker_names(path: Path) -> dict[str, str]:
    """Name -> address of a cluster file (no connections opened)."""
    return {w.name: w.address for w in load_cluster(path).workers}


class MembershipWatcher:
    """Keeps an engine's worker set in step with a cluster file and drops / retries unhealthy workers.

    Args:
        engine: the engine whose workers are managed (`add_worker` / `remove_worker`).
        cluster_file: cluster file to watch (None: health checks only).
        interval_s: how often the cluster file's mtime is polled and health is checked.
        health_timeout_s: deadline of one health check.
        status_path: where to dump `engine.status()` after each check (None: nowhere).
        executors_for: cluster-file path -> {name: executor} (default: `RemoteExecutor`s with the file's TLS
            and token); tests may substitute.
    """

    def __init__(self, engine: SplitEngine, cluster_file: str | os.PathLike[str] | None = None, *,
                 interval_s: float = 1.0, health_timeout_s: float = 1.0,
                 status_path: str | os.PathLike[str] | None = None,
                 executors_for: Callable[[Path], dict[str, Any]] = _remote_executors) -> None:
        self.engine = engine
        self.cluster_file = Path(cluster_file) if cluster_file is not None else None
        self.interval_s = interval_s
        self.health_timeout_s = health_timeout_s
        self.status_path = Path(status_path) if status_path is not None else None
        self.executors_for = executors_for
        self._mtime: float | None = None
        self._managed: set[str] = set()  # workers this watcher added (only those are removed with the file)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ one pass (tests call these directly)
    def sync(self) -> tuple[list[str], list[str]]:
        """Re-read the cluster file if its mtime changed; return (added, removed) worker names."""
        if self.cluster_file is None:
            return [], []
        try:
            mtime = self.cluster_file.stat().st_mtime_ns
        except FileNotFoundError:
            return [], []
        if mtime == self._mtime:
            return [], []
        try:
            wanted = _worker_names(self.cluster_file)
        except Exception as error:  # noqa: BLE001 - a half-written or bad file: keep the current set, retry later
            log.warning("cluster file %s unreadable: %s", self.cluster_file, error)
            return [], []
        self._mtime = mtime
        current = set(self.engine.members())
        added, removed = [], []
        self._managed |= current & set(wanted)  # workers listed in the file are the file's to remove
        for name in sorted(self._managed - set(wanted)):
            if name in current:
                self.engine.remove_worker(name)
                removed.append(name)
            self._managed.discard(name)
        new = [n for n in wanted if n not in current]
        if new:
            executors = self.executors_for(self.cluster_file)
            for name in new:
                self.engine.add_worker(executors.pop(name), name)
                self._managed.add(name)
                added.append(name)
            for unused in executors.values():
                close = getattr(unused, "close", None)
                if close is not None:
                    close()
        if added or removed:
            log.info("membership: +%s -%s", added, removed)
        return added, removed

    def check_health(self) -> dict[str, bool]:
        """Health-check members that are healthy or whose backoff has ended; return name -> answered."""
        perf = self.engine.perf
        now = perf.clock()
        out: dict[str, bool] = {}
        for name, executor in self.engine.members().items():
            if name not in perf:
                continue
            est = perf.get(name)
            if not est.available(now):
                continue  # in backoff: not probed until its retry time
            health = getattr(executor, "health", None)
            try:
                ok = bool(health(timeout=self.health_timeout_s)) if health is not None else True
            except Exception:  # noqa: BLE001 - a failing probe is an unhealthy worker
                ok = False
            out[name] = ok
            try:
                if ok and est.consecutive_failures:
                    perf.mark_ok(name)
                elif not ok:
                    perf.mark_failed(name)
                    log.warning("worker %s failed its health check; next retry in %.1f s", name, perf.get(name).backoff_s())
            except KeyError:
                pass  # removed meanwhile
        return out

    def step(self) -> None:
        """One poll: membership, health, status dump."""
        self.sync()
        self.check_health()
        if self.status_path is not None:
            dump_status(self.engine, self.status_path)

    # ------------------------------------------------------------------ thread
    def start(self) -> "MembershipWatcher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pedvit-membership", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as error:  # noqa: BLE001 - the watcher must outlive one bad poll
                log.warning("membership poll failed: %s", error)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> "MembershipWatcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dump_status(engine: SplitEngine, path: str | os.PathLike[str]) -> Path:
    """Write `engine.status()` as JSON (atomically: a reader never sees half a file)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(engine.status(), indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def scheduler_estimates(cluster: Cluster, statuses: list[WorkerStatus]) -> None:
    """A status extra of `pedvit cluster status`: add each worker's scheduler state and estimates from the
    engine's status file (``$PEDVIT_ENGINE_STATUS`` or ``engine-status.json`` next to the cluster file), when
    there is one."""
    path = os.environ.get(STATUS_ENV)
    if not path and cluster.path is not None:
        path = str(Path(cluster.path).parent / STATUS_FILE)
    if not path or not Path(path).exists():
        return
    try:
        workers = json.loads(Path(path).read_text(encoding="utf-8")).get("workers", {})
    except (OSError, ValueError, AttributeError):
        return
    for status in statuses:
        est = workers.get(status.name)
        if est:
            status.extra.update({
                "sched_state": est.get("state", "?"),
                "s_per_window": round(float(est.get("seconds_per_window", 0.0)), 4),
                "overhead_s": round(float(est.get("overhead_s", 0.0)), 4),
                "observations": est.get("n_observations", 0),
            })
