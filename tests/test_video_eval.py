"""The video evaluation end to end on a short, small clip: JSON, figure and the headline relations."""

from __future__ import annotations

import json

from pedvit.eval.video_eval import main


def test_video_eval_writes_results_and_figure(tmp_path) -> None:
    out, fig, maps = tmp_path / "video.json", tmp_path / "fig" / "coverage.png", tmp_path / "maps.png"
    rc = main(["--frames", "120", "--frame-size", "240", "320", "--scale", "1.0", "--static-frames", "12",
               "--json", str(out), "--figure", str(fig), "--maps-figure", str(maps)])
    assert rc == 0 and fig.stat().st_size > 10_000 and maps.stat().st_size > 10_000
    r = json.loads(out.read_text())
    pol = r["policies"]
    assert set(pol) == {"naive-random", "naive-interleaved", "sticky", "sticky+cap0.30",
                        "sticky+cap0.30 confined", "sticky+cap0.30 (8 workers)"}
    naive, capped = pol["naive-random"], pol["sticky+cap0.30"]
    assert list(naive["coverage_at"]) == ["30", "100"]  # 300 is past the end of a 120-frame clip
    assert len(naive["coverage_at"]["30"]) == 4 and len(naive["max_coverage_curve"]) == 120
    assert capped["max_worker_scene_coverage_any_frame"] <= 0.30
    assert pol["sticky+cap0.30 confined"]["max_worker_scene_coverage_any_frame"] <= 0.30
    assert naive["max_worker_scene_coverage"] > capped["max_worker_scene_coverage"] + 0.3
    assert naive["held_back_per_frame_mean"] == 0 and capped["held_back_per_frame_mean"] > 0
    assert r["motion"]["step_error_px_max"] < 0.5
    assert r["reuse_static_camera"]["sent_share"] <= 0.5
    assert {(row["workers"], row["cap"]) for row in r["cap_sweep"]} >= {(4, 0.3), (8, 0.3)}
