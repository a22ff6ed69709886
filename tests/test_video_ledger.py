"""`pedvit ledger check` across a video, without a model: frame records replayed on the scene mosaic."""

from __future__ import annotations

from typing import Any

from pedvit.edge.video_ledger import video_coverage_problems
from pedvit.partition import WindowGrid

SIZE = (480, 640)
NAMES = ["a", "b"]


def _record(frame: int, offset: tuple[float, float], sent: dict[str, list[int]], cap: float | None = 0.5,
            keep_local: tuple[int, ...] = ()) -> dict[str, Any]:
    return {
        "image_size": list(SIZE), "window_tokens": 14, "keep_local": list(keep_local),
        "workers": {name: {"windows": sent.get(name, [])} for name in NAMES},
        "extra": {"video": {"id": "v", "frame": frame, "offset": list(offset), "workers": NAMES,
                            "coverage_cap": cap}},
    }


def test_a_clean_video_passes_and_records_without_video_are_ignored() -> None:
    records = [_record(1, (0, 30), {"a": [0], "b": [1]}), _record(0, (0, 0), {"a": [0], "b": [1]}),
               {"workers": {}, "extra": {}}]
    assert video_coverage_problems(records) == []


def test_cap_breach_keep_local_window_and_missing_frames_are_reported() -> None:
    content = WindowGrid(SIZE).content_ids
    greedy = _record(0, (0, 0), {"a": content[:12]}, keep_local=(content[0],))
    problems = video_coverage_problems([greedy, _record(2, (0, 10), {})])
    assert any("frame indices [0, 2]" in p for p in problems)
    assert any("keep-local window" in p for p in problems)
    assert any("worker 0 has seen" in p and "above the cap 0.5" in p and "0=a" in p for p in problems)
    # the auditor's cap overrides the one the records state
    assert not any("above the cap" in p for p in video_coverage_problems([_record(0, (0, 0), {"a": content[:12]})], 0.9))


def test_an_unknown_worker_is_reported() -> None:
    record = _record(0, (0, 0), {})
    record["workers"]["intruder"] = {"windows": [3]}
    assert any("intruder is not one of the video's workers" in p for p in video_coverage_problems([record]))
