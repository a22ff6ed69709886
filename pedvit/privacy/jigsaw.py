"""Jigsaw attack: a worker whose windows arrive without positions tries to put them back in place.

With position hiding (`SplitEngine(hide_positions=True)`) a worker gets its windows shuffled and without
origins. What it still knows, and what this attacker is given (pessimistic for us):

* the slot layout: the image size and the window grid (every content window's box), hence each slot's size;
* each piece's size (windows of the last row or column of the grid are smaller: that is visible);
* the scheme's adjacency rule: with ``interleaved``/``semantic`` (and ``random``, which prefers it) no two
  windows of one worker touch, so its pieces go to pairwise non-adjacent slots;
* for a coalition, which member received which piece (so the rule holds per member);
* with a deterministic scheme (``interleaved`` and ``contiguous`` depend only on the grid and N), the slot
  sets the scheme hands out: the attacker can rerun the assignment, so it knows its piece set is one of N
  (``slot_sets``); it places its pieces in the candidate set that fits best. ``random`` draws a fresh
  assignment per image and ``semantic`` depends on what the edge detects: there it has only the rule.

Placement minimises an energy over piece -> slot maps: a learned position prior (a ridge regression from a
piece's colour / brightness / texture statistics to where such a piece sits in a photo, trained on the
training-only photos, ``weights/jigsaw_prior.json``), plus, for pieces placed side by side, the edge
continuity of the two borders (each side's border predicted from its two last rows or columns; normalised by
the median over all pairs so that good matches lower the energy), plus a large penalty per pair of one
member's pieces in touching slots. Solved by an assignment on the prior (Hungarian), then best-improvement
moves and swaps, from a few restarts. Scored by *placement accuracy*: the share of pieces put in their true
slot. The placed pieces then go to the inpainting attacks exactly as a view with known positions does.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from pedvit.partition import WindowGrid

__all__ = ["Slot", "Piece", "Placement", "slots_for", "cut_pieces", "piece_features", "place", "placed_view",
           "PRIOR_WEIGHTS"]

PRIOR_WEIGHTS = pathlib.Path(__file__).with_name("weights") / "jigsaw_prior.json"
_ADJACENT_PENALTY = 1e3
_INFEASIBLE = 1e6


@dataclass(frozen=True)
class Slot:
    """A content window's place in the attacked image: ``box`` (y0, x0, y1, x1) in its pixels."""

    id: int
    row: int
    col: int
    box: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


@dataclass(frozen=True)
class Piece:
    """One window as received: ``pixels`` (h x w x 3 uint8), its ``owner`` (worker), and the truth
    ``true_slot``, which only scoring reads."""

    pixels: np.ndarray
    owner: str
    true_slot: int


@dataclass(frozen=True)
class Placement:
    """The attacker's guess: piece index -> slot id, and its placement accuracy."""

    slots: tuple[int, ...]
    accuracy: float
    energy: float


def slots_for(grid: WindowGrid, shape: tuple[int, int]) -> list[Slot]:
    """The content windows of ``grid`` as slots of an image of ``shape`` (the original, or a downscaled copy:
    boxes are scaled and rounded edge by edge, so neighbouring slots share their borders)."""
    h, w = grid.original_size
    sy, sx = shape[0] / h, shape[1] / w
    out = []
    for wid in grid.content_ids:
        win = grid.window(wid)
        y0, x0, y1, x1 = win.original_box  # type: ignore[misc]
        out.append(Slot(wid, win.row, win.col, (round(y0 * sy), round(x0 * sx), round(y1 * sy), round(x1 * sx))))
    return out


def cut_pieces(image: np.ndarray, slots: Sequence[Slot], windows: Mapping[str, Sequence[int]]) -> list[Piece]:
    """The pieces a worker (or coalition: several owners) holds: owner -> window ids, cut from ``image``."""
    by_id = {s.id: s for s in slots}
    out = []
    for owner, ids in windows.items():
        for wid in ids:
            y0, x0, y1, x1 = by_id[wid].box
            out.append(Piece(np.ascontiguousarray(image[y0:y1, x0:x1]), str(owner), wid))
    return out


def piece_features(pixels: np.ndarray) -> np.ndarray:
    """16 statistics of a piece: mean and std of R, G, B; mean brightness of its top, bottom, left and right
    quarters; mean horizontal and vertical gradient; saturation; blue dominance; dark and bright shares."""
    p = pixels.astype(np.float32) / 255
    luma = p @ np.array([0.2125, 0.7154, 0.0721], np.float32)
    h, w = luma.shape
    qh, qw = max(1, h // 4), max(1, w // 4)
    gx = np.abs(np.diff(luma, axis=1)).mean() if w > 1 else 0.0
    gy = np.abs(np.diff(luma, axis=0)).mean() if h > 1 else 0.0
    mx, mn = p.max(axis=2), p.min(axis=2)
    return np.array([
        *p.reshape(-1, 3).mean(0), *p.reshape(-1, 3).std(0),
        luma[:qh].mean(), luma[-qh:].mean(), luma[:, :qw].mean(), luma[:, -qw:].mean(),
        gx, gy, (mx - mn).mean(), (p[..., 2] - p[..., :2].mean(2)).mean(),
        (luma < 0.15).mean(), (luma > 0.85).mean(),
    ], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _prior() -> tuple[np.ndarray, float] | None:
    """Ridge weights (17 x 2: features + bias -> normalised centre y, x) and the residual variance."""
    if not PRIOR_WEIGHTS.is_file():
        return None
    data = json.loads(PRIOR_WEIGHTS.read_text())
    return np.asarray(data["weights"], dtype=np.float64), float(data["residual_var"])


def _unary(pieces: Sequence[Piece], slots: Sequence[Slot], shape: tuple[int, int]) -> np.ndarray:
    """P x S: the prior's cost (squared distance of predicted to slot centre over twice the residual
    variance), or infeasible where the sizes differ (1 px of rounding tolerated)."""
    cost = np.zeros((len(pieces), len(slots)))
    prior = _prior()
    if prior is not None:
        weights, var = prior
        feats = np.stack([np.append(piece_features(p.pixels), 1.0) for p in pieces])
        pred = feats @ weights
        centres = np.array([((s.box[0] + s.box[2]) / 2 / shape[0], (s.box[1] + s.box[3]) / 2 / shape[1]) for s in slots])
        cost = ((pred[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * var)
    for i, p in enumerate(pieces):
        for j, s in enumerate(slots):
            if abs(p.pixels.shape[0] - s.shape[0]) > 1 or abs(p.pixels.shape[1] - s.shape[1]) > 1:
                cost[i, j] = _INFEASIBLE
    return cost


def _resample(edge: np.ndarray, n: int = 32) -> np.ndarray:
    idx = np.linspace(0, len(edge) - 1, n).round().astype(int)
    return edge[idx]


def _seam(a: np.ndarray, b: np.ndarray) -> float:
    """Dissimilarity of ``a``'s last column next to ``b``'s first (both h x w x 3 float): each border
    predicted linearly from its own side, averaged both ways."""
    if a.shape[1] < 2 or b.shape[1] < 2:
        return float(np.abs(_resample(a[:, -1]) - _resample(b[:, 0])).mean())
    pa = _resample(2 * a[:, -1] - a[:, -2]) - _resample(b[:, 0])
    pb = _resample(2 * b[:, 0] - b[:, 1]) - _resample(a[:, -1])
    return float((np.abs(pa).mean() + np.abs(pb).mean()) / 2)


def _pair_costs(pieces: Sequence[Piece]) -> tuple[np.ndarray, np.ndarray]:
    """P x P costs of piece i left of j and of i above j: seam dissimilarity over its median, minus one."""
    f = [p.pixels.astype(np.float32) for p in pieces]
    n = len(f)
    horizontal = np.zeros((n, n))
    vertical = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                horizontal[i, j] = _seam(f[i], f[j])
                vertical[i, j] = _seam(f[i].transpose(1, 0, 2), f[j].transpose(1, 0, 2))
    off = ~np.eye(n, dtype=bool)
    for m in (horizontal, vertical):
        if n > 1:
            m[off] = m[off] / max(1e-6, float(np.median(m[off]))) - 1.0
    return horizontal, vertical


class _Energy:
    """Energy of a map piece -> slot (see the module docstring); arrays over slot pairs for speed."""

    def __init__(self, pieces: Sequence[Piece], slots: Sequence[Slot], shape: tuple[int, int], non_adjacent: bool) -> None:
        self.unary = _unary(pieces, slots, shape)
        self.horizontal, self.vertical = _pair_costs(pieces)
        pos = {(s.row, s.col): j for j, s in enumerate(slots)}
        self.right = np.array([(j, pos[(s.row, s.col + 1)]) for j, s in enumerate(slots) if (s.row, s.col + 1) in pos]).reshape(-1, 2)
        self.below = np.array([(j, pos[(s.row + 1, s.col)]) for j, s in enumerate(slots) if (s.row + 1, s.col) in pos]).reshape(-1, 2)
        touching = {(j, pos[(s.row + dr, s.col + dc)]) for j, s in enumerate(slots) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                    if (dr or dc) and (s.row + dr, s.col + dc) in pos}
        self.touching = np.array(sorted(p for p in touching if p[0] < p[1])).reshape(-1, 2)
        owners = {o: k for k, o in enumerate(sorted({p.owner for p in pieces}))}
        self.owner = np.array([owners[p.owner] for p in pieces])
        self.non_adjacent = non_adjacent
        self.n_slots = len(slots)

    def __call__(self, assignment: np.ndarray) -> float:
        """``assignment``: P slot indices (distinct)."""
        occupant = np.full(self.n_slots, -1)
        occupant[assignment] = np.arange(len(assignment))
        e = float(self.unary[np.arange(len(assignment)), assignment].sum())
        for pairs, table in ((self.right, self.horizontal), (self.below, self.vertical)):
            if len(pairs):
                a, b = occupant[pairs[:, 0]], occupant[pairs[:, 1]]
                both = (a >= 0) & (b >= 0)
                e += float(table[a[both], b[both]].sum())
        if self.non_adjacent and len(self.touching):
            a, b = occupant[self.touching[:, 0]], occupant[self.touching[:, 1]]
            both = (a >= 0) & (b >= 0)
            e += _ADJACENT_PENALTY * int((self.owner[a[both]] == self.owner[b[both]]).sum())
        return e


def _improve(energy: _Energy, assignment: np.ndarray, max_passes: int = 30) -> tuple[np.ndarray, float]:
    """Best-improvement local search over moves to free slots and swaps of two pieces."""
    current = energy(assignment)
    for _ in range(max_passes):
        best, best_e = None, current
        occupant = np.full(energy.n_slots, -1)
        occupant[assignment] = np.arange(len(assignment))
        for i in range(len(assignment)):
            for t in range(energy.n_slots):
                if t == assignment[i] or energy.unary[i, t] >= _INFEASIBLE:
                    continue
                cand = assignment.copy()
                j = occupant[t]
                if j >= 0:
                    if energy.unary[j, assignment[i]] >= _INFEASIBLE:
                        continue
                    cand[j] = assignment[i]
                cand[i] = t
                e = energy(cand)
                if e < best_e - 1e-9:
                    best, best_e = cand, e
        if best is None:
            break
        assignment, current = best, best_e
    return assignment, current


def _solve(energy: _Energy, restarts: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Hungarian start on the unary costs (jittered after the first restart), then local search."""
    best, best_e = None, np.inf
    for r in range(max(1, restarts)):
        unary = energy.unary + (rng.normal(0, 0.5, energy.unary.shape) if r else 0.0)
        rows, cols = linear_sum_assignment(unary)
        start = np.empty(len(rows), dtype=int)
        start[rows] = cols
        assignment, e = _improve(energy, start)
        if e < best_e:
            best, best_e = assignment, e
    return best, best_e


def _restrict(energy: _Energy, members: np.ndarray, allowed: np.ndarray) -> None:
    """Make every slot outside ``allowed`` (slot indices) infeasible for the pieces ``members``."""
    outside = np.setdiff1d(np.arange(energy.n_slots), allowed)
    energy.unary[np.ix_(members, outside)] = _INFEASIBLE


def place(pieces: Sequence[Piece], slots: Sequence[Slot], shape: tuple[int, int], *, non_adjacent: bool = True,
          slot_sets: Sequence[Sequence[int]] | None = None, restarts: int = 3, seed: int = 0) -> Placement:
    """Put the pieces back (see the module docstring); ``shape`` is the attacked image's (H, W).

    ``slot_sets``: the window-id sets a deterministic scheme hands its workers; each owner's pieces then go
    into one of them (the one its pieces fit best alone; owners take distinct sets). A coalition can pick a
    wrong set for one member that way, so the placement is also solved without the sets and the one with
    more pieces in place is returned: an oracle choice (it reads the truth), pessimistic for us like the
    evaluation's best-of attack."""
    if not pieces:
        return Placement((), float("nan"), 0.0)
    if len(pieces) > len(slots):
        raise ValueError(f"{len(pieces)} pieces for {len(slots)} slots")
    rng = np.random.default_rng(seed)
    free = _Energy(pieces, slots, shape, non_adjacent)
    candidates = [_solve(free, restarts, rng)]
    if slot_sets:
        energy = _Energy(pieces, slots, shape, non_adjacent)
        index = {s.id: j for j, s in enumerate(slots)}
        sets = [np.array([index[w] for w in ids if w in index]) for ids in slot_sets]
        taken: set[int] = set()
        for owner in np.unique(energy.owner):
            members = np.flatnonzero(energy.owner == owner)
            scored = []
            for c, allowed in enumerate(sets):
                if c in taken or len(allowed) < len(members):
                    continue
                alone = _Energy([pieces[i] for i in members], [slots[j] for j in allowed], shape, non_adjacent)
                if (alone.unary.min(axis=1) >= _INFEASIBLE).any():
                    continue  # a piece's size fits no slot of this set
                scored.append((_solve(alone, 1, rng)[1], c))
            if scored:
                chosen = min(scored)[1]
                taken.add(chosen)
                _restrict(energy, members, sets[chosen])
        candidates.append(_solve(energy, restarts, rng))
    placements = []
    for assignment, e in candidates:
        slot_ids = tuple(slots[j].id for j in assignment)
        placements.append(Placement(slot_ids, float(np.mean([sid == p.true_slot for sid, p in zip(slot_ids, pieces)])), float(e)))
    return max(placements, key=lambda p: p.accuracy)


def placed_view(shape: tuple[int, int], pieces: Sequence[Piece], slots: Sequence[Slot], placement: Placement
                ) -> tuple[np.ndarray, np.ndarray]:
    """The attacker's view after placement: ``H x W x 3`` uint8 (pieces pasted where it guessed, zero
    elsewhere) and the ``H x W`` bool mask of the slots it filled."""
    by_id = {s.id: s for s in slots}
    view = np.zeros((*shape, 3), np.uint8)
    mask = np.zeros(shape, bool)
    for piece, sid in zip(pieces, placement.slots):
        y0, x0, y1, x1 = by_id[sid].box
        h, w = min(y1 - y0, piece.pixels.shape[0]), min(x1 - x0, piece.pixels.shape[1])
        view[y0:y0 + h, x0:x0 + w] = piece.pixels[:h, :w]
        mask[y0:y0 + h, x0:x0 + w] = True
    return view, mask
