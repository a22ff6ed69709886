"""Tests of the scheduler simulation benchmark (tiny configurations)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pedvit.cli import build_parser, main
from pedvit.eval.schedule_bench import content_ids, king_neighbours, run_bench

REQUIRED = {"workers", "makespan_over_lower_bound", "equal_split_over_lower_bound",
            "makespan_over_lower_bound_p90", "equal_split_over_lower_bound_p90", "failure_rate", "cap"}


def test_grid_helpers() -> None:
    assert len(content_ids("square")) == 25 and len(content_ids("4:3")) == 20
    assert sorted(king_neighbours(0)) == [1, 5, 6]
    assert len(king_neighbours(12)) == 8


def test_tiny_bench_rows() -> None:
    rows = run_bench((4, 8), (None, 3), progress=False, requests=20, seed=1, fail_rate=0.05)
    assert len(rows) == 4
    for r in rows:
        assert REQUIRED <= set(r)
        assert r["makespan_over_lower_bound"] >= 1.0 - 1e-9  # the oracle bound is a true bound
        assert r["equal_split_over_lower_bound"] >= 1.0 - 1e-9
        assert abs(r["predicted_over_estimated_lower_bound"] - 1.0) < 1e-9  # counts are optimal
        assert 0.0 <= r["failure_rate"] <= 1.0
    # Deterministic for a seed.
    def strip(rows: list[dict]) -> list[dict]:  # timings are wall-clock, not seeded
        return [{k: v for k, v in r.items() if not k.startswith("schedule_ms")} for r in rows]

    assert strip(run_bench((4,), (None,), progress=False, requests=10, seed=1)) == \
        strip(run_bench((4,), (None,), progress=False, requests=10, seed=1))


def test_scheduler_beats_equal_split_with_4x_spread() -> None:
    rows = run_bench((16,), (None,), progress=False, requests=30, seed=0, fail_rate=0.0)
    assert rows[0]["makespan_over_lower_bound"] < rows[0]["equal_split_over_lower_bound"] * 0.8


def test_cli_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "schedule", "--workers", "4", "--requests", "8", "--json", str(out), "--no-progress"]) == 0
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and len(rows) == 2 and REQUIRED <= set(rows[0])
    assert "sched/LB" in capsys.readouterr().out
    # bench group wiring
    args = build_parser().parse_args(["bench", "schedule", "--workers", "4,8", "--requests", "3", "--caps", "auto"])
    assert args.workers == [4, 8] and args.caps == [None] and callable(args.func)
    assert args.func is not build_parser().parse_args(["bench"]).func  # `bench` alone runs the performance benchmark


def test_module_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "pedvit", "bench", "schedule", "--workers", "4", "--caps", "2",
                        "--requests", "4", "--json", str(out), "--no-progress"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())[0]["workers"] == 4
