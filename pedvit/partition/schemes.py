"""Assignment schemes: which worker computes which window.

Schemes (``assign(grid, n_workers, scheme, ...)``):

* ``contiguous``: row-major content windows cut into ``n_workers`` balanced contiguous runs (a baseline with
  the worst privacy: each worker sees a compact region).
* ``interleaved``: a proper colouring of the 8-adjacency (king) graph of the windows into worker classes of
  balanced size, so that no worker holds two touching windows. A small exact search (row-major, symmetry
  broken over interchangeable workers, bounded node budget) finds one whenever it exists in practice. With
  default max share on a full rectangle of content windows it exists iff ``n_workers >= 2`` for a single
  row/column of windows, ``n_workers >= 4`` otherwise, except 3x5 / 5x3 / 5x5 windows which need
  ``n_workers >= 5`` (in a 4-colouring of the king graph every row, or every column, alternates two
  colours, so one colour takes >= 8 of 25 windows). When it does not exist the adjacency setting decides:
  "prefer" minimises adjacent pairs (branch and bound with a budget) and adds a note; "require" keeps the
  fewest windows it can on the edge (``allow_local``) or raises ConstraintError. Spread groups given in the
  constraints are honoured too (they are constraints, adjacency a preference: spread wins a conflict).
* ``random``: seeded (``seed=None`` -> fresh randomness per call); a random balanced assignment that still
  prefers non-adjacent windows unless ``adjacency == "off"`` (random tie-breaking in the same search),
  with worker labels shuffled among workers of equal capacity.
* ``semantic``: the interleaved assignment driven by detected content (``sensitivity.constraints_for_image``):
  keep-local windows (faces) stay on the edge and each spread group (one object's windows) goes to different
  workers where feasible. Algorithmically the same search as ``interleaved``; since ``check_assignment``
  enforces spread groups for every scheme, ``interleaved`` honours them too when they are given.

Every scheme: never sends keep-local or padding windows; respects the max share (and ``worker_capacity``);
never gives one worker every content window when there are >= 2 — with a single worker, the worker gets
``n - 1`` windows and the edge computes the rest (ConstraintError when ``allow_local`` is False).
Overflow beyond total capacity stays on the edge when ``allow_local``, else ConstraintError.

Loads: exactly balanced (differ by <= 1 within the caps) whenever the constraints can be met exactly; when
adjacency/spread must be relaxed, the minimisation may use any loads up to the max share (so the slowest
worker's load, which sets latency, is unchanged).
"""

from __future__ import annotations

import math
import random as _random
from typing import Sequence

from .constraints import (
    Assignment,
    ConstraintError,
    Constraints,
    _adjacent_pairs,
    check_assignment,
    max_share,
    share_cap,
    spread_limit,
)
from .geometry import WindowGrid

__all__ = ["SCHEMES", "assign", "spread_feasible"]

SCHEMES = ("contiguous", "interleaved", "random", "semantic")

_DFS_BUDGET = 4000  # search nodes per attempt: enough for every 5x5 case, bounded for odd inputs
_MIN_BUDGET = 800  # per improvement round when minimising an infeasible case
_W_HI, _W_LO = 1000, 1  # lexicographic weights: spread-group excess before adjacent pairs


class _Budget(Exception):
    pass


def _balanced(caps: Sequence[int], total: int) -> list[int]:
    """Per-worker counts summing to ``total``, as equal as the caps allow (water filling, low index first)."""
    t = [0] * len(caps)
    left = total
    while left:
        moved = False
        for i, c in enumerate(caps):
            if left and t[i] < c:
                t[i] += 1
                left -= 1
                moved = True
        if not moved:
            raise AssertionError("total exceeds capacity")  # callers check capacity first
    return t


class _Problem:
    """Nodes (window ids in row-major order), their adjacency, spread groups and per-worker caps."""

    def __init__(
        self,
        grid: WindowGrid,
        nodes: Sequence[int],
        n_workers: int,
        groups: Sequence[frozenset[int]],
    ) -> None:
        self.nodes = list(nodes)
        self.n = len(self.nodes)
        self.n_workers = n_workers
        idx = {w: i for i, w in enumerate(self.nodes)}
        self.nbrs = [[idx[b] for b in grid.neighbours(w) if b in idx] for w in self.nodes]
        self.prev_nbrs = [[j for j in nb if j < i] for i, nb in enumerate(self.nbrs)]
        gs = [frozenset(idx[w] for w in g if w in idx) for g in groups]
        gs = [g for g in gs if len(g) >= 2]
        self.groups = gs
        self.gq = [spread_limit(len(g), n_workers) for g in gs]
        self.node_groups = [[k for k, g in enumerate(gs) if i in g] for i in range(self.n)]

    # ----------------------------------------------------------------- search
    def search(
        self,
        caps: Sequence[int],
        exact: bool,
        w_adj: int,
        w_grp: int,
        limit: float = 0,
        rng: _random.Random | None = None,
        budget: int = _DFS_BUDGET,
        even: bool = True,
    ) -> tuple[list[int] | None, bool]:
        """Depth-first search for an assignment whose cost is at most ``limit``.

        Cost = ``w_adj`` per adjacent pair on one worker + ``w_grp`` per window of a spread group beyond
        ``ceil(s / n_workers)`` on one worker; ``limit=0`` with non-zero weights makes both hard.
        ``caps`` are exact counts (``exact``) or upper bounds. Cheapest worker first; among equally cheap ones
        ``even`` prefers the emptiest (finds balanced assignments fast), otherwise index order (better when
        minimising: it builds the two-colour row patterns optimal solutions use); ``rng`` shuffles ties.
        Returns ``(worker per node or None, proven)``: ``proven`` is False when the node
        budget ran out before the search space was exhausted.
        """
        n, nw = self.n, self.n_workers
        if sum(caps) < n or (exact and sum(caps) != n):
            return None, True
        col = [-1] * n
        cnt = [0] * nw
        gcnt = [[0] * nw for _ in self.groups]
        # workers with equal caps are interchangeable: open only the lowest-index fresh one of each class
        classes: dict[int, list[int]] = {}
        for w in range(nw):
            classes.setdefault(caps[w], []).append(w)
        class_lists = [v for _, v in sorted(classes.items(), key=lambda kv: -kv[0])]
        steps = [0]

        def candidates(i: int, slack: float) -> list[tuple[int, int, int]]:
            conf: dict[int, int] = {}
            if w_adj:
                for j in self.prev_nbrs[i]:
                    conf[col[j]] = conf.get(col[j], 0) + w_adj
            my_groups = self.node_groups[i] if w_grp else ()
            out = []
            for members in class_lists:
                for w in members:
                    c = cnt[w]
                    if c < caps[w]:
                        add = conf.get(w, 0)
                        for k in my_groups:
                            if gcnt[k][w] >= self.gq[k]:
                                add += w_grp
                        if add <= slack:
                            out.append((add, c - caps[w], w))
                    if c == 0:
                        break  # opened workers form a prefix of each class: one fresh one is enough
            if rng is not None:
                rng.shuffle(out)
            # cheapest first, then most room left (keeps exact targets reachable and loads even)
            out.sort(key=(lambda t: (t[0], t[1])) if even else (lambda t: t[0]))
            return out

        def dfs(i: int, room: int, cost: float) -> bool:
            steps[0] += 1
            if steps[0] > budget:
                raise _Budget
            if i == n:
                return True
            if room < n - i:
                return False
            for add, _, w in candidates(i, limit - cost):
                col[i] = w
                cnt[w] += 1
                for k in self.node_groups[i]:
                    gcnt[k][w] += 1
                if dfs(i + 1, room - 1, cost + add):
                    return True
                cnt[w] -= 1
                for k in self.node_groups[i]:
                    gcnt[k][w] -= 1
                col[i] = -1
            return False

        try:
            ok = dfs(0, sum(caps), 0)
        except _Budget:
            return None, False
        return (list(col) if ok else None), True

    def cost(self, col: list[int], w_adj: int, w_grp: int) -> int:
        """Adjacent pairs on one worker times ``w_adj`` plus spread-group excess times ``w_grp``."""
        c = 0
        for i in range(self.n):
            c += w_adj * sum(1 for j in self.nbrs[i] if j > i and col[j] == col[i])
        for k, g in enumerate(self.groups):
            for w in range(self.n_workers):
                c += w_grp * max(0, sum(1 for j in g if col[j] == w) - self.gq[k])
        return c

    def minimise(
        self,
        caps: Sequence[int],
        exact: bool,
        w_adj: int,
        w_grp: int,
        rng: _random.Random | None = None,
        first_limit: float = math.inf,
    ) -> list[int]:
        """Lowest-cost assignment found within budget (branch and bound with a descending cost limit).

        ``first_limit`` (e.g. just below the primary weight) makes the first solution satisfy the primary
        objective whenever the search can, before the descent minimises the rest.
        """
        col, _ = self.search(caps, exact, w_adj, w_grp, first_limit, rng, even=False)
        if col is None:
            col, _ = self.search(caps, exact, w_adj, w_grp, math.inf, rng, even=False)
        assert col is not None  # with no cost limit every branch completes (room is checked)
        best, c = col, self.cost(col, w_adj, w_grp)
        while c > 0:
            col, _ = self.search(caps, exact, w_adj, w_grp, c - 1, rng, budget=_MIN_BUDGET, even=False)
            if col is None:
                break
            best, c = col, self.cost(col, w_adj, w_grp)
        return best

    def badness(self, col: list[int]) -> list[int]:
        """Per node: adjacent windows on its worker + groups in which its worker holds too many windows."""
        out = []
        for i in range(self.n):
            b = sum(1 for j in self.nbrs[i] if col[j] == col[i])
            for k in self.node_groups[i]:
                if sum(1 for j in self.groups[k] if col[j] == col[i]) > self.gq[k]:
                    b += 1
            out.append(b)
        return out


def spread_feasible(
    grid: WindowGrid,
    sent: Sequence[int],
    loads: Sequence[int],
    groups: Sequence[frozenset[int]],
    budget: int = 20000,
) -> bool:
    """Can windows ``sent`` go to workers with exactly ``loads`` windows each and every group spread?

    Spread = at most ``ceil(n_sent_of_group / n_workers)`` windows of a group per worker. Returns False when
    the search budget runs out (feasibility not shown), so the checker never flags an unproven violation.
    """
    prob = _Problem(grid, sorted(sent), len(loads), groups)
    col, _ = prob.search(loads, True, 0, 1, 0, budget=budget)
    return col is not None


def _caps(
    grid: WindowGrid, n_workers: int, constraints: Constraints, worker_capacity: Sequence[int] | None
) -> list[int]:
    cap = max_share(grid, n_workers, constraints)
    caps = [cap] * n_workers
    if worker_capacity is not None:
        if len(worker_capacity) != n_workers:
            raise ConstraintError(
                f"worker_capacity has {len(worker_capacity)} entries for {n_workers} workers; pass one per worker"
            )
        for c in worker_capacity:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise ConstraintError(f"worker_capacity entries must be non-negative ints, got {c!r}")
        caps = [min(a, b) for a, b in zip(caps, worker_capacity)]
    return [share_cap(c, len(grid.content_ids)) for c in caps]  # no worker may see the whole image


def assign(
    grid: WindowGrid,
    n_workers: int,
    scheme: str,
    *,
    constraints: Constraints = Constraints(),
    seed: int | None = None,
    worker_capacity: Sequence[int] | None = None,
) -> Assignment:
    """Assign the grid's content windows to ``n_workers`` workers.

    Args:
        grid: the image's window grid.
        n_workers: number of cloud workers (>= 1).
        scheme: one of ``SCHEMES``.
        constraints: see ``Constraints``.
        seed: randomness for ``random`` (None -> fresh each call); ignored by the deterministic schemes.
        worker_capacity: optional per-worker cap (e.g. from a scheduler); the min with the max share is used.

    Returns:
        An ``Assignment`` with every worker 0..n_workers-1 present (possibly empty) that passes
        ``check_assignment(assignment, grid, constraints, worker_capacity=worker_capacity)``.

    Raises:
        ConstraintError: impossible constraints (too little capacity with ``allow_local=False``,
            ``adjacency="require"`` that cannot be met without local compute, unknown window ids, ...).
        ValueError: unknown scheme or bad ``n_workers``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ConstraintError(f"n_workers must be an int >= 1, got {n_workers!r}")
    unknown = sorted(i for i in constraints.keep_local | frozenset().union(*constraints.spread_groups)
                     if not 0 <= i < grid.n_windows)
    if unknown:
        raise ConstraintError(f"window ids {unknown} in keep_local/spread_groups are not in the "
                              f"{grid.rows}x{grid.cols} grid (ids 0..{grid.n_windows - 1})")
    rng = _random.Random(seed) if scheme == "random" else None
    content = grid.content_ids
    keep = [i for i in content if i in constraints.keep_local]
    send = [i for i in content if i not in constraints.keep_local]
    caps = _caps(grid, n_workers, constraints, worker_capacity)
    notes: list[str] = []
    local: list[int] = list(keep)

    # windows beyond the total capacity stay on the edge (or the constraints are impossible)
    room = sum(caps)
    if room < len(send):
        excess = len(send) - room
        why = (f"{len(send)} windows to send but {n_workers} worker(s) take at most {room} "
               f"(max share {max(caps) if caps else 0}, no worker may hold the whole image)")
        if not constraints.allow_local:
            raise ConstraintError(why + ": add workers, raise max_windows_per_worker/worker_capacity, "
                                        "or set allow_local=True")
        if rng is not None:
            over = rng.sample(send, excess)
        elif scheme == "contiguous":
            over = send[-excess:]
        else:
            # keep windows of one 2x2-tiling class together so that the sent ones touch as little as possible
            by_class = sorted(send, key=lambda i: (grid.window(i).row % 2, grid.window(i).col % 2, i))
            over = by_class[-excess:]
        send = [i for i in send if i not in over]
        local += over
        notes.append(why + f"; edge computes {sorted(over)}")

    if scheme == "contiguous":
        col = _contiguous(send, caps)
    else:
        col = _colouring(grid, send, caps, scheme, constraints, rng, notes, local)
        send = [i for i in send if i not in local]

    worker_windows: dict[int, list[int]] = {w: [] for w in range(n_workers)}
    for wid, w in zip(send, col):
        worker_windows[w].append(wid)
    if rng is not None:
        worker_windows = _shuffle_labels(worker_windows, caps, rng)
    result = Assignment(
        worker_windows={w: tuple(v) for w, v in worker_windows.items()},
        local=tuple(local),
        padding=tuple(grid.padding_ids),
        scheme=scheme,
        notes=tuple(notes),
    )
    if scheme == "contiguous":
        _contiguous_check(grid, result, constraints, notes)
        result = Assignment(result.worker_windows, result.local, result.padding, scheme, tuple(notes))
    return result


def _contiguous(send: list[int], caps: list[int]) -> list[int]:
    targets = _balanced(caps, len(send))
    col: list[int] = []
    for w, t in enumerate(targets):
        col += [w] * t
    return col


def _contiguous_check(grid: WindowGrid, a: Assignment, c: Constraints, notes: list[str]) -> None:
    pairs = sum(len(_adjacent_pairs(grid, ids)) for ids in a.worker_windows.values())
    if pairs and c.adjacency == "require":
        raise ConstraintError("the contiguous scheme keeps neighbouring windows together, which "
                              "adjacency='require' forbids: use scheme 'interleaved' or adjacency='prefer'")
    if pairs and c.adjacency == "prefer":
        notes.append(f"contiguous scheme keeps runs together: {pairs} adjacent pairs")
    if c.spread_groups:
        bad = [v for v in check_assignment(a, grid, c) if v.startswith("spread group")]
        if bad:
            raise ConstraintError("the contiguous scheme cannot spread object windows "
                                  f"({'; '.join(bad)}): use scheme 'semantic'")


def _shuffle_labels(ww: dict[int, list[int]], caps: list[int], rng: _random.Random) -> dict[int, list[int]]:
    """Permute worker labels among workers of equal cap (so the cap of each worker is still respected)."""
    by_cap: dict[int, list[int]] = {}
    for w, c in enumerate(caps):
        by_cap.setdefault(c, []).append(w)
    out: dict[int, list[int]] = {}
    for members in by_cap.values():
        perm = members[:]
        rng.shuffle(perm)
        for src, dst in zip(members, perm):
            out[dst] = ww[src]
    return dict(sorted(out.items()))


def _colouring(
    grid: WindowGrid,
    send: list[int],
    caps: list[int],
    scheme: str,
    c: Constraints,
    rng: _random.Random | None,
    notes: list[str],
    local: list[int],
) -> list[int]:
    """Worker per window of ``send`` for the colouring schemes; may move windows to ``local``."""
    n_workers = len(caps)
    use_adj = scheme != "random" or c.adjacency != "off"
    cap_txt = f"max {max(caps)} per worker" if caps else "no workers"

    while True:
        prob = _Problem(grid, send, n_workers, c.spread_groups)
        wa = 1 if use_adj else 0
        wg = 1 if prob.groups else 0
        targets = _balanced(caps, len(send))
        # 1. everything hard: balanced counts first, then any counts within the caps
        for cp, exact in ((targets, True), (caps, False)):
            col, _ = prob.search(cp, exact, wa, wg, 0, rng)
            if col is not None:
                return col
        # 2. spread groups are constraints, adjacency a preference: spread first, then fewest adjacent pairs
        w_adj, w_grp = wa * _W_LO, wg * _W_HI
        first = _W_HI - 1 if wg else math.inf
        col = prob.minimise(caps, False, w_adj, w_grp, rng, first_limit=first)
        pairs = prob.cost(col, 1, 0)
        excess = prob.cost(col, 0, 1)
        if c.adjacency == "require" and use_adj and (pairs or excess):
            # keep as few windows as we can on the edge: drop the window in most conflicts, retry
            if not c.allow_local:
                raise ConstraintError(
                    f"no assignment of {len(send)} windows to {n_workers} workers ({cap_txt}) without two "
                    "adjacent windows on one worker: add workers, raise max_windows_per_worker, set "
                    "adjacency='prefer', or allow_local=True")
            bad = prob.badness(col)
            worst = max(range(prob.n), key=lambda i: (bad[i], i))
            local.append(send[worst])
            local.sort()
            notes.append(f"adjacency required: edge computes window {send[worst]} ({cap_txt})")
            send = [w for w in send if w != send[worst]]
            continue
        if use_adj and pairs:
            notes.append(f"adjacency relaxed: no assignment without adjacent windows on one worker "
                         f"found with {cap_txt}; {pairs} adjacent pair(s)")
        if wg and excess:
            notes.append(f"spread relaxed: object windows share a worker beyond the spread limit "
                         f"({excess} excess window(s))")
        return col
