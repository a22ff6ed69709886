"""`pedvit bench`: end-to-end performance against the baselines (`pedvit.eval.perf_bench`, `--netem`:
`pedvit.eval.netem`), and `pedvit bench schedule`: the scheduler simulation (`pedvit.eval.schedule_bench`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pedvit.eval import netem, schedule_bench, throughput_bench
from pedvit.eval.bench_run import run_bench
from pedvit.eval.perf_bench import DEFAULT_PLANS, FULL_MODELS, FULL_WORKERS, QUICK_MODELS, QUICK_WORKERS, BenchOptions
from pedvit.eval.perf_report import markdown, plot


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `pedvit bench [schedule]`: without a sub-benchmark, `bench` runs the performance benchmark."""
    bench = subparsers.add_parser("bench", help="performance benchmarks (`pedvit bench schedule` for the scheduler)")
    _configure_perf(bench)
    bench_subparsers = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    _add_schedule(bench_subparsers)
    throughput_bench.add_throughput_parser(bench_subparsers)  # pedvit bench throughput
    return bench


# ------------------------------------------------------------------------------------------ performance
def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def resolve_defaults(args: argparse.Namespace) -> None:
    """Fill --models and --workers left out: the quick default, or the long sweep with --full."""
    if args.models is None:
        args.models = ",".join(FULL_MODELS if args.full else QUICK_MODELS)
    if args.workers is None:
        args.workers = ",".join(map(str, FULL_WORKERS if args.full else QUICK_WORKERS))


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """The benchmark's options from `pedvit bench` arguments."""
    resolve_defaults(args)
    plans = dict(DEFAULT_PLANS)
    if args.plans:
        wanted = _csv(args.plans)
        plans = {m: tuple(p for p in DEFAULT_PLANS[m] if p in wanted) for m in DEFAULT_PLANS}
    if args.repeats < 1:
        raise SystemExit("pedvit bench: --repeats must be >= 1")
    return BenchOptions(
        models=_csv(args.models), workers=tuple(int(n) for n in _csv(args.workers)), repeats=args.repeats,
        device=args.device, image=args.image, plans=plans, addresses=_csv(args.addresses or ""),
        pin_workers=args.pin_workers, worker_threads=args.worker_threads, edge_threads=args.edge_threads, network=args.network_label,
        progress=not args.no_progress, fusion=args.fusion, project=not args.no_projection,
    )


def write_outputs(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Print the report; write --json (the whole report + the command), --markdown and --plot."""
    text = markdown(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "command": sys.argv}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.plot:
        plot(report["rows"], args.plot)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.netem_cleanup:
        removed = netem.cleanup_leftovers()
        print(f"removed {len(removed)} leftover pedvit network namespaces: {' '.join(removed) or '-'}")
        return 0
    if args.netem:
        problem = netem.unavailable_reason()
        if problem:
            print(f"--netem skipped: {problem}", file=sys.stderr)
            return 0
        resolve_defaults(args)
        write_outputs(args, netem.run_netem_bench(args))
        return 0
    write_outputs(args, run_bench(options_from_args(args)))
    return 0


def _add_perf_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="OUT", help="write rows + targets as JSON")
    p.add_argument("--markdown", default=None, metavar="OUT", help="write the table as markdown")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="write a latency-breakdown plot")
    p.add_argument("--full", action="store_true",
                   help="the long sweep: --models mobile_sam,vit_b --workers 1,2,4,8 (unless given)")
    p.add_argument("--models", default=None, help="comma-separated models (default mobile_sam; --full: mobile_sam,vit_b)")
    p.add_argument("--plans", default=None, help="comma-separated plans (default: tinyvit-isolated; vit-exact,vit-isolated)")
    p.add_argument("--workers", default=None, help="worker counts (default 1,2,4; --full: 1,2,4,8)")
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved requests per configuration after one warm-up; min/median/spread reported (default 5)")
    p.add_argument("--no-projection", action="store_true",
                   help="skip the calibration of the projected multi-machine latency")
    p.add_argument("--device", default="cpu", help="torch device of edge and workers (cpu, cuda)")
    p.add_argument("--image", default=None, metavar="PATH", help="image to use (default: the first bundled photo)")
    p.add_argument("--addresses", default=None, help="use these running workers (host:port,...) instead of starting them")
    p.add_argument("--pin-workers", action="store_true", help="pin workers to cores the edge does not use")
    p.add_argument("--worker-threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--edge-threads", type=int, default=None, help="torch threads of the edge and the monolithic baseline (default: torch's)")
    p.add_argument("--fusion", choices=("auto", "off"), default="auto",
                   help="tinyvit-isolated's learned edge fusion: auto (default, on when its weights ship) or off")
    p.add_argument("--network-label", default="loopback", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--netem", nargs="?", const="wifi,lte", default=None, metavar="PROFILES",
                   help="run in network namespaces behind emulated links (root; profiles wifi,lte,mixed; default wifi,lte)")
    p.add_argument("--netem-cleanup", action="store_true", help="remove leftover pedvit network namespaces and exit")


def _configure_perf(bench_parser: argparse.ArgumentParser) -> None:
    """Add the options of `pedvit bench` and set its func."""
    _add_perf_arguments(bench_parser)
    bench_parser.set_defaults(func=_cmd_bench)


# ------------------------------------------------------------------------------------------- scheduler
def _parse_ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _parse_caps(s: str) -> list[int | None]:
    return [None if x.strip() in ("auto", "") else int(x) for x in s.split(",")]


def _add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_parse_ints, default=[16, 32, 64], help="worker counts, e.g. 16,32,64")
    p.add_argument("--caps", type=_parse_caps, default=[None, 3],
                   help="share caps per configuration: 'auto' = max(1, ceil(n/N)), or an integer (default auto,3)")
    p.add_argument("--requests", type=int, default=200, help="requests per configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed-spread", type=float, default=4.0, help="slowest/fastest seconds-per-window ratio")
    p.add_argument("--noise", type=float, default=0.1, help="sigma of per-request log-normal noise")
    p.add_argument("--probe-noise", type=float, default=0.3, help="sigma of the initial probe's log-normal error")
    p.add_argument("--reprobe-every", type=int, default=10, help="requests between probes of idle workers (0: off)")
    p.add_argument("--fail-rate", type=float, default=0.002, help="per-request probability a worker goes down")
    p.add_argument("--adjacency", choices=("off", "prefer", "require"), default="prefer")
    p.add_argument("--no-local", action="store_true", help="the edge computes no windows")
    p.add_argument("--json", dest="json_out", default=None, help="write the result rows to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def _cmd_schedule(args: argparse.Namespace) -> int:
    rows = schedule_bench.run_bench(args.workers, args.caps, progress=not args.no_progress, requests=args.requests,
                                    seed=args.seed, speed_spread=args.speed_spread, noise=args.noise,
                                    fail_rate=args.fail_rate, probe_noise=args.probe_noise,
                                    reprobe_every=args.reprobe_every, adjacency=args.adjacency,
                                    allow_local=not args.no_local)
    print(schedule_bench.format_table(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _add_schedule(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``schedule`` under an existing ``bench`` sub-command group (``pedvit bench schedule``)."""
    p = bench_subparsers.add_parser("schedule", help="simulate the window scheduler against equal split",
                                    description=schedule_bench.__doc__.split("\n\n")[0])
    _add_schedule_arguments(p)
    p.set_defaults(func=_cmd_schedule)
    return p
