"""`pedvit eval ...` and `pedvit bench ...`: each benchmark module adds its own subcommand.

Benchmark modules provide `add_parser(group_subparsers)`; `pedvit bench` without a subcommand runs the
performance benchmark (`pedvit.eval.perf_bench.configure_bench_parser`).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

EVAL_MODULES = ("pedvit.eval.accuracy", "pedvit.eval.privacy_eval")


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return None
        raise


def register_cli(subparsers: Any) -> None:
    evaluate = subparsers.add_parser("eval", help="accuracy and privacy evaluations")
    eval_sub = evaluate.add_subparsers(dest="eval_command", metavar="EVALUATION", required=True)
    for name in EVAL_MODULES:
        module = _optional(name)
        if module is not None:
            module.add_parser(eval_sub)

    bench = subparsers.add_parser("bench", help="performance benchmarks (`pedvit bench schedule` for the scheduler)")
    perf = _optional("pedvit.eval.perf_bench")
    if perf is not None:
        perf.configure_bench_parser(bench)
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    from pedvit.eval.schedule_bench import add_schedule_bench_parser
    from pedvit.eval.throughput_bench import add_throughput_parser

    add_schedule_bench_parser(bench_sub)
    add_throughput_parser(bench_sub)  # pedvit bench throughput
