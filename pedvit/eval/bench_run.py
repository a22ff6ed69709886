"""One `pedvit bench` run: the interleaved rows (`perf_bench`), the projection's parts (`projection`), the
machine's load around them (`bench_noise`), the targets with verdicts only where the run is trusted, and the
headline numbers. Returns everything `--json` writes.

Order: per model, the main rows (baselines + plan x N, interleaved), then the projection's calibration
(each plan x N with serialised workers on one pinned worker process, interleaved). The load average and the
CPU steal ticks are read before the first and after the last request.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pedvit.cloud.launch import start_worker, stop_workers

from .bench_noise import NO_VERDICT, TrustPolicy, read_system, system_report, untrusted_reasons
from .perf_bench import (DEFAULT_PLANS, BenchOptions, CodecSpeed, Config, bench_worker_argv, load_image, load_model,
                         measure_split, open_split_predictor, progress_bar, requests_per_model, run_interleaved,
                         run_model, summarise)
from .perf_report import targets
from .projection import (LINKS, LOOPBACK, RequestParts, calibration_executors, median_parts, parts_of_request,
                         project, projection_rows, relative_error, time_edge_windows)

#: Rough seconds per request on a quiet 2-core machine (monolithic MobileSAM encode ~2 s): only for the
#: estimate printed before the run; the progress bar's ETA comes from the run itself.
ROUGH_REQUEST_S = {"mobile_sam": 2.0, "vit_b": 9.0, "vit_l": 25.0, "vit_h": 50.0}
ROUGH_WORKER_START_S = 4.0
#: The projection's validation bar (issue 27): projected within 15 % of measured.
PROJECTION_TOLERANCE = 0.15
#: The configuration of the headline numbers.
HEADLINE = ("mobile_sam", "tinyvit-isolated", 4)


def _plans(options: BenchOptions, model: str) -> tuple[str, ...]:
    return options.plans.get(model, DEFAULT_PLANS[model])


def calibration_requests(options: BenchOptions, model: str) -> int:
    """Requests (warm-ups included) of one model's projection calibration: each plan x N."""
    return len(_plans(options, model)) * len(options.workers) * (1 + options.repeats) if options.project else 0


def describe(options: BenchOptions) -> str:
    """What the run will do and a rough duration (printed before it starts)."""
    requests = {m: requests_per_model(options, m) + calibration_requests(options, m) for m in options.models}
    seconds = sum(ROUGH_REQUEST_S.get(m, 10.0) * n for m, n in requests.items())
    seconds += ROUGH_WORKER_START_S * (max(options.workers) + (1 if options.project else 0)) * len(options.models)
    plans = "; ".join(f"{m}: {', '.join(_plans(options, m))}" for m in options.models)
    return (f"pedvit bench: models {', '.join(options.models)} (plans {plans}), N = "
            f"{', '.join(map(str, options.workers))}, {options.repeats} repeats interleaved after one warm-up each"
            f"{', + projection calibration' if options.project else ''}: {sum(requests.values())} requests, "
            f"roughly {seconds / 60:.1f} min on a quiet 2-core machine")


# ------------------------------------------------------------------------------------------ calibration
def calibration_cores() -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """(edge core, worker core): the first and the last core, or (None, None) on a single core."""
    cores = sorted(os.sched_getaffinity(0))
    return ((cores[0],), (cores[-1],)) if len(cores) >= 2 else (None, None)


def calibrate(model: Any, options: BenchOptions, image: np.ndarray, codec: CodecSpeed,
              bar: Any) -> tuple[dict[tuple[str, str, int], RequestParts], list[dict[str, Any]]]:
    """The projection's parts of each plan x N (medians), and a summary row of each calibration config (its
    measured end-to-end samples: N = 1 is the loopback validation). One worker process, pinned to the last
    core with one thread; the edge pinned to the first core with one torch thread while this runs."""
    import torch

    edge_core, worker_core = calibration_cores()
    logs = tempfile.TemporaryDirectory(prefix="pedvit-bench-calibration-")
    previous_affinity, previous_threads = os.sched_getaffinity(0), torch.get_num_threads()
    opened: list[Any] = []
    parts: dict[tuple[str, str, int], list[RequestParts]] = {}
    try:
        worker = start_worker(bench_worker_argv(model.name, device=options.device, threads=1), Path(logs.name) / "p.log",
                              name="calibration", own_session=True, cpus=worker_core, env={"OMP_NUM_THREADS": "1"})
        opened.append(_Stop(worker))
        if edge_core:
            os.sched_setaffinity(0, edge_core)
        torch.set_num_threads(1)
        configs = []
        for plan in _plans(options, model.name):
            for n in options.workers:
                executors, log = calibration_executors(worker.address, n)
                predictor = open_split_predictor(model, executors, plan, options)
                time_edge_windows(predictor, log)
                opened.append(predictor)
                key = (model.name, plan, n)
                parts[key] = []

                def measure(p: Any = predictor, lg: Any = log, k: tuple[str, str, int] = key) -> Any:
                    sample = measure_split(p, image, codec)
                    parts[k].append(parts_of_request(lg, sample.preprocess_s, sample.merge_s, sample.decode_s))
                    return sample

                configs.append(Config(plan, n, measure))
        samples = run_interleaved(configs, options.repeats, bar)
    finally:
        for item in reversed(opened):
            item.close()
        torch.set_num_threads(previous_threads)
        os.sched_setaffinity(0, previous_affinity)
        logs.cleanup()
    # Each config's first request was its warm-up.
    medians = {key: median_parts(values[1:]) for key, values in parts.items()}
    rows = [{"model": model.name, "plan": c.plan, "workers": c.workers, "network": "loopback, serialised",
             "edge_core": list(edge_core or ()), "worker_core": list(worker_core or ()), **summarise(s)}
            for c, s in zip(configs, samples)]
    return medians, rows


class _Stop:
    """Adapter: `close()` stops a worker process (so the calibration's `finally` closes everything alike)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def close(self) -> None:
        stop_workers([self.worker])


# ------------------------------------------------------------------------------------------ validation
def validate(measured_row: dict[str, Any], link_name: str, projected_s: float,
             system: dict[str, Any], policy: TrustPolicy) -> dict[str, Any]:
    """Projected vs measured end-to-end of one case; a PASS/FAIL against the 15 % bar only when trusted."""
    error = relative_error(projected_s, measured_row["end_to_end_s"])
    reasons = untrusted_reasons([measured_row], system, policy)
    result = NO_VERDICT if reasons else ("PASS" if error <= PROJECTION_TOLERANCE else "FAIL")
    return {"model": measured_row["model"], "plan": measured_row["plan"], "workers": measured_row["workers"],
            "link": link_name, "measured_s": measured_row["end_to_end_s"], "projected_s": projected_s,
            "relative_error": error, "limit": PROJECTION_TOLERANCE, "result": result,
            **({"reason": "; ".join(reasons)} if reasons else {})}


def loopback_validation(parts: dict[tuple[str, str, int], RequestParts], calibration_rows: Sequence[dict[str, Any]],
                        system: dict[str, Any], policy: TrustPolicy) -> list[dict[str, Any]]:
    """N = 1 (one worker on its own core, the edge on the other, loopback): measured vs projected."""
    out = []
    for row in calibration_rows:
        key = (row["model"], row["plan"], row["workers"])
        if row["workers"] == 1 and key in parts:
            out.append(validate(row, LOOPBACK.name, project(parts[key], LOOPBACK), system, policy))
    return out


# ------------------------------------------------------------------------------------------ the run
def headline(rows: Sequence[dict[str, Any]], projections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's headline numbers for MobileSAM tinyvit-isolated with 4 workers (None where not run):
    `latency_ratio`, `edge_cpu_share`, `overhead_share`, and `projected_latency_ratio` per link and N."""
    model, plan, n = HEADLINE
    row = next((r for r in rows if (r["model"], r["plan"], r["workers"]) == HEADLINE), None)
    projected: dict[str, dict[str, float]] = {}
    for p in projections:
        if (p["model"], p["plan"]) == (model, plan):
            projected.setdefault(p["link"], {})[str(p["workers"])] = p["projected_latency_ratio"]
    return {"configuration": f"{model} {plan}, {n} workers",
            "latency_ratio": row["latency_ratio_vs_monolithic"] if row else None,
            "edge_cpu_share": row["edge_cpu_share"] if row else None,
            "overhead_share": row["overhead_share"] if row else None,
            "projected_latency_ratio": projected}


def run_bench(options: BenchOptions, policy: TrustPolicy = TrustPolicy()) -> dict[str, Any]:
    """Run everything `options` asks for; returns the JSON document (rows, projection, targets, system)."""
    import torch

    if options.edge_threads:
        torch.set_num_threads(options.edge_threads)  # the edge (and the monolithic baseline) use this many
    print(describe(options), file=sys.stderr, flush=True)
    image = load_image(options.image)
    codec = CodecSpeed.measure()
    total = sum(requests_per_model(options, m) + calibration_requests(options, m) for m in options.models)
    bar = progress_bar(total, options.progress, "requests")
    before = read_system()
    rows: list[dict[str, Any]] = []
    calibration_rows: list[dict[str, Any]] = []
    parts: dict[tuple[str, str, int], RequestParts] = {}
    try:
        for name in options.models:
            model = load_model(name, options.device)
            rows += run_model(model, options, image, codec, bar)
            if options.project:
                model_parts, model_rows = calibrate(model, options, image, codec, bar)
                parts.update(model_parts)
                calibration_rows += model_rows
    finally:
        bar.close()
    system = system_report(before, read_system())
    monolithic = {r["model"]: r["end_to_end_s"] for r in rows if r["plan"] == "monolithic"}
    projections = projection_rows(parts, monolithic, LINKS)
    return {
        "rows": rows,
        "targets": targets(rows, system, policy),
        "system": system,
        "trust": {"max_spread": policy.max_spread, "min_samples": policy.min_samples,
                  "max_load_per_core": policy.max_load_per_core, "max_steal": policy.max_steal},
        "projection": {"rows": projections, "calibration_rows": calibration_rows,
                       "validation": loopback_validation(parts, calibration_rows, system, policy),
                       "parts": {f"{m}|{p}|{n}": v.to_dict() for (m, p, n), v in parts.items()}},
        "headline": headline(rows, projections),
    }
