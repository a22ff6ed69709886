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
* ``semantic``: the interleaved assignment driven by detected content (``detectors.constraints_for_image``):
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

from .check import check_assignment
from .constraints import Assignment, ConstraintError, Constraints, _adjacent_pairs, max_share, share_cap
from .geometry import WindowGrid
from .search import ColouringProblem, balanced_loads

__all__ = ["SCHEMES", "assign"]

SCHEMES = ("contiguous", "interleaved", "random", "semantic")

_W_HI, _W_LO = 1000, 1  # lexicographic weights: spread-group excess before adjacent pairs


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
    targets = balanced_loads(caps, len(send))
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
        prob = ColouringProblem(grid, send, n_workers, c.spread_groups)
        wa = 1 if use_adj else 0
        wg = 1 if prob.groups else 0
        targets = balanced_loads(caps, len(send))
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
