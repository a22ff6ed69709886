"""The cloud worker: a gRPC server that runs named plan stages on batches of windows.

A worker is untrusted. It sees only what a request carries (a stage name, a batch of equally shaped
windows and their origins) and keeps nothing: requests are decoded into views of the message bytes, run,
answered and dropped. Nothing is written to disk and logs carry no tensor data.

Every request is validated before any compute (codec limits, then the stage's `StageSpec`, then the meta
values); a bad request is answered INVALID_ARGUMENT, a failing stage INTERNAL, and the server keeps
serving either way.

    worker = serve(0, {"double": DoubleStage()})     # port 0: pick a free port
    print(worker.port); ...; worker.stop(grace=1.0)

The command `pedvit worker --port P ...` (`pedvit.cli.worker`) serves a model's stages; once it serves it
prints one line `PEDVIT_WORKER_READY port=<p>` (`pedvit.cloud.launch.ready_line`) so a parent process can wait.
"""

from __future__ import annotations

import logging
import socket
from importlib.metadata import PackageNotFoundError, version
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pedvit.plans.stage import Stage
from pedvit.cloud.heap import release_free_heap
from pedvit.transport import pedvit_pb2 as pb
from pedvit.transport import pedvit_pb2_grpc as pb_grpc
from pedvit.transport.auth import BearerTokenInterceptor
from pedvit.transport.codec import DEFAULT_MAX_MESSAGE_BYTES, OUT_DTYPES, decode_tensor, encode_tensor
from pedvit.transport.tls import ServerTLS

logger = logging.getLogger(__name__)

#: Full gRPC service name, as used by the health service.
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["WindowWorker"].full_name


def pedvit_version() -> str:
    """The installed pedvit version (package metadata; `pedvit.__version__`'s value when not installed)."""
    try:
        return version("pedvit")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+local"


#: Default budget of one request: windows x h x w, four full 1024 x 1024 canvases.
DEFAULT_MAX_REQUEST_PIXELS = 4 * 1024 * 1024


#: Kinds of `FaultInjection`.
FAULT_KINDS = ("garbage", "nan")


@dataclass(frozen=True)
class FaultInjection:
    """TEST ONLY (fault soaks): a hostile worker. After an honest compute, each answer is corrupted with
    probability `rate`: ``"nan"`` sets every 97th value to NaN, ``"garbage"`` replaces the answer by random
    values at 1000x its RMS (inf where the dtype cannot hold them). Nothing about the request is stored; only
    its id is logged, so a soak can match every injected answer with the edge's rejection."""

    kind: str
    rate: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {list(FAULT_KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be a probability in [0, 1], got {self.rate}")

    def corrupt(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A corrupted copy of the B x ... answer `out` (same shape and dtype)."""
        if self.kind == "nan":
            bad = out.copy()
            bad.flat[::97] = np.nan
            return bad
        honest = out.astype(np.float32)
        rms = float(np.sqrt(np.mean(honest * honest))) or 1.0
        return rng.uniform(-1000 * rms, 1000 * rms, out.shape).astype(out.dtype)


class _Refusal(Exception):
    """A request answered with a gRPC status other than OK (raised before or between compute)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class WorkerServicer(pb_grpc.WindowWorkerServicer):
    """Serves `pedvit.v1.WindowWorker` for a fixed set of stages.

    Args:
        stages: stage name -> object with `.spec: StageSpec` and `.run(batch, meta) -> np.ndarray`.
        model_name: reported by `Info`.
        worker_id: reported in every answer (default: the host name).
        max_message_bytes: answers larger than this are refused with RESOURCE_EXHAUSTED (the client then
            sends fewer windows per request), before any compute when the stage's spec gives its output size.
        max_request_pixels: budget of one request: windows x h x w (pixels or tokens), else
            RESOURCE_EXHAUSTED before any compute.
        max_concurrent: requests computing at once; more wait up to `queue_timeout_s` (never past their
            deadline), then get RESOURCE_EXHAUSTED.
        chunk_windows: a batch runs in chunks of this many windows; between chunks the call's deadline and
            cancellation are honoured (DEADLINE_EXCEEDED / CANCELLED instead of finishing late).
        delay_per_window_s: TEST ONLY. Sleep this long per window of each batch to emulate a slow worker.
        fault: TEST ONLY. Corrupt answers after compute (`FaultInjection`); None (default): honest answers.
    """

    def __init__(
        self,
        stages: Mapping[str, Stage],
        model_name: str = "",
        worker_id: str | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
        max_concurrent: int = 2,
        queue_timeout_s: float = 30.0,
        chunk_windows: int = 8,
        delay_per_window_s: float = 0.0,
        fault: FaultInjection | None = None,
    ) -> None:
        if min(max_request_pixels, max_concurrent, chunk_windows) < 1 or queue_timeout_s < 0:
            raise ValueError("max_request_pixels, max_concurrent and chunk_windows must be >= 1, queue_timeout_s >= 0")
        for name, stage in stages.items():
            if stage.spec.name != name:
                raise ValueError(f"stage registered as {name!r} but its spec is named {stage.spec.name!r}")
        if delay_per_window_s < 0:
            raise ValueError("delay_per_window_s must be >= 0")
        self.stages: dict[str, Stage] = dict(stages)
        self.model_name = model_name
        self.worker_id = worker_id if worker_id is not None else socket.gethostname()
        self.max_message_bytes = int(max_message_bytes)
        self.delay_per_window_s = float(delay_per_window_s)
        self.max_request_pixels = int(max_request_pixels)
        self.max_concurrent, self.queue_timeout_s = int(max_concurrent), float(queue_timeout_s)
        self.chunk_windows = int(chunk_windows)
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        self.fault = fault
        self._fault_rng = np.random.default_rng()

    # -- request handling ---------------------------------------------------------------------------

    def _parse(self, request: pb.StageRequest) -> tuple[Stage, np.ndarray, np.ndarray, str]:
        """Decode and validate a request against its stage and this worker's budgets, before any compute.
        Raises `_Refusal` with the status and a message fit for the client."""
        stage = self.stages.get(request.stage)
        if stage is None:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT,
                           f"unknown stage {request.stage!r}; this worker serves {sorted(self.stages)}")
        out_dtype = request.out_dtype or OUT_DTYPES[0]
        try:
            if out_dtype not in OUT_DTYPES:
                raise ValueError(f"out_dtype must be one of {list(OUT_DTYPES)}, got {out_dtype!r}")
            if not request.HasField("batch"):
                raise ValueError("request has no batch tensor")
            if not request.HasField("meta"):
                raise ValueError("request has no meta tensor")
            spec = stage.spec
            batch = decode_tensor(request.batch, allowed_dtypes=spec.input_dtypes)
            meta = decode_tensor(request.meta, allowed_dtypes=("int32",), max_rank=2)
            spec.validate(batch.dtype.name, batch.shape, meta.shape)
            b, h, w, _ = batch.shape
            spec.validate_meta(meta, h, w)
            if batch.dtype.kind == "f" and not np.isfinite(batch).all():
                raise ValueError("batch holds NaN or infinite values")
        except ValueError as exc:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        if b * h * w > self.max_request_pixels:
            raise _Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{b} windows of {h} x {w} ({b * h * w} px) exceed this worker's budget of "
                           f"{self.max_request_pixels} px per request; send fewer windows per request")
        elements = spec.output_elements(batch.shape)
        if elements is not None:
            size = elements * np.dtype(out_dtype).itemsize + len(self.worker_id) + 256
            if size > self.max_message_bytes:
                raise _Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"answer of {size} bytes for {b} windows would exceed the message limit of "
                               f"{self.max_message_bytes}; send fewer windows per request")
        return stage, batch, meta, out_dtype

    def _compute(self, stage: Stage, batch: np.ndarray, meta: np.ndarray, context: grpc.ServicerContext) -> np.ndarray:
        """Run `stage` chunk by chunk, stopping at the call's deadline or cancellation."""
        n, parts = batch.shape[0], []
        for start in range(0, n, self.chunk_windows):
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise _Refusal(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"deadline passed after {start} of {n} windows")
            if not context.is_active():
                raise _Refusal(grpc.StatusCode.CANCELLED, "call cancelled")
            chunk = slice(start, start + self.chunk_windows)
            if self.delay_per_window_s:
                time.sleep(self.delay_per_window_s * len(batch[chunk]))  # test-only slowdown
            parts.append(np.asarray(stage.run(batch[chunk], meta[chunk])))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if out.ndim < 1 or out.shape[0] != n:
            raise ValueError(f"stage returned shape {list(out.shape)} for {n} windows")
        return out

    def _acquire_slot(self, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        wait = self.queue_timeout_s if remaining is None else max(0.0, min(self.queue_timeout_s, remaining))
        if not self._slots.acquire(timeout=wait):
            raise _Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"worker busy: {self.max_concurrent} requests computing, waited {wait:.1f} s")

    def _run_one(self, request: pb.StageRequest, context: grpc.ServicerContext) -> pb.StageResponse:
        try:
            stage, batch, meta, out_dtype = self._parse(request)
            if not context.is_active():  # cancelled while queued (e.g. the losing half of a hedge): skip the work
                raise _Refusal(grpc.StatusCode.CANCELLED, "call cancelled before it ran")
            self._acquire_slot(context)
        except _Refusal as refusal:
            context.abort(refusal.code, refusal.message)
        n = batch.shape[0]
        started = time.perf_counter()
        try:
            out = self._compute(stage, batch, meta, context).astype(out_dtype, copy=False)
            if self.fault is not None and out.dtype.kind == "f" and self._fault_rng.random() < self.fault.rate:
                out = self.fault.corrupt(out, self._fault_rng)
                logger.warning("TEST ONLY: injected a %s answer for request %r", self.fault.kind, request.request_id[:64])
            response = pb.StageResponse(
                output=encode_tensor(out),
                compute_seconds=time.perf_counter() - started,
                worker_id=self.worker_id,
            )
        except _Refusal as refusal:
            context.abort(refusal.code, refusal.message)
        except Exception as exc:  # any stage failure: answer, never crash; no message text (may hold data)
            logger.error(
                "stage %r failed on request %r: %s",
                request.stage, request.request_id[:64], type(exc).__name__,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
            context.abort(grpc.StatusCode.INTERNAL, f"stage {request.stage!r} failed ({type(exc).__name__})")
        finally:
            self._slots.release()
            del batch, meta
            release_free_heap()  # 2-8 ms: keeps resident memory from climbing with glibc arenas (docs/hardening.md)
        # Tensor bytes plus a framing allowance; ByteSize() would serialize the whole message once more.
        size = len(response.output.data) + len(self.worker_id) + 256
        if size > self.max_message_bytes:
            # Refuse explicitly with a readable message instead of a transport-level send failure.
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"answer of {size} bytes for {n} windows exceeds the message limit of {self.max_message_bytes}",
            )
        logger.debug("stage %r: %d windows in %.3fs (%s)", request.stage, n, response.compute_seconds,
                     request.request_id[:64])
        return response

    # -- RPCs -----------------------------------------------------------------------------------------

    def RunStage(self, request: pb.StageRequest, context: grpc.ServicerContext) -> pb.StageResponse:
        """Run one stage on one batch."""
        return self._run_one(request, context)

    def RunStageStream(
        self, request_iterator: Iterator[pb.StageRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.StageResponse]:
        """Run a sequence of batches; one answer per request, in order. A bad request ends the stream."""
        for request in request_iterator:
            yield self._run_one(request, context)

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        """Describe the model and stages served."""
        return pb.InfoResponse(
            model_name=self.model_name,
            stages=[
                pb.StageInfo(
                    name=s.spec.name,
                    input_dtypes=list(s.spec.input_dtypes),
                    channels=s.spec.channels,
                    max_side=s.spec.max_side,
                    multiple_of=s.spec.multiple_of,
                    max_batch=s.spec.max_batch,
                )
                for s in self.stages.values()
            ],
            pedvit_version=pedvit_version(),
            worker_id=self.worker_id,
            max_message_bytes=self.max_message_bytes,
        )


@dataclass
class WorkerServer:
    """A started worker: the gRPC server plus what a caller needs to reach and stop it."""

    server: grpc.Server
    port: int
    host: str
    servicer: WorkerServicer
    health: health.HealthServicer
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        """`host:port` to dial."""
        return f"{_bracket(self.host)}:{self.port}"

    def stop(self, grace: float | None = None) -> threading.Event:
        """Mark NOT_SERVING, then stop (in-flight calls get `grace` seconds). Returns grpc's done event."""
        if not self._stopped:
            self._stopped = True
            self.health.enter_graceful_shutdown()
        return self.server.stop(grace)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or `timeout`); True if it timed out."""
        return self.server.wait_for_termination(timeout)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def serve(
    port: int,
    stages: Mapping[str, Stage],
    *,
    host: str = "127.0.0.1",
    model_name: str = "",
    worker_id: str | None = None,
    tls: ServerTLS | None = None,
    token: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_workers: int = 4,
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
    max_concurrent: int = 2,
    delay_per_window_s: float = 0.0,
    fault: FaultInjection | None = None,
) -> WorkerServer:
    """Start a worker serving `stages` on `host:port` (port 0 picks a free port) and return it.

    Args:
        tls: serve mutual TLS (client certificates required); None serves plaintext.
        token: require `authorization: Bearer <token>` on every call except health checks.
        max_message_bytes: gRPC receive and send limit.
        max_workers: threads handling calls concurrently (at most 4x as many calls are queued; beyond that
            gRPC answers RESOURCE_EXHAUSTED at once).
        max_request_pixels, max_concurrent: see `WorkerServicer`.
        delay_per_window_s, fault: TEST ONLY, see `WorkerServicer`.

    Raises:
        OSError: if the address cannot be bound.
    """
    servicer = WorkerServicer(
        stages, model_name, worker_id, max_message_bytes=max_message_bytes, max_request_pixels=max_request_pixels,
        max_concurrent=max_concurrent, delay_per_window_s=delay_per_window_s, fault=fault,
    )
    options = [
        ("grpc.max_receive_message_length", int(max_message_bytes)),
        ("grpc.max_send_message_length", int(max_message_bytes)),
        ("grpc.so_reuseport", 0),  # never share a port with another process
    ]
    interceptors: list[grpc.ServerInterceptor] = [tls.interceptor()] if tls else []
    if token:
        interceptors.append(BearerTokenInterceptor(token))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pedvit-worker"),
        options=options,
        interceptors=interceptors,
        maximum_concurrent_rpcs=4 * max_workers,
    )
    pb_grpc.add_WindowWorkerServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    bind = f"{_bracket(host)}:{port}"
    try:
        bound = server.add_secure_port(bind, tls.credentials()) if tls else server.add_insecure_port(bind)
    except RuntimeError as exc:  # newer grpc raises instead of returning 0
        raise OSError(f"cannot bind {bind}: {exc}") from exc
    if not bound:
        raise OSError(f"cannot bind {bind}")
    if worker_id is None:
        servicer.worker_id = f"{servicer.worker_id}:{bound}"
    server.start()
    # Stages are loaded (they were handed to us built), so we are ready.
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("worker %s serving %s on %s (tls=%s, token=%s)", servicer.worker_id, sorted(servicer.stages),
                f"{_bracket(host)}:{bound}", tls is not None, token is not None)
    return WorkerServer(server=server, port=bound, host=host, servicer=servicer, health=health_servicer)
