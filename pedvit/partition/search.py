"""The exact search behind the assignment schemes: a balanced colouring of the windows' 8-adjacency (king)
graph into worker classes, with spread groups, under per-worker caps; bounded by a node budget (see
`pedvit.partition.schemes` for what the schemes ask of it). `spread_feasible` answers the checker's question
(`pedvit.partition.check`): could the same windows and loads have spread every group?
"""

from __future__ import annotations

import math
import random as _random
from typing import Sequence

from .constraints import spread_limit
from .geometry import WindowGrid

_DFS_BUDGET = 4000  # search nodes per attempt: enough for every 5x5 case, bounded for odd inputs
_MIN_BUDGET = 800  # per improvement round when minimising an infeasible case

class _Budget(Exception):
    pass


def balanced_loads(caps: Sequence[int], total: int) -> list[int]:
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


class ColouringProblem:
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
    prob = ColouringProblem(grid, sorted(sent), len(loads), groups)
    col, _ = prob.search(loads, True, 0, 1, 0, budget=budget)
    return col is not None
