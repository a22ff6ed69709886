"""Projected latency of split inference with N workers on N separate machines, from parts measured here.

On a machine with fewer cores than workers, N workers cannot run in parallel, so the wall clock cannot show
what N machines would give. This module measures the parts one at a time and adds them up along the
critical path instead.

**Model** (pure functions, `project`). One request is

    edge preprocess
    + for each dispatch round r of the plan (one per stage; tinyvit-isolated has one, vit-exact four):
          max over the workers w of round r of  sum over w's calls c in r of
              bytes_sent(c) / bandwidth + RTT + overhead(c) + compute(c) + bytes_received(c) / bandwidth
    + edge work outside the rounds (stitching, global blocks, fusion, neck)
    + mask decode

where `compute(c)` is the worker's own stage time for the call's windows (reported by the worker) and
`overhead(c)` is the call's loopback wall time minus that compute: protobuf + tensor codec + gRPC, which a
real link does not remove (it also holds the loopback copy of the bytes, a slight over-count). Windows the
edge computes itself during a round (vit-exact's padding windows, failover, leftovers) run beside the
workers: a round lasts at least the edge's local compute in it. Bandwidth is per direction and per worker
(each worker has its own link).

**Measuring** (`calibrate`). The edge is pinned to one core and ONE worker process to another; the plan runs
with N logical workers that all call that process through `SerialisedExecutor`, which lets one call run at
a time. So each call's compute is the worker's stage time alone on one core, and the edge's parts are timed
with the edge alone on its core (`TimedEdge` times its local windows per round). Bytes per call come from
the gRPC client.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Link:
    """A network link between the edge and each worker: bandwidth per direction (bit/s) and round-trip time."""

    name: str
    bandwidth_bit_s: float
    rtt_s: float


#: The links projected for every configuration (issue 27: a fast LAN and a slow WAN).
LINKS: tuple[Link, ...] = (Link("1 Gbit/s, 5 ms", 1e9, 0.005), Link("50 Mbit/s, 30 ms", 50e6, 0.030))
#: Loopback on this machine: no transfer term, no RTT (its cost is inside each call's measured overhead).
LOOPBACK = Link("loopback", math.inf, 0.0)


@dataclass(frozen=True)
class WorkerCall:
    """One gRPC call of one worker (seconds, bytes; `bytes_sent` is edge -> worker)."""

    compute_s: float
    overhead_s: float
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class RequestParts:
    """The measured parts of one request (medians over repeats, see `median_parts`).

    rounds: per dispatch round, worker name -> that worker's calls in the round, in order;
    edge_local_s: per round, seconds the edge spent on its own windows during it (same length as rounds;
        empty means none).
    """

    preprocess_s: float
    rounds: tuple[dict[str, tuple[WorkerCall, ...]], ...]
    edge_s: float
    decode_s: float
    edge_local_s: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the netem benchmark reads a child run's parts back with `from_dict`)."""
        return asdict(self) | {"rounds": [{w: [asdict(c) for c in calls] for w, calls in rnd.items()}
                                          for rnd in self.rounds]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RequestParts":
        rounds = tuple({w: tuple(WorkerCall(**c) for c in calls) for w, calls in rnd.items()} for rnd in data["rounds"])
        return cls(data["preprocess_s"], rounds, data["edge_s"], data["decode_s"], tuple(data.get("edge_local_s", ())))


# ------------------------------------------------------------------------------------------ the model
def call_seconds(call: WorkerCall, link: Link) -> float:
    """One call over `link`: request transfer + RTT + codec/gRPC overhead + compute + answer transfer."""
    transfer = 8.0 * (call.bytes_sent + call.bytes_received) / link.bandwidth_bit_s
    return transfer + link.rtt_s + call.overhead_s + call.compute_s


def rounds_seconds(parts: RequestParts, link: Link) -> float:
    """The dispatch rounds' share of the critical path: rounds in sequence, each as long as its slowest
    worker or the edge's own windows in it (computed beside the workers), whichever is longer."""
    local = parts.edge_local_s or (0.0,) * len(parts.rounds)
    return sum(max(max((sum(call_seconds(c, link) for c in calls) for calls in rnd.values()), default=0.0), edge)
               for rnd, edge in zip(parts.rounds, local))


def project(parts: RequestParts, link: Link) -> float:
    """Projected end-to-end seconds of one request with each worker on its own machine behind `link`."""
    return parts.preprocess_s + rounds_seconds(parts, link) + parts.edge_s + parts.decode_s


def relative_error(projected: float, measured: float) -> float:
    """|projected - measured| / measured."""
    if measured <= 0:
        raise ValueError(f"measured latency must be > 0, got {measured}")
    return abs(projected - measured) / measured


def projection_rows(parts: dict[tuple[str, str, int], RequestParts], monolithic_s: dict[str, float],
                    links: Sequence[Link] = LINKS) -> list[dict[str, Any]]:
    """One row per (model, plan, N) x link: projected seconds and `projected_latency_ratio` (projected /
    measured monolithic end-to-end of the same model and run)."""
    rows = []
    for (model, plan, n), request in parts.items():
        for link in links:
            projected = project(request, link)
            rows.append({"model": model, "plan": plan, "workers": n, "link": link.name,
                         "bandwidth_bit_s": link.bandwidth_bit_s, "rtt_s": link.rtt_s, "projected_s": projected,
                         "projected_latency_ratio": projected / monolithic_s[model]})
    return rows


def median_parts(samples: Sequence[RequestParts]) -> RequestParts:
    """Median of each scalar part, and per round / worker / call position the median call (fields taken
    separately). All samples must have the same structure (same plan, same assignment: static scheduling)."""
    if not samples:
        raise ValueError("no samples")
    first = samples[0]

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    rounds = []
    for r, rnd in enumerate(first.rounds):
        merged = {}
        for worker, calls in rnd.items():
            merged[worker] = tuple(
                WorkerCall(med([s.rounds[r][worker][i].compute_s for s in samples]),
                           med([s.rounds[r][worker][i].overhead_s for s in samples]),
                           int(med([s.rounds[r][worker][i].bytes_sent for s in samples])),
                           int(med([s.rounds[r][worker][i].bytes_received for s in samples])))
                for i in range(len(calls)))
        rounds.append(merged)
    local = tuple(med([s.edge_local_s[r] if s.edge_local_s else 0.0 for s in samples]) for r in range(len(rounds)))
    return RequestParts(med([s.preprocess_s for s in samples]), tuple(rounds), med([s.edge_s for s in samples]),
                        med([s.decode_s for s in samples]), local)


# ------------------------------------------------------------------------------------------ measuring
class CallLog:
    """What one request's calls cost, per dispatch round: each worker call (`SerialisedExecutor`) and the
    edge's own windows (`TimedEdge`). A round is one stage; rounds are kept in the order their stage first
    appears. Written from the engine's pool threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: list[str] = []
        self.calls: list[tuple[str, str, WorkerCall]] = []
        self.local: list[tuple[str, float]] = []

    def _seen(self, stage: str) -> None:
        if stage not in self.stages:
            self.stages.append(stage)

    def add_call(self, stage: str, worker: str, call: WorkerCall) -> None:
        with self._lock:
            self._seen(stage)
            self.calls.append((stage, worker, call))

    def add_local(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._seen(stage)
            self.local.append((stage, seconds))

    def rounds(self) -> tuple[tuple[dict[str, tuple[WorkerCall, ...]], ...], tuple[float, ...]]:
        """(per round: worker -> its calls, per round: the edge's local seconds)."""
        with self._lock:
            by_stage: dict[str, dict[str, list[WorkerCall]]] = {stage: {} for stage in self.stages}
            for stage, worker, call in self.calls:
                by_stage[stage].setdefault(worker, []).append(call)
            local = {stage: sum(t for st, t in self.local if st == stage) for stage in self.stages}
            return (tuple({w: tuple(c) for w, c in by_stage[stage].items()} for stage in self.stages),
                    tuple(local[stage] for stage in self.stages))

    def clear(self) -> None:
        with self._lock:
            self.stages.clear()
            self.calls.clear()
            self.local.clear()


class SerialisedExecutor:
    """Wraps a `RemoteExecutor` so that the calls of every wrapper sharing `lock` run one at a time, each
    timed while it holds the lock (its own wall, without the wait). `run_future` runs the call to the end in
    the calling thread (the engine calls it from its pool) and returns the finished handle."""

    def __init__(self, inner: Any, name: str, lock: threading.Lock, log: CallLog) -> None:
        self.inner, self.name, self.lock, self.log = inner, name, lock, log

    def run_future(self, stage: str, batch: np.ndarray, meta: np.ndarray, **options: Any) -> Any:
        with self.lock:
            started = time.perf_counter()
            handle = self.inner.run_future(stage, batch, meta, **options)
            handle.result()
            wall = time.perf_counter() - started
            stats = handle.stats
            self.log.add_call(stage, self.name, WorkerCall(
                float(stats.compute_seconds), max(0.0, wall - float(stats.compute_seconds)),
                int(stats.bytes_sent), int(stats.bytes_received)))
        return handle

    def run(self, stage: str, batch: np.ndarray, meta: np.ndarray, **options: Any) -> np.ndarray:
        return self.run_future(stage, batch, meta, **options).result()

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)  # stats, health, info, close: the wrapped executor's


class TimedEdge:
    """Wraps the engine's own executor (the windows the edge computes itself) to log their seconds per round;
    not serialised: the edge computes beside the workers, as it would with workers on other machines."""

    def __init__(self, inner: Any, log: CallLog) -> None:
        self.inner, self.log = inner, log

    def run(self, stage: str, batch: np.ndarray, meta: np.ndarray, **options: Any) -> np.ndarray:
        started = time.perf_counter()
        out = self.inner.run(stage, batch, meta, **options)
        self.log.add_local(stage, time.perf_counter() - started)
        return out

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)


def calibration_executors(address: str, n: int) -> tuple[list[SerialisedExecutor], CallLog]:
    """n logical workers ("p0".."p<n-1>") on the one worker process at `address`, serialised, one log."""
    from pedvit.transport.client import RemoteExecutor

    lock, log = threading.Lock(), CallLog()
    return [SerialisedExecutor(RemoteExecutor(address, name=f"p{i}"), f"p{i}", lock, log) for i in range(n)], log


def time_edge_windows(predictor: Any, log: CallLog) -> None:
    """Make `predictor`'s engine log the seconds of the windows it computes itself (`TimedEdge`); the engine
    hands its edge executor to each request's round runner."""
    predictor.engine.edge = TimedEdge(predictor.engine.edge, log)


def parts_of_request(log: CallLog, preprocess_s: float, merge_s: float, decode_s: float) -> RequestParts:
    """The parts of the request whose calls `log` holds; clears the log for the next request."""
    rounds, local = log.rounds()
    log.clear()
    return RequestParts(preprocess_s, rounds, merge_s, decode_s, local)
