"""The privacy constraints checker: every violation of `Constraints` by an `Assignment`, as readable lines
(the engine runs it on every assignment, `pedvit ledger check` on every recorded request)."""

from __future__ import annotations

from typing import Sequence

from .constraints import Assignment, Constraints, _adjacent_pairs, max_share, spread_limit
from .geometry import WindowGrid
from .search import spread_feasible


def check_assignment(
    assignment: Assignment,
    grid: WindowGrid,
    constraints: Constraints = Constraints(),
    *,
    worker_capacity: Sequence[int] | None = None,
) -> list[str]:
    """Human-readable violations of ``constraints`` by ``assignment`` (empty list = valid).

    Checks: unknown ids; a window assigned twice or a content window missing; padding windows sent or
    listed as local; keep-local windows sent; a worker above its max share (and ``worker_capacity`` when
    given); a worker holding every content window when there are >= 2; adjacent windows on one worker when
    ``adjacency == "require"``; spread-group violations when a spread assignment of the same windows with the
    same per-worker loads exists.
    """
    v: list[str] = []
    n = grid.n_windows
    content = set(grid.content_ids)
    padding = set(grid.padding_ids)
    seen: dict[int, str] = {}

    def place(i: int, where: str) -> None:
        if not 0 <= i < n:
            v.append(f"window {i} ({where}) is not a window of this {grid.rows}x{grid.cols} grid")
        elif i in seen:
            v.append(f"window {i} assigned twice ({seen[i]} and {where})")
        else:
            seen[i] = where

    for w, ids in assignment.worker_windows.items():
        for i in ids:
            place(i, f"worker {w}")
    for i in assignment.local:
        place(i, "local")

    missing = sorted(content - set(seen))
    if missing:
        v.append(f"content windows {missing} are neither sent nor local")
    sent = set(assignment.sent)
    if sent & padding:
        v.append(f"padding windows {sorted(sent & padding)} sent (they must stay cached on the edge)")
    if set(assignment.local) & padding:
        v.append(f"padding windows {sorted(set(assignment.local) & padding)} listed as local")
    if set(assignment.padding) != padding:
        v.append(f"padding list {list(assignment.padding)} != grid padding {sorted(padding)}")
    leaked = sorted(sent & constraints.keep_local)
    if leaked:
        v.append(f"keep-local windows {leaked} sent to a worker")

    cap = max_share(grid, assignment.n_workers, constraints)
    if worker_capacity is not None and len(worker_capacity) != assignment.n_workers:
        v.append(f"worker_capacity has {len(worker_capacity)} entries for {assignment.n_workers} workers")
        worker_capacity = None
    for w, ids in assignment.worker_windows.items():
        c = cap if worker_capacity is None else min(cap, worker_capacity[w])
        if len(ids) > c:
            v.append(f"worker {w} holds {len(ids)} windows, above its max share {c}")
        if len(content) >= 2 and content <= set(ids):
            v.append(f"worker {w} holds every content window (the whole image)")
        if constraints.adjacency == "require":
            pairs = _adjacent_pairs(grid, ids)
            if pairs:
                v.append(f"worker {w} holds adjacent windows {pairs} (adjacency='require')")

    bad_groups = []
    for g_idx, group in enumerate(constraints.spread_groups):
        counts = [len(group.intersection(ids)) for ids in assignment.worker_windows.values()]
        n_sent = sum(counts)
        if n_sent and max(counts) > spread_limit(n_sent, assignment.n_workers):
            bad_groups.append(g_idx)
    if bad_groups:
        # only a violation when a spread assignment of the same windows and loads exists
        loads = [len(ids) for ids in assignment.worker_windows.values()]
        if spread_feasible(grid, assignment.sent, loads, constraints.spread_groups):
            for g_idx in bad_groups:
                v.append(f"spread group {g_idx} has several windows on one worker although spreading is feasible")
    return v
