"""`pedvit cluster up|down|status`: local worker clusters and their cluster file (`pedvit.edge.cluster`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from pedvit.cloud.launch import pid_alive, stop_pids
from pedvit.edge.cluster import DEFAULT_CLUSTER_FILE, Cluster, ClusterError, cluster_status, load_cluster, start_local_workers
from pedvit.edge.membership import scheduler_estimates


def _cmd_up(args: argparse.Namespace) -> int:
    path = Path(args.cluster_file)
    if path.exists():
        try:
            old = load_cluster(path)
            if any(w.pid and pid_alive(w.pid) for w in old.workers):
                print(f"error: {path} lists running workers; run `pedvit cluster down` first", file=sys.stderr)
                return 2
        except ClusterError:
            pass
    log_dir = path.parent / "logs"
    extra = ["--slowdown-per-window", str(args.slowdown_per_window)] if args.slowdown_per_window else []
    try:
        local = start_local_workers(
            args.n, args.model, args.checkpoint, tls=args.tls_dir, token_file=args.token_file, extra_args=extra,
            log_dir=log_dir, detached=True, timeout_s=args.timeout,
        )
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    cluster = local.cluster()
    cluster.save(path)
    for w in local.workers:
        print(f"{w.name}\t{w.address}\tpid={w.pid}")
    print(f"cluster file: {path} (logs in {log_dir}); stop with `pedvit cluster down --cluster-file {path}`")
    return 0


def _load(path: str) -> Cluster | None:
    """The cluster file, or None after saying why it cannot be read."""
    try:
        return load_cluster(path)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def _cmd_down(args: argparse.Namespace) -> int:
    cluster = _load(args.cluster_file)
    if cluster is None:
        return 2
    pids = [w.pid for w in cluster.workers if w.pid]
    alive = stop_pids(pids, args.timeout)
    print(f"stopped {len(pids)} worker(s)" + (f" ({len(alive)} killed after {args.timeout:.0f} s)" if alive else ""))
    Path(args.cluster_file).unlink(missing_ok=True)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    cluster = _load(args.cluster_file)
    if cluster is None:
        return 2
    statuses = cluster_status(cluster, extras=[scheduler_estimates])
    if args.json:
        print(json.dumps([asdict(s) for s in statuses], indent=2))
    else:
        for s in statuses:
            state = "SERVING" if s.healthy else "DOWN"
            line = f"{s.name}\t{s.address}\t{state}\t{s.model or '-'}\t{','.join(s.stages) or '-'}"
            if s.pid:
                line += f"\tpid={s.pid}{'' if s.pid_alive else ' (gone)'}"
            if s.extra:
                line += "\t" + " ".join(f"{k}={v}" for k, v in s.extra.items())
            if s.error:
                line += f"\t{s.error}"
            print(line)
    return 0 if all(s.healthy for s in statuses) else 1


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `pedvit cluster up|down|status`."""
    p = subparsers.add_parser("cluster", help="start, stop and inspect local worker clusters")
    sub = p.add_subparsers(dest="cluster_command", metavar="ACTION")
    up = sub.add_parser("up", help="start N detached workers on loopback and write a cluster file")
    up.add_argument("-n", type=int, default=4, help="number of workers (default 4)")
    up.add_argument("--model", default="mobile_sam")
    up.add_argument("--checkpoint", default=None)
    up.add_argument("--tls-dir", default=None, help="dev-PKI directory (created if empty); workers serve mutual TLS")
    up.add_argument("--token-file", default=None, help="bearer token the workers require")
    up.add_argument("--slowdown-per-window", type=float, default=0.0, help="TEST ONLY: slow workers down")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the workers (default 180)")
    down = sub.add_parser("down", help="stop the workers of a cluster file")
    down.add_argument("--timeout", type=float, default=10.0)
    status = sub.add_parser("status", help="health, model and stages per worker")
    status.add_argument("--json", action="store_true")
    for q in (up, down, status):
        q.add_argument("--cluster-file", default=DEFAULT_CLUSTER_FILE, help=f"default {DEFAULT_CLUSTER_FILE}")
    up.set_defaults(func=_cmd_up)
    down.set_defaults(func=_cmd_down)
    status.set_defaults(func=_cmd_status)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p
