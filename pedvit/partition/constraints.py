"""Assignment constraints and the assignment record (the checker run before anything is sent: `check`).

A window is *assignable* when it holds image content and is not ``keep_local``. Every assignable window
goes to exactly one worker or, when constraints leave it unassignable, to the edge (``local``). Pure-padding
windows are never sent: their encoder output is the same for every image and is cached on the edge.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import AbstractSet, Iterable, Literal, Sequence

from .geometry import WindowGrid

__all__ = [
    "Adjacency",
    "Assignment",
    "ConstraintError",
    "Constraints",
    "max_share",
    "placement_cost",
    "share_cap",
    "spread_limit",
]

Adjacency = Literal["off", "prefer", "require"]
_ADJ = ("off", "prefer", "require")


class ConstraintError(ValueError):
    """Constraints that cannot be met; raised before anything is sent. The message says what to change."""


@dataclass(frozen=True)
class Constraints:
    """What an assignment must (or should) respect.

    Attributes:
        max_windows_per_worker: most windows one worker may hold; None -> ``ceil(n_assignable / n_workers)``.
        adjacency: may one worker hold two 8-adjacent windows? "off": don't care; "prefer": minimise such
            pairs (noted in ``Assignment.notes`` when some remain); "require": never (excess windows stay on
            the edge when ``allow_local``, else ConstraintError).
        keep_local: windows that are never sent (e.g. a face); always computed on the edge.
        spread_groups: windows of one detected object; spread over different workers — at most
            ``ceil(n_sent / n_workers)`` windows of a group per worker (one when the group is no larger than
            the worker count) wherever that is feasible.
        allow_local: may the edge compute content windows itself when constraints leave some unassignable
            (``keep_local`` windows are local regardless).
    """

    max_windows_per_worker: int | None = None
    adjacency: Adjacency = "prefer"
    keep_local: frozenset[int] = frozenset()
    spread_groups: tuple[frozenset[int], ...] = ()
    allow_local: bool = True

    def __post_init__(self) -> None:
        m = self.max_windows_per_worker
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m <= 0):
            raise ValueError(f"max_windows_per_worker must be a positive int or None, got {m!r}")
        if self.adjacency not in _ADJ:
            raise ValueError(f"adjacency must be one of {_ADJ}, got {self.adjacency!r}")
        object.__setattr__(self, "keep_local", frozenset(int(i) for i in self.keep_local))
        object.__setattr__(
            self, "spread_groups", tuple(frozenset(int(i) for i in g) for g in self.spread_groups)
        )


@dataclass(frozen=True)
class Assignment:
    """Which worker computes which window.

    Attributes:
        worker_windows: worker index (0..n_workers-1, every worker present, possibly empty) -> sorted ids.
        local: content windows the edge computes (keep_local plus any overflow), sorted.
        padding: pure-padding windows (never sent; cached on the edge), sorted.
        scheme: the scheme that produced it.
        notes: human-readable relaxations, e.g. "adjacency relaxed: ...".
    """

    worker_windows: dict[int, tuple[int, ...]]
    local: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    scheme: str = ""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        ww = {int(k): tuple(sorted(int(i) for i in v)) for k, v in sorted(self.worker_windows.items())}
        object.__setattr__(self, "worker_windows", ww)
        object.__setattr__(self, "local", tuple(sorted(int(i) for i in self.local)))
        object.__setattr__(self, "padding", tuple(sorted(int(i) for i in self.padding)))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    @property
    def n_workers(self) -> int:
        return len(self.worker_windows)

    @property
    def sent(self) -> tuple[int, ...]:
        """All window ids sent to some worker, sorted."""
        return tuple(sorted(i for v in self.worker_windows.values() for i in v))

    def worker_of(self, window_id: int) -> int | None:
        """The worker holding ``window_id``; None when it is local, padding or unknown."""
        for w, ids in self.worker_windows.items():
            if window_id in ids:
                return w
        return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "worker_windows": {str(k): list(v) for k, v in self.worker_windows.items()},
                "local": list(self.local),
                "padding": list(self.padding),
                "scheme": self.scheme,
                "notes": list(self.notes),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> "Assignment":
        d = json.loads(text)
        return cls(
            worker_windows={int(k): tuple(v) for k, v in d["worker_windows"].items()},
            local=tuple(d.get("local", ())),
            padding=tuple(d.get("padding", ())),
            scheme=d.get("scheme", ""),
            notes=tuple(d.get("notes", ())),
        )


def max_share(grid: WindowGrid, n_workers: int, constraints: Constraints) -> int:
    """The most windows one worker may hold: the explicit cap, or ``ceil(n_assignable / n_workers)``."""
    if constraints.max_windows_per_worker is not None:
        return constraints.max_windows_per_worker
    n_assignable = len(set(grid.content_ids) - constraints.keep_local)
    return max(1, math.ceil(n_assignable / max(1, n_workers)))


def share_cap(max_per_worker: int, n_content: int) -> int:
    """The share cap with never-the-whole-image folded in: at most ``n_content - 1`` windows per worker when
    the image has >= 2 content windows (a worker only ever holds content windows, so a count suffices)."""
    return max_per_worker if n_content < 2 else min(max_per_worker, n_content - 1)


def spread_limit(group_size: int, n_workers: int) -> int:
    """Most windows of one spread group a worker may hold: ``ceil(group_size / n_workers)``, i.e. one when
    the group is no larger than the worker count."""
    return max(1, math.ceil(group_size / max(1, n_workers)))


def placement_cost(
    window: int,
    held: AbstractSet[int],
    *,
    cap: int,
    neighbours: Iterable[int],
    adjacency: Adjacency,
    spread_groups: Iterable[frozenset[int]],
    n_workers: int,
) -> int | None:
    """May a worker holding ``held`` also take ``window`` (failover, hedging), and at what soft cost?

    The one place the engine's re-placements check the constraints. Hard: the worker does not hold the window
    yet, stays within ``cap`` (pass `share_cap`, which includes never-the-whole-image), holds at most
    `spread_limit` windows of each spread group and, under ``"require"``, no window adjacent to it.

    Returns:
        None when a hard constraint would break; else the new same-worker adjacent pairs under ``"prefer"``
        (callers rank legal workers by it first) and 0 under ``"off"``.
    """
    if window in held or len(held) + 1 > cap:
        return None
    if any(window in g and len(g & held) + 1 > spread_limit(len(g), n_workers) for g in spread_groups):
        return None
    if adjacency == "off":
        return 0
    pairs = sum(1 for n in neighbours if n in held)
    if adjacency == "require" and pairs:
        return None
    return pairs


def _adjacent_pairs(grid: WindowGrid, ids: Sequence[int]) -> list[tuple[int, int]]:
    s = set(ids)
    return [(a, b) for a in sorted(s) for b in grid.neighbours(a) if b in s and a < b]
