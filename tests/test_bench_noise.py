"""`pedvit bench` knows its noise (pedvit.eval.bench_noise): interleaved order, spread, load and steal, and no
verdict on a run it does not trust. Synthetic rows; nothing here is timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pedvit.eval.bench_noise import (NO_VERDICT, SystemSample, TrustPolicy, apply_trust, interleaved, read_system,
                                     spread_summary, system_report, untrusted_reasons)
from pedvit.eval.bench_run import describe, headline, validate
from pedvit.eval.perf_bench import BenchOptions, Config, Sample, run_interleaved
from pedvit.eval.perf_report import markdown, targets

QUIET = {"cores": 2, "load_before": 0.5, "load_after": 0.8, "steal_share": 0.0}


def _row(plan: str, workers: int, end_to_end: list[float], **values: float) -> dict[str, Any]:
    spread = spread_summary(end_to_end)
    return {"model": "mobile_sam", "plan": plan, "workers": workers, "samples": len(end_to_end),
            "end_to_end_s": spread["median"], "end_to_end_min_s": spread["min"], "end_to_end_max_s": spread["max"],
            "end_to_end_spread": spread["spread"], **values}


def _rows(split_samples: list[float]) -> list[dict[str, Any]]:
    ratios = {"latency_ratio_vs_monolithic": 0.7, "edge_cpu_share": 0.05, "overhead_share": 0.02,
              "bytes_ratio_vs_cloud_only": 1.1}
    return [_row("monolithic", 0, [2.0, 2.05, 2.1], edge_cpu_s=4.0),
            _row("cloud-only", 1, [2.5, 2.5, 2.6], edge_cpu_s=0.1),
            _row("tinyvit-isolated", 4, split_samples, **ratios)]


def test_interleaved_order_is_round_robin() -> None:
    assert interleaved(["A", "B", "C"], 2) == ["A", "B", "C", "A", "B", "C"]
    with pytest.raises(ValueError, match="repeats"):
        interleaved(["A"], 0)


def test_run_interleaved_warms_up_each_config_then_alternates() -> None:
    calls: list[str] = []

    def config(name: str) -> Config:
        return Config(name, 1, lambda: calls.append(name) or Sample(1.0, 0.0, 0.0, 0.0, 0.0))

    class Bar:
        n = 0

        def update(self) -> None:
            self.n += 1

    bar = Bar()
    samples = run_interleaved([config("A"), config("B")], 3, bar)
    assert calls == ["A", "B", "A", "B", "A", "B", "A", "B"]  # warm-ups first, then A B A B A B
    assert [len(s) for s in samples] == [3, 3] and bar.n == 8


def test_spread_summary() -> None:
    assert spread_summary([1.0, 2.0, 4.0]) == {"min": 1.0, "median": 2.0, "max": 4.0, "spread": 1.5}
    assert spread_summary([3.0])["spread"] == 0.0


def test_steal_share_from_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3\n")
    before = read_system(str(stat))
    assert (before.steal_ticks, before.total_ticks) == (40, 1000)
    after = SystemSample(1.0, 140, 2000)  # 100 of the next 1000 ticks were stolen
    report = system_report(before, after, cores=2)
    assert report["steal_share"] == pytest.approx(0.1) and report["cores"] == 2
    assert read_system(str(tmp_path / "missing")).total_ticks == 0


def test_quiet_run_gets_verdicts_and_noisy_run_gets_none() -> None:
    quiet = targets(_rows([1.40, 1.45, 1.50]), QUIET)
    assert quiet[0]["result"] == "PASS" and quiet[0]["value"] == pytest.approx(0.7)
    assert "reason" not in quiet[0]
    noisy = targets(_rows([1.0, 1.4, 2.0]), QUIET)  # spread (2.0 - 1.0) / 1.4 = 71 %
    measured = [c for c in noisy if c["how"] == "measured" and c["value"] is not None]
    assert measured and all(c["result"] == NO_VERDICT for c in measured)
    assert "spread 71 % > 20 %" in measured[0]["reason"]
    assert "PASS" not in {c["result"] for c in measured}
    # The FLOP estimate is not a measurement: it keeps its verdict.
    assert next(c for c in noisy if c["how"] == "estimated from FLOPs")["result"] == "PASS"
    assert NO_VERDICT in markdown({"rows": _rows([1.0, 1.4, 2.0]), "targets": noisy, "system": QUIET})


def test_loaded_machine_steal_or_too_few_samples_give_no_verdict() -> None:
    policy = TrustPolicy()
    loaded = {**QUIET, "load_after": 7.5}
    assert untrusted_reasons([], loaded, policy) == ["load average 7.5 > 2 (2 cores)"]
    stolen = {**QUIET, "steal_share": 0.2}
    assert "CPU steal 20.0 % > 5 %" in untrusted_reasons([], stolen, policy)
    one_sample = _rows([1.4])
    assert "1 samples < 3" in untrusted_reasons(one_sample[2:], QUIET, policy)[0]
    # No machine report at all: nothing is known, no verdict.
    assert targets(_rows([1.40, 1.45, 1.50]))[0]["result"] == NO_VERDICT
    checks = apply_trust([{"target": "t", "value": 0.5, "limit": 1.0, "how": "measured", "result": "PASS"}],
                         {"t": _rows([1.40, 1.45, 1.50])}, loaded, policy)
    assert checks[0]["result"] == NO_VERDICT and "load average" in checks[0]["reason"]


def test_projection_validation_verdict_only_when_trusted() -> None:
    row = _row("tinyvit-isolated", 1, [2.0, 2.1, 2.2])
    assert validate(row, "loopback", 2.2, QUIET, TrustPolicy())["result"] == "PASS"  # 4.8 % off
    assert validate(row, "loopback", 3.0, QUIET, TrustPolicy())["result"] == "FAIL"  # 43 % off
    noisy = validate(_row("tinyvit-isolated", 1, [1.0, 2.1, 3.0]), "loopback", 2.1, QUIET, TrustPolicy())
    assert noisy["result"] == NO_VERDICT and noisy["relative_error"] == pytest.approx(0.0)


def test_headline_keys_and_up_front_description() -> None:
    rows = _rows([1.40, 1.45, 1.50])
    projections = [{"model": "mobile_sam", "plan": "tinyvit-isolated", "workers": 4, "link": "1 Gbit/s, 5 ms",
                    "projected_latency_ratio": 0.4}]
    top = headline(rows, projections)
    assert top["latency_ratio"] == pytest.approx(0.7) and top["edge_cpu_share"] == pytest.approx(0.05)
    assert top["overhead_share"] == pytest.approx(0.02)
    assert top["projected_latency_ratio"] == {"1 Gbit/s, 5 ms": {"4": 0.4}}
    assert headline(rows[:2], [])["latency_ratio"] is None
    text = describe(BenchOptions())
    # 5 configs x (1 + 5) + projection 3 x (1 + 5) requests
    assert "N = 1, 2, 4" in text and "48 requests" in text and "min on a quiet 2-core machine" in text
