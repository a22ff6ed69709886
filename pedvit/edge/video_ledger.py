"""The ledger across a video: each video's frame records replayed on a scene mosaic to check coverage caps.

A `VideoSession` frame's ledger record carries ``extra.video = {"id", "frame", "offset": [dy, dx], "workers":
[names in the policy's order], "temporal", "coverage_cap"}`` next to the usual per-worker windows. This module
groups the records by video, orders them by frame and replays what each worker was sent with
`pedvit.video.coverage.coverage_violations`: a worker above the scene-coverage cap, a window sent to two
workers (unless the record lists it as failed over or hedged), a keep-local window sent. The cap is the auditor's (``--max-scene-coverage``), else the one the
records state (only as trustworthy as the chain that protects it).
"""

from __future__ import annotations

from typing import Any, Iterable

from pedvit.video.coverage import coverage_violations

__all__ = ["video_coverage_problems"]


def _frames(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Video id -> its frame records ordered by frame index (records without ``extra.video`` are skipped)."""
    videos: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        video = record.get("extra", {}).get("video")
        if isinstance(video, dict):
            videos.setdefault(str(video.get("id")), []).append(record)
    for frames in videos.values():
        frames.sort(key=lambda r: int(r["extra"]["video"]["frame"]))
    return videos


def _check_video(video_id: str, frames: list[dict[str, Any]], cap: float | None) -> list[str]:
    first = frames[0]["extra"]["video"]
    names = list(first["workers"])
    size = tuple(frames[0]["image_size"])
    indices = [int(r["extra"]["video"]["frame"]) for r in frames]
    problems = []
    if indices != list(range(len(frames))):
        problems.append(f"video {video_id}: frame indices {indices[:20]} are not 0..{len(frames) - 1} "
                        "(frames missing or recorded twice)")
    per_frame: list[dict[int, list[int]]] = []
    for index, record in zip(indices, frames):
        video = record["extra"]["video"]
        if list(video["workers"]) != names or tuple(record["image_size"]) != size:
            problems.append(f"video {video_id}: frame {index} changes the worker list or the frame size")
        sent: dict[int, list[int]] = {}
        for name, worker in record["workers"].items():
            if not worker["windows"]:
                continue
            if name not in names:
                problems.append(f"video {video_id}: frame {index}: worker {name} is not one of the video's workers")
                continue
            sent[names.index(name)] = list(worker["windows"])
        per_frame.append(sent)
    limit = cap if cap is not None else first.get("coverage_cap")
    violations = coverage_violations(
        (int(size[0]), int(size[1])), [r["extra"]["video"]["offset"] for r in frames], per_frame, max(1, len(names)),
        1.0 if limit is None else float(limit), keep_local=[set(r.get("keep_local", [])) for r in frames],
        window_tokens=int(frames[0].get("window_tokens", 14)),
        moved=[{int(row["window"]) for row in (*r.get("failovers", []), *r.get("hedges", []))} for r in frames],
    )
    # the replay numbers workers in the video's worker order: name them
    legend = ", ".join(f"{i}={name}" for i, name in enumerate(names))
    violations = [f"{v} (workers: {legend})" for v in violations]
    return problems + [f"video {video_id}: {v}" for v in violations]


def video_coverage_problems(records: Iterable[dict[str, Any]], cap: float | None = None) -> list[str]:
    """Violations of the scene-coverage cap (``cap``; None: the cap each video's records state, no cap when
    they state none) and of the per-frame rules, over every video in `records`."""
    problems: list[str] = []
    for video_id, frames in sorted(_frames(records).items()):
        problems += _check_video(video_id, frames, cap)
    return problems
