"""How far `pedvit bench` can trust its own timings: interleaved order, per-row spread, machine load, steal.

A verdict (PASS/FAIL) on a target is only as good as the run behind it. This module holds the pure parts:

* `interleaved(configs, repeats)`: the order of requests, round-robin A B C A B C ... so that a burst of
  load from elsewhere hits every configuration about equally instead of one block;
* `spread_summary(values)`: min / median / max and the spread `(max - min) / median` of one row's samples;
* `read_system()` / `system_report(before, after)`: the 1-minute load average and the CPU steal ticks of
  /proc/stat, before and after the run (steal as a share of all ticks in between);
* `TrustPolicy` and `untrusted_reasons(...)`: why a verdict that uses given rows must not be printed;
* `apply_trust(checks, ...)`: turns PASS/FAIL into "noisy: no verdict" (with the reason) on an untrusted run.
  A run that is not trusted never prints PASS.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

Config = TypeVar("Config")

#: The result of a target that was measured on a run this module does not trust.
NO_VERDICT = "noisy: no verdict"


def interleaved(configs: Sequence[Config], repeats: int) -> list[Config]:
    """`repeats` rounds over `configs` in their order: A B C A B C ... (warm-ups are the caller's)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return [config for _ in range(repeats) for config in configs]


def spread_summary(values: Sequence[float]) -> dict[str, float]:
    """min, median, max and spread = (max - min) / median of one row's samples (spread 0 for one sample)."""
    if not values:
        raise ValueError("no samples")
    median = float(statistics.median(values))
    low, high = float(min(values)), float(max(values))
    return {"min": low, "median": median, "max": high, "spread": (high - low) / median if median > 0 else 0.0}


# ------------------------------------------------------------------------------------------ machine
@dataclass(frozen=True)
class SystemSample:
    """One reading of the machine: 1-minute load average and the aggregate CPU ticks of /proc/stat."""

    load_1min: float
    steal_ticks: int  # both 0 where /proc/stat is missing (not Linux)
    total_ticks: int


def read_system(proc_stat: str = "/proc/stat") -> SystemSample:
    """The load average now and the cumulative steal / total ticks of all CPUs (0 / 0 without /proc/stat)."""
    load = os.getloadavg()[0]
    try:
        with open(proc_stat) as f:
            fields = f.readline().split()
    except OSError:
        return SystemSample(load, 0, 0)
    # "cpu user nice system idle iowait irq softirq steal guest guest_nice": guest time is already in user.
    ticks = [int(v) for v in fields[1:9]]
    return SystemSample(load, ticks[7] if len(ticks) > 7 else 0, sum(ticks))


def system_report(before: SystemSample, after: SystemSample, cores: int | None = None) -> dict[str, Any]:
    """What the JSON records about the machine: core count, load before/after, steal share in between."""
    total = after.total_ticks - before.total_ticks
    steal = after.steal_ticks - before.steal_ticks
    return {
        "cores": cores if cores is not None else len(os.sched_getaffinity(0)),
        "load_before": before.load_1min,
        "load_after": after.load_1min,
        "steal_share": steal / total if total > 0 else 0.0,
    }


# ------------------------------------------------------------------------------------------ trust
@dataclass(frozen=True)
class TrustPolicy:
    """When a measured verdict may be printed.

    max_spread: largest (max - min) / median of end-to-end allowed in any row a target uses;
    min_samples: fewer samples cannot show their own spread;
    max_load_per_core: the load average (before and after) may not exceed this many times the core count;
    max_steal: the largest share of CPU ticks stolen by the hypervisor during the run.
    """

    max_spread: float = 0.20
    min_samples: int = 3
    max_load_per_core: float = 1.0
    max_steal: float = 0.05


def system_reasons(system: dict[str, Any], policy: TrustPolicy) -> list[str]:
    """Why the machine itself (load, steal) makes every measured verdict of this run untrustworthy."""
    reasons = []
    limit = policy.max_load_per_core * system["cores"]
    load = max(system["load_before"], system["load_after"])
    if load > limit:
        reasons.append(f"load average {load:.1f} > {limit:g} ({system['cores']} cores)")
    if system["steal_share"] > policy.max_steal:
        reasons.append(f"CPU steal {100 * system['steal_share']:.1f} % > {100 * policy.max_steal:g} %")
    return reasons


def row_reasons(row: dict[str, Any], policy: TrustPolicy) -> list[str]:
    """Why one row's end-to-end samples are too few or too scattered for a verdict."""
    label = f"{row['model']} {row['plan']}" + (f" N={row['workers']}" if row.get("workers") else "")
    if row.get("samples", 0) < policy.min_samples:
        return [f"{label}: {row.get('samples', 0)} samples < {policy.min_samples}"]
    if row["end_to_end_spread"] > policy.max_spread:
        return [f"{label}: spread {100 * row['end_to_end_spread']:.0f} % > {100 * policy.max_spread:g} %"]
    return []


def untrusted_reasons(rows: Sequence[dict[str, Any]], system: dict[str, Any], policy: TrustPolicy) -> list[str]:
    """Every reason a verdict computed from `rows` on this run must not be printed (empty: trusted)."""
    return system_reasons(system, policy) + [r for row in rows for r in row_reasons(row, policy)]


def apply_trust(checks: list[dict[str, Any]], rows_of: dict[str, list[dict[str, Any]]], system: dict[str, Any],
                policy: TrustPolicy) -> list[dict[str, Any]]:
    """Each measured check whose rows (`rows_of[target]`) or machine are untrusted gets result NO_VERDICT and
    a `reason`; the measured value stays in `value`. Checks not in `rows_of` (estimates, not measured) keep
    their verdict. Returns `checks`, changed in place."""
    for check in checks:
        if check["target"] not in rows_of or check["result"] == "n/a":
            continue
        reasons = untrusted_reasons(rows_of[check["target"]], system, policy)
        if reasons:
            check["result"] = NO_VERDICT
            check["reason"] = "; ".join(reasons)
    return checks
