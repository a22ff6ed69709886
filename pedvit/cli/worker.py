"""`pedvit worker --port P ...`: serve a model's stages over gRPC (`pedvit.cloud.worker`) until SIGTERM/SIGINT.

Once it serves, it prints the ready line of `pedvit.cloud.launch` so a parent process can wait for it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pedvit.cloud.launch import exit_with_parent, ready_line
from pedvit.cloud.worker import DEFAULT_MAX_REQUEST_PIXELS, FAULT_KINDS, FaultInjection, serve
from pedvit.plans.stage import Stage
from pedvit.transport.auth import read_token_file
from pedvit.transport.codec import DEFAULT_MAX_MESSAGE_BYTES
from pedvit.transport.tls import ServerTLS

logger = logging.getLogger(__name__)

#: Default `--stages-factory`: the lead's stage registry.
DEFAULT_STAGES_FACTORY = "pedvit.plans.stages:build_worker_stages"


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, required=True, help="port to listen on (0: pick a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--model", default="mobile_sam", help="model whose stages to serve (default mobile_sam)")
    p.add_argument("--checkpoint", default=None, help="model checkpoint path (default: the model's default)")
    p.add_argument("--worker-id", default=None, help="id reported to the edge (default host:port)")
    p.add_argument("--tls-cert", default=None, help="worker certificate (PEM); enables mutual TLS")
    p.add_argument("--tls-key", default=None, help="worker private key (PEM)")
    p.add_argument("--tls-client-ca", default=None, help="CA that signs accepted edge certificates (PEM)")
    p.add_argument("--tls-edge-name", action="append", default=[], metavar="NAME",
                   help="accept only edge certificates with this common name or DNS name (repeatable; "
                        "default: any client certificate of the CA)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token clients must send")
    p.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_BYTES / 2**20,
                   help="gRPC message size limit in MiB (default 64)")
    p.add_argument("--threads", type=int, default=4, help="concurrent calls (default 4)")
    p.add_argument("--max-concurrent", type=int, default=2,
                   help="requests computing at once; the others wait, then get RESOURCE_EXHAUSTED (default 2)")
    p.add_argument("--max-request-mpx", type=float, default=DEFAULT_MAX_REQUEST_PIXELS / 2**20,
                   help="budget of one request in megapixels, windows x h x w (default 4)")
    p.add_argument("--device", default="cpu", help="torch device of the stages: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--serve-full-encoder", action="store_true",
                   help="BENCHMARK BASELINE: also serve the whole image encoder (cloud-only); keeps every block in memory")
    p.add_argument("--window-adapter", action="append", default=[], metavar="FUSION_WEIGHTS",
                   help="also serve the adapted trunk for the window adapter stored in this fusion weights file "
                        "(repeatable; the shipped adapter is always served)")
    p.add_argument("--slowdown-per-window", type=float, default=0.0, metavar="S",
                   help="TEST ONLY: sleep S seconds per window to emulate a slow worker")
    # Hidden: a hostile worker for fault soaks (pedvit.eval.soak); corrupts answers after compute.
    p.add_argument("--inject-fault", choices=FAULT_KINDS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fault-rate", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--stages-factory", default=DEFAULT_STAGES_FACTORY, metavar="MODULE:FUNC",
                   help="TEST ONLY: callable (model_name, checkpoint) -> {name: Stage}")


def _load_factory(spec: str) -> Callable[..., Mapping[str, Stage]]:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"--stages-factory must be MODULE:FUNC, got {spec!r}")
    return getattr(importlib.import_module(module), attr)


def _window_adapters(paths: list[str]) -> list[Any]:
    """The shipped window adapter (if any) plus those stored in the given fusion weights files."""
    # Imported here: the fusion loader pulls in torch, which a test worker's stage factory does not need.
    from pedvit.plans.fusion import load_window_adapter

    adapters = [a for a in [load_window_adapter()] if a is not None]
    for path in paths:
        adapter = load_window_adapter(path)
        if adapter is None:
            raise SystemExit(f"--window-adapter {path}: no such file, or it holds no window adapter")
        adapters.append(adapter)
    return adapters


def _cmd_worker(args: argparse.Namespace) -> int:
    # No-op when the caller already configured logging.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tls_files = (args.tls_cert, args.tls_key, args.tls_client_ca)
    if any(tls_files) and not all(tls_files):
        print("error: --tls-cert, --tls-key and --tls-client-ca go together", file=sys.stderr)
        return 2
    tls = ServerTLS(*tls_files, edge_names=tuple(args.tls_edge_name)) if all(tls_files) else None
    token = read_token_file(args.token_file) if args.token_file else None
    try:
        fault = FaultInjection(args.inject_fault, args.fault_rate) if args.inject_fault else None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    factory = _load_factory(args.stages_factory)
    options: dict[str, Any] = {}
    if args.device != "cpu":  # test factories take (model_name, checkpoint) only
        options["device"] = args.device
    if args.serve_full_encoder:
        options["full_encoder"] = True
    if args.window_adapter:
        options["window_adapters"] = _window_adapters(args.window_adapter)
    stages = factory(args.model, args.checkpoint, **options)
    worker = serve(
        args.port, stages, host=args.host, model_name=args.model, worker_id=args.worker_id, tls=tls, token=token,
        max_message_bytes=int(args.max_message_mb * 2**20), max_workers=args.threads,
        max_request_pixels=int(args.max_request_mpx * 2**20), max_concurrent=args.max_concurrent,
        delay_per_window_s=args.slowdown_per_window, fault=fault,
    )

    def _shutdown(signum: int, frame: object) -> None:
        logger.info("signal %d: shutting down", signum)
        worker.stop(grace=5.0)

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    exit_with_parent(lambda: (logger.info("parent process gone: shutting down"), worker.stop(grace=1.0)))
    print(ready_line(worker.port), flush=True)
    worker.wait_for_termination()
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `worker` subcommand; sets `func(args) -> int` (blocks while serving)."""
    p = subparsers.add_parser("worker", help="run a cloud worker serving a model's stages over gRPC")
    _add_arguments(p)
    p.set_defaults(func=_cmd_worker)
    return p
