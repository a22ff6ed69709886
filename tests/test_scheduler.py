"""Tests of pedvit.edge.estimates and pedvit.edge.scheduler."""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pedvit.edge.estimates import BACKOFF, EDGE_ID, HEALTHY, PROBATION, PerfEstimate, PerfTable
from pedvit.edge.scheduler import (InfeasibleScheduleError, Schedule, equal_split, lower_bound, pick_hedge,
                                   schedule)
from pedvit.partition.constraints import placement_cost

ALL = list(range(25))


def king(i: int) -> list[int]:
    """8-neighbourhood on the 5 x 5 window grid."""
    r, c = divmod(i, 5)
    return [(r + dr) * 5 + c + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)
            if (dr or dc) and 0 <= r + dr < 5 and 0 <= c + dc < 5]


def est(spw: float, overhead: float = 0.0) -> PerfEstimate:
    return PerfEstimate(seconds_per_window=spw, overhead_s=overhead, seeded=True)


def edge_est(spw: float = 1.0) -> PerfEstimate:
    return PerfEstimate(seconds_per_window=spw, is_edge=True, seeded=True)


def workers(speeds: list[float], overhead: float = 0.0) -> dict[str, PerfEstimate]:
    return {f"w{i:02d}": est(s, overhead) for i, s in enumerate(speeds)}


def check(s: Schedule, ids: list[int], cap: int | None, *, keep_local=(), adjacency="off",
          groups=(), strict_groups=False) -> None:
    """All hard constraints of a schedule."""
    placed = [i for v in s.assignments.values() for i in v] + list(s.local)
    assert sorted(placed) == sorted(ids), "every window exactly once"
    assert set(keep_local) & set(ids) <= set(s.local)
    for w, v in s.assignments.items():
        assert w != EDGE_ID
        if cap is not None:
            assert len(v) <= cap
        if len(ids) >= 2:
            assert len(v) < len(ids), "never the whole image"
        if adjacency == "require":
            assert not any(j in v for i in v for j in king(i))
        if strict_groups:
            for g in groups:
                assert len(set(g) & set(v)) <= 1
    assert s.makespan == pytest.approx(max(s.finish.values(), default=0.0))


# ------------------------------------------------------------------------------------ estimates
def test_ewma_converges_from_bad_seed() -> None:
    e = PerfEstimate(alpha=0.3)
    e.seed(1.0, 0.5)
    for _ in range(60):
        e.observe(4, wall_s=0.05 + 4 * 0.1, compute_s=0.4)
    assert e.seconds_per_window == pytest.approx(0.1, rel=1e-4)
    assert e.overhead_s == pytest.approx(0.05, rel=1e-4)
    assert e.predict(3) == pytest.approx(0.35, rel=1e-4)
    assert e.predict(0) == 0.0


def test_first_observation_replaces_unseeded_default() -> None:
    e = PerfEstimate(alpha=0.1, seconds_per_window=9.0, overhead_s=9.0)
    e.observe(2, wall_s=0.3, compute_s=0.2)
    assert (e.seconds_per_window, e.overhead_s) == pytest.approx((0.1, 0.1))


def test_observe_without_compute_and_with_bandwidth() -> None:
    e = PerfEstimate(alpha=1.0)
    e.seed(0.1, 0.05)
    e.observe(2, wall_s=0.45)  # overhead trusted, rest per window
    assert e.seconds_per_window == pytest.approx(0.2)
    b = PerfEstimate(alpha=1.0)
    b.seed(0.1, 0.0, bytes_per_s=1000.0)
    b.observe(2, wall_s=0.2 + 0.2 + 0.05, compute_s=0.2, nbytes=200)  # 0.1 s transfer per window
    assert b.transfer_s_per_window() == pytest.approx(0.1)
    assert b.seconds_per_window == pytest.approx(0.2)
    assert b.overhead_s == pytest.approx(0.05)


def test_edge_has_no_overhead() -> None:
    e = PerfEstimate(is_edge=True, overhead_s=3.0)
    e.seed(0.2, 1.0)
    e.observe(2, wall_s=1.0, compute_s=0.6)
    assert e.overhead_s == 0.0
    assert e.predict(2) == pytest.approx(2 * e.seconds_per_window)


def test_backoff_doubles_and_caps() -> None:
    e = PerfEstimate(backoff_initial_s=1.0, backoff_cap_s=8.0)
    assert e.available(0.0) and e.state(0.0) == HEALTHY
    gaps = []
    t = 100.0
    for _ in range(6):
        nxt = e.mark_failed(t)
        gaps.append(nxt - t)
        assert not e.available(t) and e.state(t) == BACKOFF
        assert e.available(nxt) and e.state(nxt) == PROBATION
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert e.last_failure_time == t and e.total_failures == 6
    e.mark_ok()
    assert e.available(t) and e.consecutive_failures == 0
    assert e.mark_failed(t) - t == 1.0


def test_perf_table_threadsafe_snapshot() -> None:
    tab = PerfTable(clock=lambda: 5.0)
    for i in range(8):
        tab.add(f"w{i}", 0.1, 0.01)
    tab.seed(EDGE_ID, 0.5)

    def hammer(w: str) -> None:
        for _ in range(300):
            tab.observe(w, 2, 0.21, 0.2)
            tab.estimates()

    threads = [threading.Thread(target=hammer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tab.mark_failed("w3", now=5.0)
    snap = tab.snapshot()
    assert set(snap) == {"time", "edge", "workers"}
    assert snap["workers"]["w0"]["n_observations"] == 300
    assert snap["workers"]["w3"]["state"] == BACKOFF and not snap["workers"]["w3"]["available"]
    assert snap["edge"]["is_edge"] and snap["edge"]["overhead_s"] == 0.0
    assert "w3" not in tab.available() and len(tab.available()) == 7
    assert set(tab.estimates(only_available=True)) == set(tab.available())
    copy = tab.get("w0")
    copy.seconds_per_window = 99.0
    assert tab.get("w0").seconds_per_window != 99.0
    with pytest.raises(ValueError):
        tab.add(EDGE_ID)


# ------------------------------------------------------------------------------------ schedule
def test_identical_workers_balanced_and_optimal() -> None:
    ws = workers([0.1] * 4, overhead=0.02)
    s = schedule(ALL, ws, None, max_per_worker=10, adjacency="off", now=0.0)
    counts = [len(v) for v in s.assignments.values()]
    assert max(counts) - min(counts) <= 1 and sum(counts) == 25
    assert s.makespan == pytest.approx(lower_bound(25, ws, 10, None, now=0.0))
    check(s, ALL, 10)


def test_slow_worker_gets_zero_or_one() -> None:
    ws = workers([1.0] * 4 + [5.0])
    s = schedule(ALL, ws, None, max_per_worker=25, adjacency="off", now=0.0)
    assert len(s.assignments.get("w04", ())) <= 1
    assert s.makespan == pytest.approx(6.0)  # 4 * 6 + 1 = 25 windows by t = 6
    assert s.makespan == pytest.approx(lower_bound(25, ws, 25, None, now=0.0))


def test_max_share_keep_local_and_whole_image() -> None:
    ws = workers([0.01, 1.0, 1.0])
    s = schedule(ALL, ws, edge_est(10.0), max_per_worker=5, keep_local=[0, 24], adjacency="off", now=0.0)
    check(s, ALL, 5, keep_local=[0, 24])
    assert {0, 24} <= set(s.local)
    # One very fast worker, no cap: it must still not get the whole image.
    one = workers([0.001, 10.0])
    s2 = schedule(ALL, one, None, adjacency="off", now=0.0)
    assert len(s2.assignments["w00"]) == 24
    check(s2, ALL, None)
    with pytest.raises(InfeasibleScheduleError):
        schedule(ALL, workers([0.1]), None, adjacency="off", now=0.0)  # 1 worker, no edge


def test_adjacency_require_and_prefer() -> None:
    for n in (2, 3, 4, 6, 9, 16):
        ws = workers([0.1 * (1 + i % 3) for i in range(n)], overhead=0.01)
        s = schedule(ALL, ws, edge_est(0.5), neighbours=king, adjacency="require", now=0.0)
        check(s, ALL, None, adjacency="require")
        assert s.adjacent_pairs == 0
        assert s.makespan >= lower_bound(25, ws, None, edge_est(0.5), now=0.0) - 1e-12
    # Enough workers: require costs nothing.
    ws = workers([0.1] * 9)
    s = schedule(ALL, ws, edge_est(5.0), neighbours=king, adjacency="require", now=0.0)
    assert s.makespan == pytest.approx(lower_bound(25, ws, None, edge_est(5.0), now=0.0))
    p = schedule(ALL, ws, edge_est(5.0), neighbours=king, adjacency="prefer", now=0.0)
    off = schedule(ALL, ws, edge_est(5.0), neighbours=king, adjacency="off", now=0.0)
    assert p.adjacent_pairs <= off.adjacent_pairs and p.makespan == pytest.approx(off.makespan)
    with pytest.raises(InfeasibleScheduleError):
        schedule(ALL, workers([0.1, 0.1]), None, neighbours=king, adjacency="require", allow_local=False, now=0.0)
    with pytest.raises(ValueError):
        schedule(ALL, ws, None, adjacency="require", now=0.0)  # no neighbours function


def test_spread_groups_respected_when_feasible() -> None:
    rows = [list(range(r * 5, r * 5 + 5)) for r in range(5)]
    ws = workers([0.1] * 5)
    s = schedule(ALL, ws, None, max_per_worker=5, spread_groups=rows, adjacency="off", now=0.0)
    check(s, ALL, 5, groups=rows, strict_groups=True)
    assert s.spread_violations == 0
    s2 = schedule(ALL, ws, None, max_per_worker=5, spread_groups=rows, neighbours=king, adjacency="require",
                  now=0.0)
    check(s2, ALL, 5, adjacency="require")


def test_unavailable_workers_skipped() -> None:
    ws = workers([0.1] * 4)
    ws["w00"].mark_failed(10.0)
    s = schedule(ALL, ws, None, adjacency="off", now=10.5)
    assert "w00" not in s.assignments
    s2 = schedule(ALL, ws, None, adjacency="off", now=11.0)  # retry time reached
    assert "w00" in s2.assignments


def test_runtime_25_windows_64_workers() -> None:
    ws = workers([0.05 * 4 ** (i / 63) for i in range(64)], overhead=0.02)
    for adjacency, cap in (("prefer", 1), ("require", 3), ("prefer", None)):
        schedule(ALL, ws, edge_est(), max_per_worker=cap, neighbours=king, adjacency=adjacency, now=0.0)
        t = time.perf_counter()
        for _ in range(10):
            schedule(ALL, ws, edge_est(), max_per_worker=cap, neighbours=king, adjacency=adjacency, now=0.0,
                     spread_groups=[range(0, 5), range(20, 25)])
        assert (time.perf_counter() - t) / 10 < 0.02


def test_equal_split_ignores_speed() -> None:
    ws = workers([0.1, 0.1, 1.0, 1.0])
    s = equal_split(list(range(20)), ws, None, adjacency="off", now=0.0)
    assert sorted(len(v) for v in s.assignments.values()) == [5, 5, 5, 5]
    assert s.makespan == pytest.approx(5.0)
    assert schedule(list(range(20)), ws, None, adjacency="off", now=0.0).makespan < s.makespan


# ------------------------------------------------------------------------------------ lower bound
def test_lower_bound_simple_cases() -> None:
    assert lower_bound(10, [est(1.0)] * 2, None, None, now=0.0) == pytest.approx(5.0)
    assert lower_bound(10, [est(1.0, 0.5)] * 2, 3, None, now=0.0) == math.inf
    assert lower_bound(10, [est(1.0, 0.5)] * 2, 3, edge_est(1.0), now=0.0) == pytest.approx(4.0)
    assert lower_bound(0, [est(1.0)], None, edge_est(2.0), n_local=2, now=0.0) == pytest.approx(4.0)
    # never-whole-image: one worker can take at most n - 1 windows
    assert lower_bound(5, [est(0.1)], None, edge_est(1.0), now=0.0) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ hedging
def test_hedge_targets_are_legal() -> None:
    ws = workers([0.1] * 6, overhead=0.01)
    s = schedule(ALL, ws, edge_est(), max_per_worker=5, neighbours=king, adjacency="require", now=0.0)
    owner = s.owner()
    straggler = "w03"
    ids = s.assignments[straggler]
    h = pick_hedge(ids, s, ws, edge_est(), max_per_worker=5, neighbours=king, adjacency="require",
                   exclude=[straggler], now=0.1)
    assert h and sorted(i for v in h.values() for i in v) == sorted(ids)
    for tgt, v in h.items():
        assert tgt != straggler
        if tgt == EDGE_ID:
            continue
        union = set(s.assignments.get(tgt, ())) | set(v)
        assert len(union) <= 5
        assert not any(j in union for i in union for j in king(i))
        assert all(owner[i] != tgt for i in v)
    # No edge and every other worker full: nothing legal.
    ws5 = workers([0.1] * 5)
    full = schedule(ALL, ws5, None, max_per_worker=5, adjacency="off", now=0.0)
    assert all(len(v) == 5 for v in full.assignments.values())
    assert pick_hedge(full.assignments["w00"], full, ws5, None, max_per_worker=5, adjacency="off",
                      exclude=["w00"], now=0.0) == {}
    # The edge is always a legal target when allowed.
    h3 = pick_hedge(ids, s, {}, edge_est(), neighbours=king, adjacency="require", now=0.1)
    assert h3 == {EDGE_ID: tuple(ids)}
    assert pick_hedge(ids, s, {}, edge_est(), neighbours=king, adjacency="require", allow_local=False,
                      now=0.1) == {}


def test_hedge_never_whole_image() -> None:
    ws = workers([0.1, 0.1])
    s = schedule([0, 1, 2], ws, None, adjacency="off", now=0.0)
    for w, v in s.assignments.items():
        other = next(x for x in ws if x != w)
        h = pick_hedge(v, s, ws, None, adjacency="off", exclude=[w], now=0.0)
        for tgt, hv in h.items():
            assert len(set(s.assignments.get(tgt, ())) | set(hv)) < 3
        assert other in h or h == {}


def test_placement_cost_adjacency_semantics() -> None:
    """The rule failover and hedging share: "require" hard, "prefer" a cost, "off" ignored; caps always hard."""
    held = {1, 12}
    kw = dict(cap=3, neighbours=king(0), spread_groups=(), n_workers=4)
    assert placement_cost(0, held, adjacency="require", **kw) is None
    assert placement_cost(0, held, adjacency="prefer", **kw) == 1
    assert placement_cost(0, held, adjacency="off", **kw) == 0
    assert placement_cost(4, held, adjacency="require", **{**kw, "neighbours": king(4)}) == 0
    assert placement_cost(0, held, adjacency="off", **{**kw, "cap": 2}) is None
    assert placement_cost(1, held, adjacency="off", **kw) is None  # holds it already


def test_hedge_spread_limit_is_the_partition_rule() -> None:
    """A spread group of 4 over 2 workers allows 2 of its windows per worker (as in failover and the
    assignment checker), not 1."""
    group = [0, 2, 4, 10]  # pairwise not adjacent
    ws = workers([0.1, 0.1])
    s = Schedule(assignments={"w00": (0,), "w01": (2,)}, local=(), makespan=0.1, finish={"w00": 0.1, "w01": 0.1},
                 n_content=25, cap=5)
    kw = dict(max_per_worker=5, neighbours=king, adjacency="require", spread_groups=[group], exclude=["w01"], now=0.0)
    assert pick_hedge([2], s, ws, None, **kw) == {"w00": (2,)}
    assert pick_hedge([2], s, ws, None, n_workers=4, **kw) == {}  # 4 workers: one window of the group each
    full = Schedule(assignments={"w00": (0, 4), "w01": (2,)}, local=(), makespan=0.2,
                    finish={"w00": 0.2, "w01": 0.1}, n_content=25, cap=5)
    assert pick_hedge([2], full, ws, None, **kw) == {}
    assert pick_hedge([2], full, ws, edge_est(), **kw) == {EDGE_ID: (2,)}


# ------------------------------------------------------------------------------------ property
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speeds=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=64),
    overheads=st.floats(0.0, 0.2),
    cap=st.one_of(st.none(), st.integers(1, 25)),
    n=st.sampled_from([20, 25, 7, 2, 1]),
    adjacency=st.sampled_from(["off", "prefer", "require"]),
    use_edge=st.booleans(),
    keep=st.sets(st.integers(0, 24), max_size=3),
)
def test_property_constraints_and_bound(speeds, overheads, cap, n, adjacency, use_edge, keep) -> None:
    ids = list(range(n))
    ws = workers(speeds, overheads)
    edge = edge_est(0.7) if use_edge else None
    keep_local = sorted(set(keep) & set(ids)) if use_edge else []
    groups = [list(range(r * 5, r * 5 + 5)) for r in range(5)]
    try:
        s = schedule(ids, ws, edge, max_per_worker=cap, neighbours=king, adjacency=adjacency,
                     keep_local=keep_local, spread_groups=groups, now=0.0)
    except InfeasibleScheduleError:
        assert edge is None  # with the edge allowed a schedule always exists
        return
    check(s, ids, cap, keep_local=keep_local, adjacency=adjacency)
    m = n - len(keep_local)
    lb = lower_bound(m, ws, cap, edge, n_local=len(keep_local), n_content=n, now=0.0)
    assert s.makespan >= lb - 1e-9
    if adjacency != "require":
        assert s.makespan == pytest.approx(lb)  # counts are exactly optimal
    eq = equal_split(ids, ws, edge, max_per_worker=cap, adjacency="off", keep_local=keep_local, now=0.0) \
        if edge is not None else None
    if eq is not None:
        check(eq, ids, cap, keep_local=keep_local)
        assert eq.makespan >= lb - 1e-9
