"""Where each window of one request is computed, and where it moves when its worker fails or is late.

A window goes to the worker its plan names, or to the edge (keep-local, leftovers, failovers). When a worker
fails, each of its windows moves to another worker only if the move keeps every hard privacy constraint (max
share, never the whole image, spread groups, "require" adjacency; keep-local windows are never sent), else to
the edge. A "prefer" adjacency is relaxed, with a note, only when local compute is forbidden; with no legal
worker and no local compute the request fails clearly (`PrivacyConstraintError`). A late call is hedged only
on a place `pick_hedge` finds within the same constraints.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from pedvit.partition import WindowGrid
from pedvit.partition.constraints import placement_cost, share_cap

from .estimates import EDGE_ID, PerfTable
from .planner import RequestPlan
from .recorder import RunRecorder
from .scheduler import pick_hedge

#: the edge's name in routes, failovers and hedges (the id of its estimate)
EDGE = EDGE_ID


#: (worker, window id, windows the worker holds in this request) -> may the worker also be sent that window?
MayReceive = Callable[[str, int, frozenset[int]], bool]


class PrivacyConstraintError(RuntimeError):
    """A failed worker's windows could not be moved without breaking a hard constraint, and the edge may not
    compute them."""


class Routing:
    """The routes of one request: window -> owner, the workers that failed, and the choice of new places.

    Args:
        plan: the request's plan (assignment, constraints, members, schedule for hedging).
        grid: the request's window grid (neighbours, content windows).
        recorder: the request's recorder (what each worker was sent, the edge's windows, notes, failovers).
        perf: the estimates table (backoff state; predicted times with adaptive scheduling).
        allow_local: may the edge compute windows itself.
        adaptive: adaptive scheduling (failover candidates rank by predicted time).
        may_receive: the caller's own rule on top of the request's constraints for windows sent beyond its
            assignment (failovers and hedges); a video session refuses what would push a worker past its scene
            coverage cap. None: no rule.
    """

    def __init__(self, plan: RequestPlan, grid: WindowGrid, recorder: RunRecorder, perf: PerfTable, *,
                 allow_local: bool, adaptive: bool, may_receive: MayReceive | None = None) -> None:
        self.plan = plan
        self.grid = grid
        self.recorder = recorder
        self.perf = perf
        self.allow_local = allow_local
        self.adaptive = adaptive
        self.may_receive = may_receive
        #: window id -> the worker that computes it (the edge's windows are absent; failovers update it)
        self.owner = plan.owners()
        #: workers that failed in this request (never offered its windows again)
        self.dead: set[str] = set()

    def target(self, window_id: int) -> str:
        """Where `window_id` is computed now: its owner, or `EDGE`."""
        return EDGE if self.recorder.is_local(window_id) else self.owner[window_id]

    def mark_failed(self, worker: str) -> None:
        self.dead.add(worker)
        if worker in self.perf:
            self.perf.mark_failed(worker)

    def holdings(self) -> dict[str, set[int]]:
        """Windows each worker holds in this request, as failover and hedging count them against the
        constraints: those it was sent (hedges and earlier rounds included) and those routed to it (its
        assignment, and failovers not sent yet)."""
        held = self.recorder.sent_windows()
        for wid, name in self.owner.items():
            if name in held:
                held[name].add(wid)
        return held

    def fail_over(self, window_id: int, stage: str, source: str, reason: str) -> str:
        """Move `window_id` (lost by `source` for `reason`) to `failover_target`; record and return it."""
        new_owner = self.failover_target(window_id)
        self.recorder.failover(window_id, stage, source, new_owner, reason, to_edge=new_owner == EDGE)
        if new_owner != EDGE:
            self.owner[window_id] = new_owner
        return new_owner

    def failover_target(self, window_id: int) -> str:
        """Where window `window_id` of a failed worker goes: a live worker, or the edge (`EDGE`).

        A worker is legal when `placement_cost` (the rule `pick_hedge` uses too) lets it take the window on top
        of what it holds (`holdings`): share cap, never the whole image, spread limit, and no adjacent pair
        under "require"; and the caller's `may_receive` rule, if any, agrees. Legal workers rank by new adjacent pairs ("prefer"; "off" ignores them), then
        `_failover_cost`, then fewest windows held, then name.

        With local compute allowed, the edge (trusted, hence always privacy-safe) takes the window when no
        worker is legal, when the best one would hold a window adjacent to it (so "prefer" is never relaxed
        while the edge can compute: privacy before speed), when the best one is in backoff, or when the
        measured edge is predicted faster (adaptive scheduling). With local compute forbidden the best legal
        worker takes it, even next to one of its windows under "prefer" (noted in the record); with none
        legal, `PrivacyConstraintError`.
        """
        constraints = self.plan.constraints
        names = list(self.plan.members)
        cap = share_cap(self.plan.max_per_worker, len(self.grid.content_ids))
        neighbours = frozenset(self.grid.neighbours(window_id))
        held = self.holdings()
        owned = Counter(self.owner.values())
        candidates: list[tuple[int, float, int, str]] = []
        for name in names:
            if name in self.dead:
                continue
            new_pairs = placement_cost(window_id, held[name], cap=cap, neighbours=neighbours,
                                       adjacency=constraints.adjacency, spread_groups=constraints.spread_groups,
                                       n_workers=len(names))
            if new_pairs is not None and self._caller_allows(name, window_id, held[name]):
                candidates.append((new_pairs, self._failover_cost(name, owned[name] + 1), len(held[name]), name))
        best = min(candidates, default=None)
        if self.allow_local:
            # Why: the edge is privacy-safe, so it beats a worker the window would sit next to ("prefer" is
            # relaxed only without it); and a measured straggler (or a worker in backoff) can take far longer
            # than the edge itself: failing over to it would make one lost window the slowest part.
            adaptive_edge = self.adaptive and self.perf.edge.seeded
            edge_s = self.perf.edge.predict(self.recorder.n_local() + 1) if adaptive_edge else math.inf
            if best is None or best[0] > 0 or best[1] == math.inf or edge_s < best[1]:
                return EDGE
        if best is None:
            # Name what the failed workers said: "unknown stage", a TLS error or a timeout need different fixes.
            causes = self.recorder.last_errors(self.dead)
            raise PrivacyConstraintError(
                f"window {window_id}: its worker failed and no other worker can take it within the privacy "
                "constraints; local compute is forbidden (allow_local=False)"
                + (f". Worker errors: {causes[:1500]}" if causes else "")
            )
        new_pairs, _, _, name = best
        if new_pairs:
            near = ", ".join(str(n) for n in sorted(neighbours & held[name]))
            self.recorder.note(
                f"window {window_id} failed over to {name} next to its window(s) {near} "
                f"(adjacency '{constraints.adjacency}' relaxed: no non-adjacent worker and local compute forbidden)"
            )
        return name

    def _caller_allows(self, name: str, window_id: int, held: set[int]) -> bool:
        return self.may_receive is None or self.may_receive(name, window_id, frozenset(held))

    def _failover_cost(self, name: str, n_windows: int) -> float:
        """Rank of a failover candidate: with adaptive scheduling, its predicted seconds for the windows it
        would then hold (a straggler in backoff or known to be slow ranks last); otherwise 0 (fewest windows
        held decides)."""
        if not self.adaptive or name not in self.perf:
            return 0.0
        est = self.perf.get(name)
        if not est.available(self.perf.clock()):
            return math.inf
        return est.predict(n_windows)

    def hedge_targets(self, window_ids: list[int], straggler: str) -> dict[str, tuple[int, ...]]:
        """Where to duplicate the late `straggler`'s `window_ids` (`pick_hedge`): target -> windows; empty
        when the request has no schedule (static) or no place keeps the constraints."""
        plan = self.plan
        if plan.schedule is None:
            return {}
        estimates = {n: e for n, e in plan.estimates.items() if n not in self.dead}
        constraints = plan.constraints
        held = self.holdings()
        picked = pick_hedge(
            window_ids, plan.schedule, estimates, plan.edge_estimate if self.allow_local else None,
            max_per_worker=plan.max_per_worker, neighbours=self.grid.neighbours,
            adjacency=constraints.adjacency, spread_groups=constraints.spread_groups, allow_local=self.allow_local,
            exclude={straggler, *self.dead}, also_held=held, n_workers=len(plan.members),
            now=self.perf.clock(),
        )
        if self.may_receive is None:
            return picked
        allowed: dict[str, tuple[int, ...]] = {}
        for target, wids in picked.items():
            kept: list[int] = []
            for wid in wids:
                if target == EDGE or self._caller_allows(target, wid, held.get(target, set()) | set(kept)):
                    kept.append(wid)
            if kept:
                allowed[target] = tuple(kept)
        return allowed
