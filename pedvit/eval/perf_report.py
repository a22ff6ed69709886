"""`pedvit bench`'s report: the targets checked against the measured rows (`pedvit.eval.perf_bench`), the
Markdown table and the latency-breakdown plot."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .bench_noise import TrustPolicy, apply_trust


# ------------------------------------------------------------------------------------------ targets
#: ViT-H / ViT-B image-encoder FLOPs ratio split: (window-block FLOPs share, global-block FLOPs share) are
#: estimated analytically in `vit_edge_flop_share`.
def vit_edge_flop_share(depth: int, dim: int, global_blocks: int, tokens_side: int = 64, window: int = 14) -> float:
    """Share of a SAM ViT encoder's block FLOPs in its global-attention blocks (what vit-exact runs on the
    edge; patch embed and neck are small and ignored).

    Per block: 24 N C^2 for qkv/proj/MLP (4C hidden) plus 4 N M C for attention over M keys
    (M = N for global blocks, window^2 for window blocks, padded to whole windows).
    """
    n = tokens_side * tokens_side
    padded = (-(-tokens_side // window) * window) ** 2
    linear = 24 * dim * dim
    global_flops = n * (linear + 4 * n * dim)
    window_flops = padded * (linear + 4 * window * window * dim)
    return global_blocks * global_flops / (global_blocks * global_flops + (depth - global_blocks) * window_flops)


def targets(rows: Sequence[dict[str, Any]], system: dict[str, Any] | None = None,
            policy: TrustPolicy | None = None) -> list[dict[str, Any]]:
    """PASS/FAIL of each target against the measured rows (missing rows are reported as not measured).

    With `system` (`bench_noise.system_report`), a measured target gets a verdict only when the run is trusted
    (`bench_noise.apply_trust`: the spread of the rows it uses, the load and the steal); otherwise its result
    is "noisy: no verdict" with a `reason`. Without `system` every measured target is "noisy: no verdict"
    (nothing is known about the run). Estimates (FLOP counts) always keep their verdict.
    """

    def find(model: str, plan: str, workers: int | None = None) -> dict[str, Any] | None:
        hits = [r for r in rows if r["model"] == model and r["plan"] == plan and (workers is None or r["workers"] == workers)]
        return hits[0] if hits else None

    out: list[dict[str, Any]] = []
    rows_of: dict[str, list[dict[str, Any]]] = {}

    def check(name: str, row: dict[str, Any] | None, key: str, limit: float, baselines: Sequence[str]) -> None:
        value = None if row is None else float(row[key])
        out.append({"target": name, "value": value, "limit": limit, "how": "measured",
                    "result": "n/a" if value is None else ("PASS" if value <= limit else "FAIL")})
        if row is not None:
            used = [row] + [b for b in (find(row["model"], plan) for plan in baselines) if b is not None]
            rows_of[name] = used

    tiny4 = find("mobile_sam", "tinyvit-isolated", 4)
    check("MobileSAM tinyvit-isolated, 4 workers: end-to-end / monolithic", tiny4, "latency_ratio_vs_monolithic", 0.8, ["monolithic"])
    check("MobileSAM tinyvit-isolated, 4 workers: edge CPU / monolithic encode CPU", tiny4, "edge_cpu_share", 0.10, ["monolithic"])
    check("MobileSAM tinyvit-isolated, 4 workers: orchestration overhead / end-to-end", tiny4, "overhead_share", 0.05, [])
    check("MobileSAM tinyvit-isolated, 4 workers: bytes / cloud-only", tiny4, "bytes_ratio_vs_cloud_only", 1.5, ["cloud-only"])
    check("ViT-B vit-exact, 4 workers: edge CPU / monolithic encode CPU", find("vit_b", "vit-exact", 4), "edge_cpu_share", 0.50, ["monolithic"])
    vit_h = find("vit_h", "vit-exact", 4)
    if vit_h is not None:
        check("ViT-H vit-exact, 4 workers: edge CPU / monolithic encode CPU", vit_h, "edge_cpu_share", 0.20, ["monolithic"])
    else:
        share = vit_edge_flop_share(depth=32, dim=1280, global_blocks=4)
        out.append({"target": "ViT-H vit-exact: edge share of encoder FLOPs (global blocks)", "value": share, "limit": 0.20,
                    "how": "estimated from FLOPs", "result": "PASS" if share <= 0.20 else "FAIL"})
    unknown = {"cores": 1, "load_before": float("inf"), "load_after": float("inf"), "steal_share": 0.0}
    return apply_trust(out, rows_of, system if system is not None else unknown, policy or TrustPolicy())


# ------------------------------------------------------------------------------------------ output
TABLE_COLUMNS = (
    ("model", "model", "{}"), ("plan", "plan", "{}"), ("workers", "N", "{}"),
    ("end_to_end_min_s", "e2e min ms", "ms"), ("end_to_end_s", "e2e median ms", "ms"),
    ("end_to_end_spread", "spread", "pct"), ("samples", "n", "{}"), ("latency_ratio_vs_monolithic", "x mono", "{:.2f}"),
    ("preprocess_s", "prep ms", "ms"), ("worker_compute_s", "worker ms", "ms"), ("serialise_s", "codec ms", "ms"),
    ("transfer_s", "xfer+queue ms", "ms"), ("merge_s", "merge ms", "ms"), ("decode_s", "decoder ms", "ms"),
    ("edge_cpu_share", "edge CPU", "pct"), ("overhead_share", "overhead", "pct"),
    ("bytes_total", "KiB", "kib"), ("bytes_ratio_vs_cloud_only", "x cloud", "{:.2f}"),
)
CALIBRATION_COLUMNS = (
    ("model", "model", "{}"), ("plan", "plan", "{}"), ("workers", "N", "{}"), ("end_to_end_min_s", "e2e min ms", "ms"),
    ("end_to_end_s", "e2e median ms", "ms"), ("end_to_end_spread", "spread", "pct"), ("samples", "n", "{}"),
    ("preprocess_s", "prep ms", "ms"), ("merge_s", "merge ms", "ms"), ("decode_s", "decoder ms", "ms"),
)
PROJECTION_COLUMNS = (
    ("model", "model", "{}"), ("plan", "plan", "{}"), ("workers", "N", "{}"), ("link", "link", "{}"),
    ("projected_s", "projected ms", "ms"), ("projected_latency_ratio", "x mono", "{:.2f}"),
)
VALIDATION_COLUMNS = (
    ("model", "model", "{}"), ("plan", "plan", "{}"), ("workers", "N", "{}"), ("link", "link", "{}"),
    ("measured_s", "measured ms", "ms"), ("projected_s", "projected ms", "ms"), ("relative_error", "error", "pct"),
    ("result", "result (<= 15 %)", "{}"),
)


def _fmt(value: Any, fmt: str) -> str:
    if fmt == "ms":
        return f"{1000 * value:.0f}"
    if fmt == "pct":
        return f"{100 * value:.0f} %"
    if fmt == "kib":
        return f"{value / 1024:.0f}"
    return fmt.format(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> list[str]:
    """Markdown table lines of `rows` (a missing key shows as "-")."""
    lines = ["| " + " | ".join(c[1] for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c[0]], c[2]) if c[0] in row else "-" for c in columns) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The whole report (`bench_run.run_bench`'s document) as markdown: machine, rows, targets, projection."""
    lines = []
    system = report.get("system")
    if system:
        lines += [f"Machine: {system['cores']} cores, load average {system['load_before']:.1f} before / "
                  f"{system['load_after']:.1f} after, CPU steal {100 * system['steal_share']:.1f} %. "
                  "Spread = (max - min) / median of end-to-end.", ""]
    lines += table(report["rows"], TABLE_COLUMNS)
    lines += ["", "| target | value | limit | how | result |", "|---|---|---|---|---|"]
    for c in report["targets"]:
        value = "-" if c["value"] is None else f"{c['value']:.3f}"
        result = c["result"] + (f" ({c['reason']})" if c.get("reason") else "")
        lines.append(f"| {c['target']} | {value} | {c['limit']} | {c['how']} | {result} |")
    projection = report.get("projection") or {}
    if projection.get("rows"):
        lines += ["", "Projection calibration (serialised workers on one pinned core, edge on another):", ""]
        lines += table(projection["calibration_rows"], CALIBRATION_COLUMNS)
        lines += ["", "Projected end-to-end, each worker on its own machine:", ""]
        lines += table(projection["rows"], PROJECTION_COLUMNS)
    if projection.get("validation"):
        lines += ["", "Projection vs measured:", ""]
        shown = [{**v, "result": v["result"] + (f" ({v['reason']})" if v.get("reason") else "")}
                 for v in projection["validation"]]
        lines += table(shown, VALIDATION_COLUMNS)
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Stacked latency breakdown per configuration (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = (("preprocess_s", "edge preprocess"), ("worker_compute_s", "worker compute"), ("serialise_s", "codec"),
             ("transfer_s", "transfer + queueing"), ("merge_s", "edge merge / local"), ("decode_s", "mask decoder"))
    labels = [f"{r['model']}\n{r['plan']}" + (f"\nN={r['workers']}" if r["plan"] not in ("monolithic", "cloud-only") else "") for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows)), 4.0), dpi=90)
    bottom = np.zeros(len(rows))
    for key, name in parts:
        values = np.array([1000 * r[key] if r["plan"] != "monolithic" or key in ("preprocess_s", "decode_s") else 0.0 for r in rows])
        ax.bar(range(len(rows)), values, bottom=bottom, label=name)
        bottom += values
    mono_encode = np.array([1000 * r["encode_s"] if r["plan"] == "monolithic" else 0.0 for r in rows])
    ax.bar(range(len(rows)), mono_encode, bottom=bottom, label="monolithic encode")
    ax.plot(range(len(rows)), [1000 * r["end_to_end_s"] for r in rows], "k.", label="end-to-end (measured)")
    ax.set_xticks(range(len(rows)), labels, fontsize=5, rotation=90)
    ax.set_ylabel("ms (median)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
