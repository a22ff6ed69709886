"""The projected multi-machine latency (pedvit.eval.projection): hand-computed cases of the model, the medians
of measured parts, and the serialising executor that measures each worker's calls alone."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest

from pedvit.eval.projection import (LINKS, LOOPBACK, CallLog, Link, RequestParts, SerialisedExecutor, TimedEdge,
                                    WorkerCall, call_seconds, median_parts, parts_of_request, project, projection_rows,
                                    relative_error)

TEN_MBIT_20MS = Link("10 Mbit/s, 20 ms", 10e6, 0.020)


def test_call_seconds_adds_transfer_rtt_overhead_and_compute() -> None:
    call = WorkerCall(compute_s=0.5, overhead_s=0.01, bytes_sent=1_000_000, bytes_received=250_000)
    # 8 * 1.25 MB / 10 Mbit/s = 1.0 s of transfer, + 20 ms RTT + 10 ms overhead + 0.5 s compute.
    assert call_seconds(call, TEN_MBIT_20MS) == pytest.approx(1.53)
    assert call_seconds(call, LOOPBACK) == pytest.approx(0.51)  # loopback: no transfer term, no RTT


def test_project_takes_the_slowest_worker_per_round_and_rounds_in_sequence() -> None:
    fast = WorkerCall(0.2, 0.0, 0, 0)
    slow = WorkerCall(0.3, 0.0, 0, 0)
    parts = RequestParts(
        preprocess_s=0.1,
        rounds=({"a": (fast,), "b": (slow, fast)},  # b makes two calls: 0.5 s, the slowest of round 1
                {"a": (slow,), "b": (fast,)}),      # round 2: 0.3 s
        edge_s=0.05, decode_s=0.02)
    assert project(parts, LOOPBACK) == pytest.approx(0.1 + 0.5 + 0.3 + 0.05 + 0.02)
    # Every call pays the RTT: b's two calls in round 1 cost 2 RTTs.
    assert project(parts, TEN_MBIT_20MS) == pytest.approx(0.97 + 2 * 0.020 + 0.020)


def test_edge_local_windows_bound_each_round_from_below() -> None:
    call = WorkerCall(0.2, 0.0, 0, 0)
    parts = RequestParts(0.0, ({"a": (call,)}, {"a": (call,)}), 0.0, 0.0, edge_local_s=(0.6, 0.1))
    # Round 1: the edge's own windows (0.6 s) outlast the worker; round 2: the worker (0.2 s) does.
    assert project(parts, LOOPBACK) == pytest.approx(0.8)


def test_more_workers_with_fewer_windows_each_project_lower_and_slow_links_higher() -> None:
    """Eight windows of 0.1 s and 100 kB each way: 1 worker vs 4 workers over two links."""
    def parts(n: int) -> RequestParts:
        per = 8 // n
        call = WorkerCall(0.1 * per, 0.002, 100_000 * per, 100_000 * per)
        return RequestParts(0.05, ({f"w{i}": (call,) for i in range(n)},), 0.1, 0.03)

    lan, wan = LINKS
    assert project(parts(4), lan) < project(parts(1), lan)
    assert project(parts(4), wan) > project(parts(4), lan)
    # 1 worker on the 1 Gbit/s link: 0.05 + (1.6 MB * 8 / 1e9 + 5 ms + 2 ms + 0.8 s) + 0.1 + 0.03
    assert project(parts(1), lan) == pytest.approx(0.05 + 0.0128 + 0.005 + 0.002 + 0.8 + 0.13)
    rows = projection_rows({("mobile_sam", "tinyvit-isolated", 4): parts(4)}, {"mobile_sam": 2.0})
    assert [r["link"] for r in rows] == [link.name for link in LINKS]
    assert rows[0]["projected_latency_ratio"] == pytest.approx(project(parts(4), lan) / 2.0)


def test_relative_error() -> None:
    assert relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert relative_error(0.9, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="measured latency"):
        relative_error(1.0, 0.0)


def test_median_parts_and_json_round_trip() -> None:
    samples = [RequestParts(p, ({"a": (WorkerCall(c, 0.01, 100, 200),)},), 0.1, d, (d,))
               for p, c, d in ((0.1, 1.0, 0.3), (0.2, 3.0, 0.1), (0.9, 2.0, 0.2))]
    median = median_parts(samples)
    assert median.preprocess_s == pytest.approx(0.2) and median.decode_s == pytest.approx(0.2)
    assert median.rounds[0]["a"][0].compute_s == pytest.approx(2.0) and median.edge_local_s == (0.2,)
    again = RequestParts.from_dict(json.loads(json.dumps(median.to_dict())))
    assert again == median
    with pytest.raises(ValueError):
        median_parts([])
    assert math.isinf(LOOPBACK.bandwidth_bit_s)


class _Stats:
    def __init__(self, compute_s: float, sent: int, received: int) -> None:
        self.compute_seconds, self.bytes_sent, self.bytes_received, self.wall_seconds = compute_s, sent, received, compute_s


class _FakeHandle:
    def __init__(self, out: np.ndarray, stats: _Stats) -> None:
        self._out, self.stats = out, stats

    def result(self, timeout: float | None = None) -> np.ndarray:
        return self._out


class _CountingWorker:
    """A fake executor that records how many calls overlap (a real one would be a gRPC worker)."""

    def __init__(self) -> None:
        self.active = self.most_active = 0
        self.lock = threading.Lock()
        self.closed = False

    def run_future(self, stage: str, batch: np.ndarray, meta: np.ndarray, **options: object) -> _FakeHandle:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(0.01)  # gives other threads the chance to overlap if nothing stops them
        with self.lock:
            self.active -= 1
        return _FakeHandle(batch[:, :1], _Stats(0.25, batch.nbytes, 10))

    def close(self) -> None:
        self.closed = True


class _EdgeStub:
    name = "edge"

    def run(self, stage: str, batch: np.ndarray, meta: np.ndarray, **options: object) -> np.ndarray:
        return batch


def test_serialised_executors_run_one_call_at_a_time_and_the_log_keeps_rounds_per_stage() -> None:
    inner, lock, log = _CountingWorker(), threading.Lock(), CallLog()
    executors = [SerialisedExecutor(inner, f"p{i}", lock, log) for i in range(3)]
    batch, meta = np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4), np.int32)
    for stage in ("s1", "s2"):
        threads = [threading.Thread(target=e.run, args=(stage, batch, meta)) for e in executors]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert inner.most_active == 1
    edge = TimedEdge(_EdgeStub(), log)
    edge.run("s2", batch, meta)  # the edge's own windows in round "s2"
    rounds, local = log.rounds()
    assert len(rounds) == 2 and all(set(r) == {"p0", "p1", "p2"} for r in rounds)
    assert local[0] == 0.0 and local[1] > 0.0 and edge.name == "edge"
    call = rounds[0]["p1"][0]
    assert call.compute_s == 0.25 and call.bytes_sent == batch.nbytes and call.bytes_received == 10
    parts = parts_of_request(log, 0.01, 0.1, 0.05)
    assert parts.rounds == rounds and log.rounds() == ((), ())  # the log is cleared for the next request
    executors[0].close()  # everything else goes to the wrapped executor
    assert inner.closed
