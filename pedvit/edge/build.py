"""The builder of a split deployment, in the spirit of segment-anything's ``build_sam``: from what a caller
names to the plan (with its fusion) and the workers' executors. `DistributedSamPredictor`, `pedvit segment`,
`pedvit demo` and the membership watcher build through it, so there is one way to do each of these:

    plan = build_plan("tinyvit-isolated", "mobile_sam", halo_px=32)            # + the shipped fusion ("auto")
    executors = resolve_executors(["10.0.0.5:50051", "10.0.1.7:50051"], tls, token)
    executors = resolve_executors(".pedvit/cluster.json")                      # a cluster file brings its own
    with open_workers(model, WorkerSource(local=4)) as workers:                # 4 local worker processes
        predictor = DistributedSamPredictor(model, workers.executors, plan=plan)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from pedvit.models import Sam
from pedvit.plans.fusion import load_default_fusion
from pedvit.plans.plans import DEFAULT_PLAN_FOR_MODEL, SplitPlan, TinyViTIsolated, make_plan
from pedvit.plans.stages import stages_for_model
from pedvit.transport.auth import read_token_file
from pedvit.transport.client import RemoteExecutor
from pedvit.transport.tls import ClientTLS

from .cluster import LocalCluster, load_cluster, start_local_workers
from .executors import InProcessExecutor

#: What names a set of workers: executors ("host:port" strings become `RemoteExecutor`s, anything else is
#: used as it is), or the path of a cluster file (`pedvit.edge.cluster`).
WorkerSpec = Sequence[Any] | str | os.PathLike[str]


# ------------------------------------------------------------------------------------------- plan + fusion
def resolve_fusion(plan_name: str, fusion: Any = "auto") -> nn.Module | None:
    """The edge fusion of a plan: "auto" (the shipped weights, when present), "off"/None, or a torch module;
    None for every plan but tinyvit-isolated."""
    if fusion is None or fusion == "off" or plan_name != TinyViTIsolated.name:
        return None
    if fusion == "auto":
        return load_default_fusion()
    if isinstance(fusion, nn.Module):
        return fusion
    raise ValueError(f"fusion must be 'auto', 'off' or a torch module, got {fusion!r}")


def build_plan(plan: SplitPlan | str | None, model_name: str, *, halo_px: int = 0, window_tokens: int = 14,
               fusion: Any = "auto") -> SplitPlan:
    """A `SplitPlan` as given, or the named plan (None: the model's default) with its fusion (`resolve_fusion`).

    Raises:
        ValueError: an unknown plan, or options the plan does not take (a halo for a ViT plan, ...).
    """
    if isinstance(plan, SplitPlan):
        return plan
    name = plan or DEFAULT_PLAN_FOR_MODEL[model_name]
    return make_plan(name, halo_px=halo_px, window_tokens=window_tokens, fusion=resolve_fusion(name, fusion))


# --------------------------------------------------------------------------------------------- executors
def resolve_executors(spec: WorkerSpec, tls: ClientTLS | None = None, token: str | None = None) -> list[Any]:
    """One executor per worker of `spec`.

    "host:port" strings are dialed with `tls` and `token` and named by their address; a cluster file carries
    its own TLS and token (its workers are named as in the file), so `tls` and `token` do not apply to it.
    """
    if isinstance(spec, (str, os.PathLike)):
        return load_cluster(spec).executors()
    return [RemoteExecutor(w, tls=tls, token=token, name=w) if isinstance(w, str) else w for w in spec]


def client_credentials(tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                       token_file: str | None = None) -> tuple[ClientTLS | None, str | None]:
    """The edge's (TLS, bearer token) from file paths: mutual TLS needs all three TLS files or none.

    Raises:
        ValueError: only some of the TLS files were given.
        FileNotFoundError: the token file is missing.
    """
    files = (tls_ca, tls_cert, tls_key)
    if any(files) and not all(files):
        raise ValueError("--tls-ca, --tls-cert and --tls-key go together")
    tls = ClientTLS(*files) if all(files) else None
    return tls, read_token_file(token_file) if token_file else None


def in_process_workers(model: Sam, n: int, *, record_inputs: bool = False,
                       window_adapters: Sequence[Any] | None = None) -> list[InProcessExecutor]:
    """n executors in this process sharing the model's weights (no network; debugging and tests); they serve
    the adapted trunk for `window_adapters` (None: the shipped adapter) besides the plain stages."""
    stages = stages_for_model(model, window_adapters)
    return [InProcessExecutor(stages, f"inproc{i}", record_inputs=record_inputs) for i in range(n)]


# ------------------------------------------------------------------------------ workers from CLI options
@dataclass(frozen=True)
class WorkerSource:
    """Where the workers come from: `in_process` executors, running workers at `addresses` (with the
    credentials' files), the workers of a `cluster_file`, else `local` worker processes started here (which
    require the token too)."""

    local: int = 4
    in_process: int = 0
    addresses: tuple[str, ...] = ()
    cluster_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token_file: str | None = None
    checkpoint: str | None = None

    @property
    def mode(self) -> str:
        """"in-process", "workers", "cluster" or "local"."""
        if self.in_process:
            return "in-process"
        return "workers" if self.addresses else "cluster" if self.cluster_file else "local"


@dataclass
class WorkerSet:
    """The executors of a `WorkerSource`, and the local worker processes to stop when done (`close`)."""

    executors: list[Any]
    mode: str
    local: LocalCluster | None = None

    def close(self) -> None:
        """Stop the worker processes started here (the executors are the predictor's to close)."""
        if self.local is not None:
            self.local.stop()

    def __enter__(self) -> "WorkerSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_workers(model: Sam, source: WorkerSource) -> WorkerSet:
    """The executors of `source` for `model` (local workers are started and serve `model.name`).

    Raises:
        ValueError: partial TLS files, or `local` < 1 for local workers.
        FileNotFoundError: a missing token file.
        ClusterError: a local worker did not start, or the cluster file is missing or invalid.
    """
    if source.mode == "in-process":
        return WorkerSet(in_process_workers(model, source.in_process), "in-process")
    tls, token = client_credentials(source.tls_ca, source.tls_cert, source.tls_key, source.token_file)
    if source.mode == "workers":
        return WorkerSet(resolve_executors(list(source.addresses), tls, token), "workers")
    if source.mode == "cluster":
        return WorkerSet(resolve_executors(source.cluster_file), "cluster")
    if source.local < 1:
        raise ValueError("--local must be >= 1")
    local = start_local_workers(source.local, model.name, source.checkpoint, token_file=source.token_file)
    return WorkerSet(local.executors(), "local", local)
