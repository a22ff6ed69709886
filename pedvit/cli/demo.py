"""`pedvit demo`: the web page (`pedvit.web.app`) over local, running or in-process workers."""

from __future__ import annotations

import argparse

from pedvit.edge.build import WorkerSource, open_workers
from pedvit.edge.cluster import ClusterError
from pedvit.models import build_model
from pedvit.web.app import DemoApp
from pedvit.web.server import DemoServer

from .segment_one import parse_probability


def build_app(args: argparse.Namespace) -> DemoApp:
    """Model + workers from the CLI options (`--local N` default, `--workers`, `--cluster`, `--in-process N`;
    `--tls-*` and `--token-file` for running workers, the token also for local ones)."""
    model = build_model(args.model, args.checkpoint)
    addresses = tuple(a.strip() for a in (args.workers or "").split(",") if a.strip())
    source = WorkerSource(local=args.local, in_process=args.in_process, addresses=addresses, cluster_file=args.cluster,
                          tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key, token_file=args.token_file,
                          checkpoint=args.checkpoint)
    if source.mode == "local":
        print(f"starting {args.local} local workers ...", flush=True)
    workers = open_workers(model, source)
    return DemoApp(model, workers.executors, on_close=workers.close, spot_check=args.spot_check)


def run_demo(args: argparse.Namespace) -> int:
    try:
        app = build_app(args)
    except (ClusterError, ValueError, FileNotFoundError) as error:
        print(f"pedvit demo: cannot start the workers: {error}")
        return 1
    try:
        server = DemoServer(app, args.host, args.port, allowed_hosts=args.allowed_host)
    except OSError as error:
        app.close()
        print(f"cannot listen on {args.host}:{args.port}: {error}")
        return 1
    print(f"pedvit demo: {server.url}/ ({len(app.executors)} workers, model {app.model.name}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pedvit demo`."""
    parser = subparsers.add_parser("demo", help="web page: segment photos over split workers and see what each worker received")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", type=int, default=4, metavar="N", help="start N gRPC workers on loopback (default 4)")
    where.add_argument("--workers", metavar="HOST:PORT,...", help="use running workers (comma-separated addresses)")
    where.add_argument("--cluster", metavar="FILE", help="use the workers of a cluster file (pedvit cluster up)")
    where.add_argument("--in-process", type=int, nargs="?", const=4, default=0, metavar="N",
                       help="N workers inside this process (no network; default 4)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host header is NAME (default: localhost and the --host "
                             "address only, against DNS rebinding); repeatable")
    parser.add_argument("--model", default="mobile_sam")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--tls-ca", default=None, help="CA of the workers' certificates (PEM; with --tls-cert/--tls-key: mutual TLS)")
    parser.add_argument("--tls-cert", default=None, help="the edge's client certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="the edge's private key (PEM)")
    parser.add_argument("--token-file", default=None, help="bearer token the workers require (local workers get it too)")
    parser.add_argument("--spot-check", type=parse_probability, default=0.0, metavar="P",
                        help="probability that a worker answer gets one random window recomputed on the edge and compared "
                             "(default 0)")
    parser.set_defaults(func=run_demo)
