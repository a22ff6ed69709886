"""Makespan-optimal window scheduling over heterogeneous, untrusted workers under privacy constraints.

Cost model (from `pedvit.edge.estimates.PerfEstimate`): a worker ``w`` given ``n >= 1`` windows finishes after
``f_w(n) = o_w + n * s_w`` seconds (``o_w`` per-request overhead, ``s_w`` seconds per window); a worker given
no window costs nothing. The edge has no network: with ``L`` keep-local windows it finishes after
``f_e(n) = (L + n) * s_e``. The makespan of a schedule is the largest finish time.

Constraints (the ones of `pedvit.partition.Constraints`):

* ``max_per_worker``: at most that many windows per worker;
* never the whole image: if the image has ``>= 2`` content windows, no worker gets all of them, i.e. the
  effective cap is ``min(max_per_worker, n_content - 1)``;
* ``keep_local``: those windows are always computed on the (trusted) edge;
* ``adjacency``: two windows of one worker must not be neighbours (``"require"``: hard; ``"prefer"``: the
  number of such pairs is minimised; ``"off"``: ignored). The edge is trusted and exempt;
* ``spread_groups``: at most one window of each group per worker where feasible (soft, weighted above
  ``"prefer"`` adjacency and below ``"require"`` adjacency). Re-placing windows later (`pick_hedge`, and the
  engine's failover) makes the partition rule hard instead: at most
  `pedvit.partition.constraints.spread_limit` windows of a group per worker.

Algorithm (`schedule`):

(a) **Counts by greedy water-filling.** Assign windows one at a time to the resource whose finish time *after*
    adding the window is smallest (a heap keyed on ``f_r(n_r + 1)``), respecting the caps.

    *Optimality.* Each ``f_r(k)`` is nondecreasing in ``k``. A schedule with makespan ``T`` puts at most
    ``k_r(T) = #{k <= cap_r : f_r(k) <= T}`` windows on ``r``, so ``m <= sum_r k_r(T)``; hence
    ``T >= T*`` where ``T*`` is the ``m``-th smallest element of the multiset ``V = {f_r(k) : 1 <= k <= cap_r}``
    (floored at the edge's keep-local time ``L * s_e``). That is exactly `lower_bound`. The greedy merges the
    per-resource sorted lists ``f_r(1) <= f_r(2) <= ...`` and takes their ``m`` smallest heads, so its makespan
    *is* ``T*``: the counts are optimal, not just within a bound.

(b) **Placement.** Concrete window ids are put into the count slots by a most-constrained-first greedy, then a
    best-improvement swap local search (swaps keep every count, hence the makespan) minimises the weighted
    number of same-worker adjacent pairs and spread-group collisions, within a small time budget.
    Remaining conflicts are then resolved by *moves* of a conflicting window to a resource with spare
    capacity: hard (``"require"``) conflicts go to the legal resource (the edge when allowed) with the
    smallest resulting finish time, or raise `InfeasibleScheduleError`; soft conflicts move only when that
    does not increase the makespan.

    *Bound.* If no hard repair move is needed (always for ``"off"``/``"prefer"``) the makespan equals
    ``T*`` = `lower_bound`. Each hard repair move adds one window to a resource with spare capacity, so the
    makespan is at most ``max(T*, max over receivers r of f_r(n_r + k_r))`` with ``k_r`` windows moved to
    ``r``; in every case ``makespan >= lower_bound``.

Runtime: O(m log R) for the counts and O(iters * c * m * d) for the swap search (``c`` conflicting windows,
``d`` neighbours per window), with a wall-clock budget; about a millisecond for 25 windows and 64 workers.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping, Sequence

from pedvit.edge.estimates import EDGE_ID, PerfEstimate
from pedvit.partition.constraints import placement_cost, share_cap

Adjacency = Literal["off", "prefer", "require"]
Neighbours = Callable[[int], Iterable[int]]

# Conflict weights of the placement objective (integers so swap deltas are exact).
_W_REQUIRE = 10_000  # one adjacent pair under "require" outweighs any number of spread collisions
_W_SPREAD = 100  # a spread collision outweighs any number of "prefer" adjacent pairs in a 25-window grid
_W_PREFER = 1

_EPS = 1e-12


class InfeasibleScheduleError(ValueError):
    """No schedule satisfies the hard constraints (caps, never-whole-image, ``"require"`` adjacency)."""


@dataclass(frozen=True)
class Schedule:
    """Result of `schedule` / `equal_split`.

    Attributes:
        assignments: worker id -> window ids it computes (only workers with at least one window).
        local: window ids computed on the edge (keep-local ones included), sorted.
        makespan: predicted seconds until the last resource finishes (from the estimates used).
        finish: predicted finish time (seconds from the start) per worker used, and for the edge (`EDGE_ID`).
        n_content: content windows of the image (assignable plus keep-local).
        cap: the effective per-worker cap used (``min(max_per_worker, n_content - 1)``).
        adjacent_pairs: same-worker adjacent window pairs left (0 under ``"require"``).
        spread_violations: surplus spread-group windows on one worker (sum over workers and groups of
            ``count - 1`` where ``count > 1``).
        created_at: the clock time the schedule was made (hedging measures busy times from it).
    """

    assignments: dict[str, tuple[int, ...]]
    local: tuple[int, ...]
    makespan: float
    finish: dict[str, float]
    n_content: int
    cap: int
    adjacent_pairs: int = 0
    spread_violations: int = 0
    created_at: float = 0.0

    def owner(self) -> dict[int, str]:
        """Window id -> worker id, or `EDGE_ID` for local windows."""
        out = {i: EDGE_ID for i in self.local}
        for w, ids in self.assignments.items():
            for i in ids:
                out[i] = w
        return out

    def counts(self) -> dict[str, int]:
        """Windows per worker (workers with none omitted) and on the edge."""
        out = {w: len(ids) for w, ids in self.assignments.items()}
        out[EDGE_ID] = len(self.local)
        return out


# ---------------------------------------------------------------------------------------------- helpers
@dataclass
class _Res:
    """One resource of a scheduling problem (a worker or the edge)."""

    rid: str
    overhead: float
    spw: float
    cap: int
    is_edge: bool = False
    base: int = 0  # keep-local windows already on the edge

    def cost(self, n: int) -> float:
        """Finish time with ``n`` assignable windows."""
        if self.is_edge:
            return (self.base + n) * self.spw
        return 0.0 if n <= 0 else self.overhead + n * self.spw


def _dedupe(ids: Iterable[int]) -> list[int]:
    seen: set[int] = set()
    out: list[int] = []
    for i in ids:
        i = int(i)
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def _effective_cap(max_per_worker: int | None, n_content: int, m: int) -> int:
    """Per-worker cap: the configured share, never the whole image, never more than there is to assign."""
    cap = m if max_per_worker is None else int(max_per_worker)
    if cap < 0:
        raise ValueError("max_per_worker must be >= 0")
    return max(0, min(share_cap(cap, n_content), m))


def _resolve_now(now: float | None) -> float:
    return time.monotonic() if now is None else float(now)


def _check_adjacency(adjacency: str, neighbours: Neighbours | None) -> None:
    if adjacency not in ("off", "prefer", "require"):
        raise ValueError(f"adjacency must be 'off', 'prefer' or 'require', got {adjacency!r}")
    if adjacency != "off" and neighbours is None:
        raise ValueError(f"adjacency={adjacency!r} needs a neighbours function")


def _available(workers: Mapping[str, PerfEstimate], now: float) -> list[tuple[str, PerfEstimate]]:
    if EDGE_ID in workers:
        raise ValueError(f"worker id {EDGE_ID!r} is reserved for the edge")
    return [(w, e) for w, e in sorted(workers.items()) if e.available(now)]


def _build_resources(workers: Sequence[tuple[str, PerfEstimate]], edge: PerfEstimate | None, cap: int,
                     n_local: int, allow_local: bool, m: int) -> list[_Res]:
    res = [_Res(w, max(0.0, e.overhead_s), max(0.0, e.seconds_per_window), cap) for w, e in workers]
    if edge is not None or n_local:
        # Why edge=None still gets a resource: keep-local windows must be somewhere; its time is unknown (0).
        spw = max(0.0, edge.seconds_per_window) if edge is not None else 0.0
        edge_cap = m if (allow_local and edge is not None) else 0
        res.append(_Res(EDGE_ID, 0.0, spw, edge_cap, is_edge=True, base=n_local))
    return res


def _greedy_counts(res: Sequence[_Res], m: int) -> list[int]:
    """Water-filling: window by window onto the resource with the smallest finish after adding it.

    Ties go to the earlier resource (workers sorted by id, edge last), so the result is deterministic.
    """
    counts = [0] * len(res)
    heap = [(r.cost(1), i) for i, r in enumerate(res) if r.cap >= 1]
    heapq.heapify(heap)
    for _ in range(m):
        if not heap:
            raise InfeasibleScheduleError(
                f"{m} windows do not fit: caps allow {sum(r.cap for r in res)} (add workers, raise the share "
                "or allow local compute)")
        _, i = heapq.heappop(heap)
        counts[i] += 1
        if counts[i] < res[i].cap:
            heapq.heappush(heap, (res[i].cost(counts[i] + 1), i))
    return counts


def counts_makespan(res: Sequence[_Res], counts: Sequence[int]) -> float:
    """Makespan of a count vector."""
    return max((r.cost(n) for r, n in zip(res, counts)), default=0.0)


class _Placement:
    """Mutable window -> resource placement with incremental conflict costs."""

    def __init__(self, ids: Sequence[int], res: Sequence[_Res], nbrs: Mapping[int, frozenset[int]],
                 groups_of: Mapping[int, tuple[int, ...]], w_adj: int, w_spread: int) -> None:
        self.ids = list(ids)
        self.res = res
        self.nbrs = nbrs
        self.groups_of = groups_of
        self.w_adj = w_adj
        self.w_spread = w_spread
        self.hold: list[set[int]] = [set() for _ in res]
        self.gcount: list[dict[int, int]] = [{} for _ in res]
        self.owner: dict[int, int] = {}

    def add(self, x: int, r: int) -> None:
        self.hold[r].add(x)
        gc = self.gcount[r]
        for g in self.groups_of.get(x, ()):
            gc[g] = gc.get(g, 0) + 1
        self.owner[x] = r

    def remove(self, x: int) -> int:
        r = self.owner.pop(x)
        self.hold[r].discard(x)
        gc = self.gcount[r]
        for g in self.groups_of.get(x, ()):
            gc[g] -= 1
        return r

    def adj_in(self, x: int, r: int, minus: int | None = None) -> int:
        """Neighbours of ``x`` held by ``r`` (without ``x`` itself and without ``minus``)."""
        if not self.hold[r] or self.res[r].is_edge:
            return 0
        h = self.hold[r]
        n = len(self.nbrs.get(x, frozenset()) & h)
        if minus is not None and minus in h and minus in self.nbrs.get(x, frozenset()):
            n -= 1
        return n

    def spread_in(self, x: int, r: int, minus: int | None = None) -> int:
        """Other windows of ``x``'s spread groups held by ``r`` (without ``x`` and without ``minus``)."""
        if not self.hold[r] or self.res[r].is_edge:
            return 0
        gx = self.groups_of.get(x, ())
        if not gx:
            return 0
        gc = self.gcount[r]
        h = self.hold[r]
        gm = self.groups_of.get(minus, ()) if (minus is not None and minus in h) else ()
        n = 0
        for g in gx:
            c = gc.get(g, 0) - (1 if x in h else 0) - (1 if g in gm else 0)
            n += max(0, c)
        return n

    def conf(self, x: int, r: int, minus: int | None = None) -> int:
        """Weighted conflicts ``x`` has (or would have) on resource ``r``."""
        if not self.hold[r] or self.res[r].is_edge:  # fast path: most workers hold nothing
            return 0
        c = 0
        if self.w_adj:
            c += self.w_adj * self.adj_in(x, r, minus)
        if self.w_spread:
            c += self.w_spread * self.spread_in(x, r, minus)
        return c

    def greedy(self, counts: Sequence[int]) -> None:
        """Most-constrained window first, onto the open slot with the fewest conflicts (most room on ties)."""
        left = list(counts)

        def difficulty(x: int) -> tuple[int, int]:
            d = (len(self.nbrs.get(x, ())) if self.w_adj else 0) + sum(1 for _ in self.groups_of.get(x, ()))
            return (-d, x)

        for x in sorted(self.ids, key=difficulty):
            best = min((r for r in range(len(self.res)) if left[r] > 0),
                       key=lambda r: (self.conf(x, r), -left[r], r))
            self.add(x, best)
            left[best] -= 1

    def constructive(self, dsatur: bool) -> None:
        """Hard-constraint-first greedy for ``"require"``: counts and placement decided together.

        Windows go, one at a time, to the legal resource with the earliest finish after adding them (fewest
        soft conflicts on ties). Order: ascending id (row-major, which packs grid windows into lattice-like
        independent sets) or, with ``dsatur``, the window with the fewest legal workers left first. The edge,
        when allowed, is always legal, so this fails (raises) only when it cannot take windows.
        """
        todo = set(self.ids)
        n_res = len(self.res)
        hold, res = self.hold, self.res
        empty: frozenset[int] = frozenset()

        def legal(x: int) -> list[int]:
            # Inlined adjacency test (hot loop): an empty or edge resource is always conflict-free.
            nb = self.nbrs.get(x, empty)
            return [r for r in range(n_res) if len(hold[r]) < res[r].cap
                    and (res[r].is_edge or not hold[r] or nb.isdisjoint(hold[r]))]

        def key(x: int, r: int) -> tuple[float, int, int]:
            return (res[r].cost(len(hold[r]) + 1), self.conf(x, r) if hold[r] else 0, r)

        while todo:
            if dsatur:
                opts = {x: legal(x) for x in todo}
                x = min(todo, key=lambda i: (sum(1 for r in opts[i] if not res[r].is_edge),
                                             -len(self.nbrs.get(i, ())), i))
            else:
                x = min(todo)
                opts = {x: legal(x)}
            if not opts[x]:
                raise InfeasibleScheduleError(
                    f"window {x} cannot be placed without an adjacent pair (adjacency='require'); "
                    "allow local compute, add workers or raise the share")
            best = min(opts[x], key=lambda r: key(x, r))
            self.add(x, best)
            todo.discard(x)

    def swap_search(self, deadline: float, max_iter: int = 500) -> None:
        """Best-improvement pairwise swaps (counts, hence the makespan, unchanged) until a local optimum."""
        for _ in range(max_iter):
            if time.perf_counter() > deadline:
                return
            own = {x: self.conf(x, self.owner[x]) for x in self.ids}
            bad = [x for x in self.ids if own[x] > 0]
            if not bad:
                return
            best_delta, best_pair = 0, None
            for a in bad:
                u = self.owner[a]
                for b in self.ids:
                    v = self.owner[b]
                    if v == u:
                        continue
                    # Exact change of the pair-weighted cost: a and b sit on different resources before
                    # and after, so no pair is counted twice; ``minus`` drops the partner that leaves.
                    delta = self.conf(a, v, minus=b) + self.conf(b, u, minus=a) - own[a] - own[b]
                    if delta < best_delta:
                        best_delta, best_pair = delta, (a, b)
            if best_pair is None:
                return
            a, b = best_pair
            u, v = self.remove(a), self.remove(b)
            self.add(a, v)
            self.add(b, u)

    def counts(self) -> list[int]:
        return [len(h) for h in self.hold]

    def makespan(self) -> float:
        return max((r.cost(len(h)) for r, h in zip(self.res, self.hold)), default=0.0)

    def repair_hard(self) -> None:
        """Move windows out of ``"require"`` conflicts to legal resources with spare capacity."""
        while True:
            bad = [(-self.adj_in(x, self.owner[x]), x) for x in self.ids]
            bad = [b for b in bad if b[0] < 0]
            if not bad:
                return
            x = min(bad)[1]  # the window in most adjacent pairs first
            u = self.owner[x]
            cands = [r for r in range(len(self.res))
                     if r != u and len(self.hold[r]) < self.res[r].cap and self.adj_in(x, r) == 0]
            if not cands:
                raise InfeasibleScheduleError(
                    f"window {x} cannot be placed without an adjacent pair (adjacency='require'); "
                    "allow local compute, add workers or raise the share")
            best = min(cands, key=lambda r: (self.res[r].cost(len(self.hold[r]) + 1), self.spread_in(x, r), r))
            self.remove(x)
            self.add(x, best)

    def improve_makespan(self, deadline: float, max_iter: int = 200) -> None:
        """Undo repair damage: move windows off the latest-finishing resource while that lowers its finish.

        A window moves only to a resource with spare capacity where its conflicts are no worse (so hard
        constraints stay met) and the receiver then finishes strictly before the current makespan. The sorted
        vector of finish times decreases lexicographically with each move, so this terminates.
        """
        for _ in range(max_iter):
            if time.perf_counter() > deadline:
                return
            fin = [r.cost(len(h)) for r, h in zip(self.res, self.hold)]
            span = max(fin, default=0.0)
            move = None
            for u in (i for i, f in enumerate(fin) if f >= span - _EPS):
                for x in sorted(self.hold[u]):
                    cu = self.conf(x, u)
                    for r in range(len(self.res)):
                        if r == u or len(self.hold[r]) >= self.res[r].cap:
                            continue
                        fr = self.res[r].cost(len(self.hold[r]) + 1)
                        if fr < span - _EPS and self.conf(x, r) <= cu:
                            key = (fr, self.conf(x, r), r, x)
                            if move is None or key < move[0]:
                                move = (key, x, r)
                if move is not None:
                    break
            if move is None:
                return
            _, x, r = move
            self.remove(x)
            self.add(x, r)

    def repair_soft(self, deadline: float) -> None:
        """Move conflicting windows to spare capacity when that lowers conflicts without raising the makespan."""
        while time.perf_counter() <= deadline:
            span = self.makespan()
            move = None
            for x in self.ids:
                u = self.owner[x]
                cu = self.conf(x, u)
                if cu <= 0:
                    continue
                for r in range(len(self.res)):
                    if r == u or len(self.hold[r]) >= self.res[r].cap:
                        continue
                    cr = self.conf(x, r)
                    fr = self.res[r].cost(len(self.hold[r]) + 1)
                    if cr < cu and fr <= span + _EPS:
                        key = (cr - cu, fr, r, x)
                        if move is None or key < move[0]:
                            move = (key, x, r)
            if move is None:
                return
            _, x, r = move
            self.remove(x)
            self.add(x, r)

    def stats(self) -> tuple[int, int]:
        """(adjacent pairs, spread surplus) over the workers."""
        pairs = 0
        spread = 0
        for r, h in enumerate(self.hold):
            if self.res[r].is_edge:
                continue
            for x in h:
                pairs += len(self.nbrs.get(x, frozenset()) & h)
            spread += sum(c - 1 for c in self.gcount[r].values() if c > 1)
        return pairs // 2, spread


def _neighbour_sets(ids: Sequence[int], neighbours: Neighbours | None) -> dict[int, frozenset[int]]:
    """Symmetric neighbour sets restricted to ``ids`` (a one-sided neighbours function is tolerated)."""
    if neighbours is None:
        return {}
    idset = set(ids)
    sets: dict[int, set[int]] = {i: set() for i in ids}
    for i in ids:
        for j in neighbours(i):
            j = int(j)
            if j != i and j in idset:
                sets[i].add(j)
                sets[j].add(i)
    return {i: frozenset(s) for i, s in sets.items()}


def _groups_of(ids: Sequence[int], spread_groups: Iterable[Iterable[int]]) -> dict[int, tuple[int, ...]]:
    idset = set(ids)
    out: dict[int, list[int]] = {}
    for g, members in enumerate(spread_groups):
        mem = [int(i) for i in members if int(i) in idset]
        if len(mem) < 2:
            continue  # a group with one assignable member can never collide
        for i in mem:
            out.setdefault(i, []).append(g)
    return {i: tuple(gs) for i, gs in out.items()}


def _solve(window_ids: Iterable[int], workers: Mapping[str, PerfEstimate], edge: PerfEstimate | None, *,
           max_per_worker: int | None, neighbours: Neighbours | None, adjacency: str, keep_local: Iterable[int],
           spread_groups: Iterable[Iterable[int]], allow_local: bool, now: float | None, time_budget_s: float,
           counts_fn: Callable[[list[_Res], int], list[int]]) -> Schedule:
    t_start = time.perf_counter()
    _check_adjacency(adjacency, neighbours)
    t_now = _resolve_now(now)
    all_ids = _dedupe(window_ids)
    keep = set(int(i) for i in keep_local)
    local_fixed = [i for i in all_ids if i in keep]
    ids = [i for i in all_ids if i not in keep]
    m = len(ids)
    n_content = len(all_ids)
    cap = _effective_cap(max_per_worker, n_content, m)
    avail = _available(workers, t_now)
    res = _build_resources(avail, edge, cap, len(local_fixed), allow_local, m)
    counts = counts_fn(res, m)

    w_adj = {"off": 0, "prefer": _W_PREFER, "require": _W_REQUIRE}[adjacency]
    nbrs = _neighbour_sets(ids, neighbours)  # also for "off": the stats report real pairs
    groups = _groups_of(ids, spread_groups)
    def make() -> _Placement:
        return _Placement(ids, res, nbrs, groups, w_adj, _W_SPREAD if groups else 0)

    # Optional improvement phases stop at t_opt; the mandatory ones (counts, hard repair) always finish.
    t_opt = t_start + 3 * time_budget_s
    pl = make()
    pl.greedy(counts)
    pl.swap_search(t_start + time_budget_s)
    if adjacency == "require":
        # Counts-first is optimal whenever the swaps find a conflict-free placement; when they do not,
        # repairing it can be poor (few workers, dense windows), so also build a hard-first placement and
        # keep the better of the two. Both are legal.
        try:
            pl.repair_hard()
            pl.improve_makespan(t_opt)
        except InfeasibleScheduleError:
            pl = None  # type: ignore[assignment]
        if pl is None or pl.stats()[0] or pl.makespan() > counts_makespan(res, counts) + _EPS:
            for dsatur in (False, True):
                if dsatur and pl is not None and (time.perf_counter() > t_start + 2 * time_budget_s
                                                  or pl.makespan() <= counts_makespan(res, counts) + _EPS):
                    break  # DSatur is the slow fallback: only when needed and time is left
                alt = make()
                try:
                    alt.constructive(dsatur)
                    alt.improve_makespan(t_opt)
                except InfeasibleScheduleError:
                    continue
                if pl is None or (alt.makespan(), alt.stats()) < (pl.makespan(), pl.stats()):
                    pl = alt
            if pl is None:
                raise InfeasibleScheduleError(
                    "no placement without adjacent windows on one worker (adjacency='require'); "
                    "allow local compute, add workers or raise the share")
    pl.repair_soft(t_opt)
    pairs, spread = pl.stats()

    assignments: dict[str, tuple[int, ...]] = {}
    local = list(local_fixed)
    finish: dict[str, float] = {}
    for r, h in zip(res, pl.hold):
        if r.is_edge:
            local.extend(h)
            finish[EDGE_ID] = r.cost(len(h))
        elif h:
            assignments[r.rid] = tuple(sorted(h))
            finish[r.rid] = r.cost(len(h))
    return Schedule(assignments=assignments, local=tuple(sorted(local)), makespan=max(finish.values(), default=0.0),
                    finish=finish, n_content=n_content, cap=cap, adjacent_pairs=pairs, spread_violations=spread,
                    created_at=t_now)


# ---------------------------------------------------------------------------------------------- public API
def schedule(window_ids: Iterable[int], workers: Mapping[str, PerfEstimate], edge: PerfEstimate | None = None, *,
             max_per_worker: int | None = None, neighbours: Neighbours | None = None,
             adjacency: Adjacency = "prefer", keep_local: Iterable[int] = (),
             spread_groups: Iterable[Iterable[int]] = (), allow_local: bool = True, now: float | None = None,
             time_budget_s: float = 0.004) -> Schedule:
    """Place content windows on workers (and the edge) minimising the predicted makespan.

    See the module docstring for the algorithm and its optimality argument.

    Args:
        window_ids: the image's content windows (pure-padding windows are never sent: leave them out).
        workers: estimates by worker id; workers not `available` at ``now`` are skipped.
        edge: the edge's estimate; None means the edge computes only ``keep_local`` (its time unmodelled).
        max_per_worker: most windows one worker may hold (None: no share limit besides never-whole-image).
        neighbours: window id -> neighbour ids (needed unless ``adjacency == "off"``).
        adjacency: ``"off"``, ``"prefer"`` (minimise same-worker adjacent pairs) or ``"require"`` (none).
        keep_local: windows that must stay on the edge.
        spread_groups: groups of window ids of which a worker should hold at most one (where feasible).
        allow_local: whether the edge may compute windows besides ``keep_local`` (fastest-finish and fallback).
        now: clock time for the health check (default ``time.monotonic()``).
        time_budget_s: wall-clock budget of the swap search (the optional repair phases get up to 3x).

    Raises:
        InfeasibleScheduleError: the caps cannot hold all windows, or ``"require"`` cannot be met.
    """
    return _solve(window_ids, workers, edge, max_per_worker=max_per_worker, neighbours=neighbours,
                  adjacency=adjacency, keep_local=keep_local, spread_groups=spread_groups, allow_local=allow_local,
                  now=now, time_budget_s=time_budget_s, counts_fn=_greedy_counts)


def _equal_counts(res: list[_Res], m: int) -> list[int]:
    """Equal shares over the workers (ignoring speed); what the caps do not hold goes to the edge."""
    wk = [i for i, r in enumerate(res) if not r.is_edge and r.cap >= 1]
    counts = [0] * len(res)
    if wk:
        base, extra = divmod(m, len(wk))
        for j, i in enumerate(wk):
            counts[i] = min(res[i].cap, base + (1 if j < extra else 0))
    rest = m - sum(counts)
    if rest:
        e = [i for i, r in enumerate(res) if r.is_edge]
        if e and res[e[0]].cap >= rest:
            counts[e[0]] += rest
        else:
            # Why not spill onto other workers: a naive split has no notion of who is faster; with the
            # caps set as share limits, an unequal spill would no longer be an "equal split".
            raise InfeasibleScheduleError(f"equal split leaves {rest} windows with no legal place")
    return counts


def equal_split(window_ids: Iterable[int], workers: Mapping[str, PerfEstimate], edge: PerfEstimate | None = None,
                *, max_per_worker: int | None = None, neighbours: Neighbours | None = None,
                adjacency: Adjacency = "prefer", keep_local: Iterable[int] = (),
                spread_groups: Iterable[Iterable[int]] = (), allow_local: bool = True, now: float | None = None,
                time_budget_s: float = 0.004) -> Schedule:
    """Naive baseline: windows divided equally over all available workers, speeds ignored.

    The first ``m mod k`` workers (by id) get one window more; windows the caps cannot hold go to the edge.
    Placement (adjacency, spread) uses the same routine as `schedule`, so only the counts differ. The
    returned makespan is predicted from the estimates.
    """
    return _solve(window_ids, workers, edge, max_per_worker=max_per_worker, neighbours=neighbours,
                  adjacency=adjacency, keep_local=keep_local, spread_groups=spread_groups, allow_local=allow_local,
                  now=now, time_budget_s=time_budget_s, counts_fn=_equal_counts)


def lower_bound(n_windows: int, estimates: Mapping[str, PerfEstimate] | Iterable[PerfEstimate],
                max_per_worker: int | None = None, edge: PerfEstimate | None = None, *, n_local: int = 0,
                n_content: int | None = None, allow_local: bool = True, now: float | None = None) -> float:
    """Smallest makespan any schedule of ``n_windows`` assignable windows can have under the count constraints.

    ``T* = min T such that sum_r min(cap_r, k_r(T)) >= n``, with ``k_r(T) = floor((T - o_r) / s_r)`` for a
    worker and ``floor(T / s_e) - n_local`` for the edge (which also needs ``T >= n_local * s_e``). Computed
    exactly as the ``n``-th smallest of all breakpoints ``o_r + k s_r`` (k = 1..cap_r), by sorting — an
    implementation independent of `schedule`'s heap. Placement constraints (adjacency, spread) are relaxed,
    the caps (share, never-whole-image) are not, so `schedule` never beats it.

    Args:
        n_windows: windows to place (keep-local ones excluded).
        estimates: worker estimates (a mapping or any iterable); workers not available at ``now`` are skipped.
        max_per_worker: share cap (None: none).
        edge: the edge's estimate, or None (then no local compute).
        n_local: keep-local windows already on the edge.
        n_content: content windows of the image for the never-whole-image rule (default n_windows + n_local).
        allow_local: whether the edge may take assignable windows.
        now: clock time for the health check (default ``time.monotonic()``).

    Returns:
        The bound in seconds; ``math.inf`` if the caps cannot hold the windows.
    """
    t_now = _resolve_now(now)
    ests = list(estimates.values()) if isinstance(estimates, Mapping) else list(estimates)
    n = int(n_windows)
    nc = n + n_local if n_content is None else int(n_content)
    cap = _effective_cap(max_per_worker, nc, n)
    floor_t = n_local * edge.seconds_per_window if (edge is not None) else 0.0
    if n <= 0:
        return floor_t
    points: list[float] = []
    for e in ests:
        if not e.available(t_now):
            continue
        o, s = max(0.0, e.overhead_s), max(0.0, e.seconds_per_window)
        points.extend(o + k * s for k in range(1, cap + 1))
    if edge is not None and allow_local:
        s = max(0.0, edge.seconds_per_window)
        points.extend((n_local + k) * s for k in range(1, n + 1))
    if len(points) < n:
        return math.inf
    points.sort()
    return max(floor_t, points[n - 1])


def pick_hedge(window_ids: Iterable[int], sched: Schedule, estimates: Mapping[str, PerfEstimate],
               edge: PerfEstimate | None = None, *, max_per_worker: int | None = None,
               neighbours: Neighbours | None = None, adjacency: Adjacency = "prefer",
               spread_groups: Iterable[Iterable[int]] = (), allow_local: bool = True, exclude: Iterable[str] = (),
               also_held: Mapping[str, Iterable[int]] | None = None, n_workers: int | None = None,
               now: float | None = None) -> dict[str, tuple[int, ...]]:
    """Choose where to duplicate (hedge) or re-place a straggler's / failed worker's windows.

    Window by window, the target is the legal resource with the earliest predicted finish (a busy resource
    starts the hedge when its scheduled work is predicted to end: ``max(now, created_at + finish)``). A
    worker is legal for window ``x`` when it is available, not excluded, and
    `pedvit.partition.constraints.placement_cost` allows it to take ``x`` as well (counting what it holds in
    ``sched``, in ``also_held`` and from this hedge): not held already, within the share cap and below the
    whole image, within the spread limit of every group, and no adjacent pair under ``"require"``. The engine's
    failover checks the same rule. Under ``"prefer"`` targets with fewer new adjacent pairs come first (the
    edge, which is exempt, counts none). The edge is always legal when ``allow_local`` and an edge estimate is
    given.

    Args:
        window_ids: the windows to duplicate (typically all windows of the straggler).
        sched: the request's schedule.
        estimates: worker estimates by id.
        edge: the edge's estimate (None: the edge is not a target).
        max_per_worker: share cap (None: ``sched.cap``).
        neighbours, adjacency, spread_groups, allow_local: the request's constraints.
        exclude: workers that must not be targets (the straggler itself, known-dead workers).
        also_held: windows workers hold for this request beyond ``sched`` (earlier hedges, failovers).
        n_workers: workers of the request, for the spread limit (None: those in ``estimates`` or ``sched``).
        now: clock time (default ``time.monotonic()``).

    Returns:
        target id (a worker id or `EDGE_ID`) -> window ids; empty if some window has no legal target
        (a partial hedge would not remove the wait for the straggler).
    """
    _check_adjacency(adjacency, neighbours)
    t_now = _resolve_now(now)
    ids = _dedupe(window_ids)
    if not ids:
        return {}
    cap = sched.cap if max_per_worker is None else share_cap(int(max_per_worker), sched.n_content)
    n_request = len(set(estimates) | set(sched.assignments)) if n_workers is None else n_workers
    excluded = set(exclude)
    held: dict[str, set[int]] = {w: set(v) for w, v in sched.assignments.items()}
    for w, v in (also_held or {}).items():
        held.setdefault(w, set()).update(int(i) for i in v)
    groups = [frozenset(int(i) for i in g) for g in spread_groups]
    nb_cache: dict[int, frozenset[int]] = {}

    def nb(x: int) -> frozenset[int]:
        if x not in nb_cache:
            nb_cache[x] = frozenset(int(j) for j in neighbours(x)) if neighbours is not None else frozenset()
        return nb_cache[x]

    added: dict[str, list[int]] = {}

    def finish_with(rid: str, est: PerfEstimate, k: int) -> float:
        busy = sched.created_at + sched.finish.get(rid, 0.0)
        start = max(t_now, busy)
        if rid == EDGE_ID:
            return start + k * max(0.0, est.seconds_per_window)
        return start + est.predict(k)

    cands: list[tuple[str, PerfEstimate]] = [
        (w, e) for w, e in sorted(estimates.items())
        if w not in excluded and w != EDGE_ID and e.available(t_now)]
    if allow_local and edge is not None:
        cands.append((EDGE_ID, edge))

    for x in ids:
        best_key, best_rid = None, None
        for rid, est in cands:
            mine = added.get(rid, [])
            new_adj: int | None = 0
            if rid != EDGE_ID:
                new_adj = placement_cost(x, held.get(rid, set()) | set(mine), cap=cap, neighbours=nb(x),
                                         adjacency=adjacency, spread_groups=groups, n_workers=n_request)
                if new_adj is None:
                    continue
            key = (new_adj, finish_with(rid, est, len(mine) + 1), rid)
            if best_key is None or key < best_key:
                best_key, best_rid = key, rid
        if best_rid is None:
            return {}
        added.setdefault(best_rid, []).append(x)
    return {rid: tuple(v) for rid, v in added.items()}

