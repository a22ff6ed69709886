"""Online performance estimates and health state of cloud workers (and of the edge itself).

The scheduler (`pedvit.edge.scheduler`) models the time a resource needs for a request of ``n`` windows as

    predict(n) = overhead_s + n * seconds_per_window          (0 for n == 0)

where ``overhead_s`` is the fixed per-request cost (round trip, request setup, the per-request part of the
transfer) and ``seconds_per_window`` the marginal cost of one more window (compute, plus the per-window part of
the transfer when a bandwidth is known). Both are exponentially weighted moving averages (EWMA) of observed
requests, seeded from a probe. The edge has no network, so its overhead is always 0.

Health: a failed request marks the worker as failed; it is not offered work again until a retry time that
doubles with each consecutive failure (1 s, 2 s, 4 s, ... up to a cap). A success resets it.

`PerfTable` holds one `PerfEstimate` per worker id plus one for the edge (id `EDGE_ID`), guarded by a lock so
the request threads of the engine can update it while the scheduler reads copies.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

#: Reserved id of the trusted edge in tables, schedules and hedges. No worker may use it.
EDGE_ID = "edge"

#: Health states reported by `PerfEstimate.state`.
HEALTHY = "healthy"
BACKOFF = "backoff"  # failed recently, not offered work before ``next_retry_time``
PROBATION = "probation"  # failed before, retry time reached: offered work again, one success resets it


@dataclass
class PerfEstimate:
    """EWMA estimate of one resource's per-request overhead and per-window cost, plus its health.

    Attributes:
        alpha: EWMA weight of a new observation (0 < alpha <= 1); higher reacts faster, lower smooths noise.
        seconds_per_window: estimated marginal seconds per window (compute, plus transfer when modelled).
        overhead_s: estimated fixed seconds per request (always 0 for the edge).
        bytes_per_s: link bandwidth from a probe, or None; when set together with ``bytes_per_window`` the
            per-window transfer time is added to `marginal_s` and removed from the overhead samples.
        bytes_per_window: EWMA of the bytes sent+received per window, or None until observed.
        is_edge: the trusted edge (no network: overhead forced to 0).
        seeded: whether a probe or an observation has set the estimates; an unseeded estimate takes its
            first observation as is instead of averaging it with the defaults.
        n_observations: successful requests observed.
        consecutive_failures: failures since the last success.
        total_failures: failures ever.
        last_failure_time: clock time of the last failure, or None.
        next_retry_time: clock time from which a failed worker is offered work again.
        backoff_initial_s: backoff after the first failure.
        backoff_cap_s: largest backoff.
    """

    alpha: float = 0.3
    seconds_per_window: float = 0.1
    overhead_s: float = 0.05
    bytes_per_s: float | None = None
    bytes_per_window: float | None = None
    is_edge: bool = False
    seeded: bool = False
    n_observations: int = 0
    consecutive_failures: int = 0
    total_failures: int = 0
    last_failure_time: float | None = None
    next_retry_time: float = 0.0
    backoff_initial_s: float = 1.0
    backoff_cap_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.backoff_initial_s <= 0 or self.backoff_cap_s < self.backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_cap_s")
        if self.is_edge:
            self.overhead_s = 0.0

    # ------------------------------------------------------------------ estimates
    def seed(self, seconds_per_window: float, overhead_s: float = 0.0, bytes_per_s: float | None = None) -> None:
        """Set the estimates from a probe (replaces, does not average: a probe is a deliberate measurement)."""
        if seconds_per_window < 0 or overhead_s < 0:
            raise ValueError("probe times must be >= 0")
        self.seconds_per_window = float(seconds_per_window)
        self.overhead_s = 0.0 if self.is_edge else float(overhead_s)
        if bytes_per_s is not None:
            if bytes_per_s <= 0:
                raise ValueError("bytes_per_s must be > 0")
            self.bytes_per_s = float(bytes_per_s)
        self.seeded = True

    def _ewma(self, old: float, new: float) -> float:
        return new if not self.seeded else (1.0 - self.alpha) * old + self.alpha * new

    def transfer_s_per_window(self) -> float:
        """Modelled transfer seconds per window (0 unless both bandwidth and bytes per window are known)."""
        if self.bytes_per_s and self.bytes_per_window is not None:
            return self.bytes_per_window / self.bytes_per_s
        return 0.0

    def observe(self, n_windows: int, wall_s: float, compute_s: float | None = None, nbytes: int | None = None) -> None:
        """Fold one successful request into the estimates.

        Args:
            n_windows: windows in the request (>= 1).
            wall_s: wall time seen by the edge, send to answer.
            compute_s: compute time reported by the worker (or measured on the edge). When None, the overhead
                estimate is trusted and the rest of the wall time is attributed to the windows.
            nbytes: bytes sent plus received for the request, or None.
        """
        if n_windows <= 0:
            raise ValueError("n_windows must be >= 1")
        wall_s = max(0.0, float(wall_s))
        if nbytes is not None and nbytes >= 0:
            per = nbytes / n_windows
            self.bytes_per_window = per if self.bytes_per_window is None else (
                (1.0 - self.alpha) * self.bytes_per_window + self.alpha * per)
        transfer = self.transfer_s_per_window()
        if self.is_edge:
            # No network: everything the edge spends is per-window work.
            spw = (compute_s if compute_s is not None else wall_s) / n_windows
            overhead = 0.0
        elif compute_s is None:
            # Why: without a compute report we cannot split the wall time; keep the (probed) overhead and
            # attribute the remainder to the windows.
            spw = max(0.0, wall_s - self.overhead_s) / n_windows
            overhead = self.overhead_s
        else:
            compute_s = min(max(0.0, float(compute_s)), wall_s)
            spw = compute_s / n_windows + transfer
            overhead = max(0.0, wall_s - compute_s - n_windows * transfer)
        self.seconds_per_window = self._ewma(self.seconds_per_window, spw)
        self.overhead_s = self._ewma(self.overhead_s, overhead)
        self.seeded = True
        self.n_observations += 1

    @property
    def marginal_s(self) -> float:
        """Seconds one more window adds to a request (what the scheduler uses)."""
        return self.seconds_per_window

    def predict(self, n_windows: int) -> float:
        """Predicted seconds for a request of ``n_windows`` windows (0 for no request)."""
        if n_windows <= 0:
            return 0.0
        return self.overhead_s + n_windows * self.seconds_per_window

    # ------------------------------------------------------------------ health
    def mark_failed(self, now: float) -> float:
        """Record a failure at clock time ``now``; return the time from which the worker may be retried.

        The backoff doubles with each consecutive failure: initial, 2x, 4x, ... capped at ``backoff_cap_s``.
        """
        self.consecutive_failures += 1
        self.total_failures += 1
        self.last_failure_time = float(now)
        self.next_retry_time = float(now) + self.backoff_s()
        return self.next_retry_time

    def backoff_s(self) -> float:
        """Current backoff length (0 when healthy)."""
        if self.consecutive_failures <= 0:
            return 0.0
        # Why the min on the exponent: avoid float overflow after very many failures.
        exp = min(self.consecutive_failures - 1, 62)
        return min(self.backoff_cap_s, self.backoff_initial_s * (2.0 ** exp))

    def mark_ok(self) -> None:
        """Record a success: the worker is healthy again and its backoff resets."""
        self.consecutive_failures = 0
        self.next_retry_time = 0.0

    def available(self, now: float) -> bool:
        """Whether the worker may be offered work at clock time ``now``."""
        return self.consecutive_failures == 0 or now >= self.next_retry_time

    def state(self, now: float) -> str:
        """`HEALTHY`, `BACKOFF` or `PROBATION` at clock time ``now``."""
        if self.consecutive_failures == 0:
            return HEALTHY
        return PROBATION if now >= self.next_retry_time else BACKOFF

    def copy(self) -> "PerfEstimate":
        """An independent copy (the scheduler works on copies so table updates do not race with it)."""
        return copy.copy(self)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """Plain-dict view for status output and JSON."""
        d: dict[str, Any] = {
            "seconds_per_window": self.seconds_per_window,
            "overhead_s": self.overhead_s,
            "bytes_per_s": self.bytes_per_s,
            "bytes_per_window": self.bytes_per_window,
            "alpha": self.alpha,
            "n_observations": self.n_observations,
            "consecutive_failures": self.consecutive_failures,
            "total_failures": self.total_failures,
            "last_failure_time": self.last_failure_time,
            "next_retry_time": self.next_retry_time if self.consecutive_failures else None,
            "is_edge": self.is_edge,
        }
        if now is not None:
            d["state"] = self.state(now)
            d["available"] = self.available(now)
        return d


@dataclass
class PerfTable:
    """Thread-safe table of `PerfEstimate` by worker id, plus the edge's own estimate.

    The engine's request threads call `observe`, `mark_failed` and `mark_ok`; the scheduler takes
    `estimates()` (copies, taken under the lock) so it never sees a half-updated estimate.

    Attributes:
        alpha: EWMA weight for new estimates.
        default_seconds_per_window: estimate of a worker added without a probe.
        default_overhead_s: overhead of a worker added without a probe.
        backoff_initial_s: first backoff after a failure.
        backoff_cap_s: largest backoff.
        clock: time source used when a method gets ``now=None``.
    """

    alpha: float = 0.3
    default_seconds_per_window: float = 0.1
    default_overhead_s: float = 0.05
    backoff_initial_s: float = 1.0
    backoff_cap_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _workers: dict[str, PerfEstimate] = field(default_factory=dict, init=False, repr=False)
    _edge: PerfEstimate = field(init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._edge = self._new(is_edge=True)

    def _new(self, *, is_edge: bool = False) -> PerfEstimate:
        return PerfEstimate(alpha=self.alpha, seconds_per_window=self.default_seconds_per_window,
                            overhead_s=0.0 if is_edge else self.default_overhead_s, is_edge=is_edge,
                            backoff_initial_s=self.backoff_initial_s, backoff_cap_s=self.backoff_cap_s)

    def _get(self, worker_id: str) -> PerfEstimate:
        if worker_id == EDGE_ID:
            return self._edge
        try:
            return self._workers[worker_id]
        except KeyError:
            raise KeyError(f"unknown worker {worker_id!r}") from None

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    # ------------------------------------------------------------------ membership
    def add(self, worker_id: str, seconds_per_window: float | None = None, overhead_s: float | None = None,
            bytes_per_s: float | None = None) -> None:
        """Add a worker (idempotent), seeding it when probe results are given."""
        if worker_id == EDGE_ID:
            raise ValueError(f"{EDGE_ID!r} is reserved for the edge")
        with self._lock:
            est = self._workers.setdefault(worker_id, self._new())
            if seconds_per_window is not None:
                est.seed(seconds_per_window, overhead_s if overhead_s is not None else est.overhead_s, bytes_per_s)

    def remove(self, worker_id: str) -> None:
        """Forget a worker (no error if unknown)."""
        with self._lock:
            self._workers.pop(worker_id, None)

    def ids(self) -> list[str]:
        """Worker ids (the edge excluded), sorted."""
        with self._lock:
            return sorted(self._workers)

    def __contains__(self, worker_id: object) -> bool:
        with self._lock:
            return worker_id in self._workers

    def __len__(self) -> int:
        with self._lock:
            return len(self._workers)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    # ------------------------------------------------------------------ updates
    def seed(self, worker_id: str, seconds_per_window: float, overhead_s: float = 0.0,
             bytes_per_s: float | None = None) -> None:
        """Seed a worker (or the edge, id `EDGE_ID`) from a probe; unknown workers are added."""
        with self._lock:
            if worker_id != EDGE_ID and worker_id not in self._workers:
                self._workers[worker_id] = self._new()
            self._get(worker_id).seed(seconds_per_window, overhead_s, bytes_per_s)

    def observe(self, worker_id: str, n_windows: int, wall_s: float, compute_s: float | None = None,
                nbytes: int | None = None) -> None:
        """Fold a successful request into a worker's (or the edge's) estimate; a success also marks it ok."""
        with self._lock:
            est = self._get(worker_id)
            est.observe(n_windows, wall_s, compute_s, nbytes)
            est.mark_ok()

    def mark_failed(self, worker_id: str, now: float | None = None) -> float:
        """Record a failure; return the worker's next retry time."""
        with self._lock:
            return self._get(worker_id).mark_failed(self._now(now))

    def mark_ok(self, worker_id: str) -> None:
        """Record that a worker answered (e.g. a health probe)."""
        with self._lock:
            self._get(worker_id).mark_ok()

    # ------------------------------------------------------------------ reads
    def get(self, worker_id: str) -> PerfEstimate:
        """A copy of one estimate (mutating it does not change the table)."""
        with self._lock:
            return self._get(worker_id).copy()

    @property
    def edge(self) -> PerfEstimate:
        """A copy of the edge's estimate."""
        with self._lock:
            return self._edge.copy()

    def available(self, now: float | None = None) -> list[str]:
        """Ids of workers that may be offered work now, sorted."""
        with self._lock:
            t = self._now(now)
            return sorted(w for w, e in self._workers.items() if e.available(t))

    def estimates(self, now: float | None = None, *, only_available: bool = False) -> dict[str, PerfEstimate]:
        """Copies of the workers' estimates (for `pedvit.edge.scheduler.schedule`), by id."""
        with self._lock:
            t = self._now(now)
            return {w: e.copy() for w, e in sorted(self._workers.items())
                    if not only_available or e.available(t)}

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Plain dicts for ``pedvit cluster status``: ``{"time", "edge", "workers": {id: {...}}}``."""
        with self._lock:
            t = self._now(now)
            return {
                "time": t,
                "edge": self._edge.as_dict(t),
                "workers": {w: e.as_dict(t) for w, e in sorted(self._workers.items())},
            }

