"""The edge side of the wire: `RemoteExecutor`, a `WindowExecutor` backed by one gRPC worker.

    ex = RemoteExecutor("10.0.0.5:50051", tls=ClientTLS(ca, cert, key), token=token)
    feats = ex.run("tinyvit.trunk", batch, meta, timeout=10.0)   # blocking
    print(ex.last_call)                                          # CallStats of the call that just ended
    call = ex.run_future("tinyvit.trunk", batch, meta)           # cancellable, for hedged requests
    feats = call.result(); call.stats

Design:
* One channel per executor, reused by every call (gRPC multiplexes concurrent calls on it).
* Splitting: a batch is cut into chunks of whole windows that fit the message limit (the smaller of ours and
  the worker's, learned once from `Info`) and the stage's `max_batch`. One chunk goes as a unary
  `RunStage`; several go over one `RunStageStream` call (one deadline, one cancellation) and the answers
  are concatenated. If an answer is too large (RESOURCE_EXHAUSTED) the rest of the batch is retried with
  half the chunk size, down to one window. A batch is never refused for its size; only a single window
  larger than the limit raises ValueError.
* Stats: every call produces a `CallStats`. It is on the future (`StageCall.stats`, exact per call) and,
  for convenience, on `RemoteExecutor.last_call` (the most recently finished call; under concurrent use of
  one executor read the future's stats instead).
* Errors: every gRPC failure becomes `WorkerError(address, code, message)`; an expired timeout is
  `WorkerError` with code DEADLINE_EXCEEDED. Bad local arguments raise ValueError before anything is sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pedvit.transport import pedvit_pb2 as pb
from pedvit.transport import pedvit_pb2_grpc as pb_grpc
from pedvit.transport.auth import bearer_metadata
from pedvit.transport.codec import (
    ALLOWED_DTYPES,
    DEFAULT_MAX_MESSAGE_BYTES,
    OUT_DTYPES,
    decode_tensor,
    encode_tensor,
)
from pedvit.transport.tls import ClientTLS

from .worker_types import CallStats, StageInfo, WorkerError, WorkerInfo

logger = logging.getLogger(__name__)

#: Full gRPC service name (health checks ask about it).
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["WindowWorker"].full_name
#: Room left in each request for everything but the batch tensor data (names, shape, framing).
_REQUEST_OVERHEAD = 64 * 1024


class StageCall:
    """A future-like handle of one in-flight `run` (see `RemoteExecutor.run_future`).

    `cancel()` cancels the gRPC call in flight and ends the handle at once (`result()` then raises
    `concurrent.futures.CancelledError`); it returns False if the call had already finished.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done = False
        self._cancelled = False
        self._result: np.ndarray | None = None
        self._exception: BaseException | None = None
        self._rpc: grpc.Future | None = None
        self._callbacks: list[Callable[[StageCall], None]] = []
        #: Filled in when the work ends (also after errors/cancellation, with what was spent so far).
        self.stats: CallStats | None = None

    # -- consumer side --------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the call; True unless it had already finished."""
        with self._cond:
            if self._done:
                return False
            self._cancelled = True
            rpc = self._rpc
        if rpc is not None:
            rpc.cancel()
        self._finish(None, CancelledError())
        return True

    def cancelled(self) -> bool:
        """True if `cancel()` ended the call."""
        with self._cond:
            return self._cancelled

    def done(self) -> bool:
        """True once a result, an error or a cancellation is in."""
        with self._cond:
            return self._done

    def result(self, timeout: float | None = None) -> np.ndarray:
        """Wait for and return the output; re-raises the call's error.

        Raises:
            TimeoutError: if `timeout` passes first (the call keeps running).
            WorkerError, ValueError, concurrent.futures.CancelledError.
        """
        exc = self.exception(timeout)
        if exc is not None:
            raise exc
        assert self._result is not None
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the call; return its error, or None on success."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError("stage call still running")
            return self._exception

    def add_done_callback(self, fn: Callable[[StageCall], None]) -> None:
        """Call `fn(self)` when done (at once if already done), on the thread that finishes the call."""
        with self._cond:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    # -- producer side ----------------------------------------------------------------------------------

    def _attach(self, rpc: grpc.Future) -> None:
        """Record the gRPC call in flight so that cancel() can reach it."""
        with self._cond:
            self._rpc = rpc
            cancelled = self._cancelled
        if cancelled:
            rpc.cancel()

    def _finish(self, result: np.ndarray | None, exception: BaseException | None) -> None:
        with self._cond:
            if self._done:  # e.g. the work ended after a cancel
                return
            self._done = True
            self._result, self._exception = result, exception
            self._rpc = None
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                logger.exception("StageCall done-callback failed")


@dataclass
class _Job:
    """One run: validated inputs plus bookkeeping shared by the chunk loop."""

    stage: str
    batch: np.ndarray
    meta: np.ndarray
    out_dtype: str
    request_id: str
    deadline: float | None
    stats: CallStats
    started: float = field(default_factory=time.perf_counter)


class RemoteExecutor:
    """A `WindowExecutor` that runs stages on one remote worker.

    Args:
        address: "host:port" of the worker.
        tls: mutual-TLS material; None dials plaintext.
        token: bearer token sent on every call.
        max_message_bytes: gRPC message limit on this channel; requests are split to fit it.
        name: executor name for logs/schedulers (default: the address).
    """

    def __init__(
        self,
        address: str,
        *,
        tls: ClientTLS | None = None,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        name: str | None = None,
    ) -> None:
        self.address = address
        self.name = name or address
        self.max_message_bytes = int(max_message_bytes)
        self.last_call: CallStats | None = None
        self._metadata = bearer_metadata(token) if token else ()
        options: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]
        if tls is not None:
            options += tls.channel_options()
            self._channel = grpc.secure_channel(address, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.WindowWorkerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._info: WorkerInfo | None = None
        self._info_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteExecutor({self.address!r}, name={self.name!r})"

    def __enter__(self) -> RemoteExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    # -- public calls ---------------------------------------------------------------------------------

    def run(
        self,
        stage: str,
        batch: np.ndarray,
        meta: np.ndarray,
        *,
        out_dtype: str = "float16",
        timeout: float | None = None,
        request_id: str = "",
    ) -> np.ndarray:
        """Run `stage` on `batch` (B x h x w x C) with `meta` (B x 4 int32); return B x ... outputs.

        Blocks in the calling thread. Stats of the call are in `last_call` afterwards.

        Raises:
            ValueError: bad local arguments (nothing sent).
            WorkerError: the worker refused or failed, or `timeout` seconds passed (DEADLINE_EXCEEDED).
        """
        call = StageCall()
        job = self._job(stage, batch, meta, out_dtype, timeout, request_id)
        self._execute(call, job)
        return call.result()

    def run_future(
        self,
        stage: str,
        batch: np.ndarray,
        meta: np.ndarray,
        *,
        out_dtype: str = "float16",
        timeout: float | None = None,
        request_id: str = "",
    ) -> StageCall:
        """Like `run`, but return at once with a cancellable `StageCall` (work runs on a daemon thread).

        Bad local arguments raise ValueError here, not from the future.
        """
        call = StageCall()
        job = self._job(stage, batch, meta, out_dtype, timeout, request_id)
        thread = threading.Thread(target=self._execute, args=(call, job), name=f"pedvit-call-{self.name}", daemon=True)
        thread.start()
        return call

    def info(self, timeout: float | None = 10.0, *, refresh: bool = False) -> WorkerInfo:
        """The worker's model, stages and limits (cached after the first call unless `refresh`)."""
        with self._info_lock:
            if self._info is None or refresh:
                try:
                    resp = self._stub.Info(pb.InfoRequest(), timeout=timeout, metadata=self._metadata)
                except grpc.RpcError as exc:
                    raise WorkerError.from_rpc_error(self.address, exc) from None
                self._info = _info_from_pb(resp)
            return self._info

    def health(self, timeout: float = 2.0) -> bool:
        """True if the worker answers the standard health check with SERVING within `timeout`."""
        try:
            resp = self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError:
            return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    # -- internals ------------------------------------------------------------------------------------

    def _job(
        self,
        stage: str,
        batch: np.ndarray,
        meta: np.ndarray,
        out_dtype: str,
        timeout: float | None,
        request_id: str,
    ) -> _Job:
        """Validate arguments locally (cheap checks only; the worker validates against the stage spec)."""
        batch = np.asarray(batch)
        meta = np.asarray(meta)
        if batch.ndim < 1 or batch.shape[0] < 1:
            raise ValueError(f"batch must hold at least one window, got shape {list(batch.shape)}")
        if meta.shape != (batch.shape[0], 4):
            raise ValueError(f"meta must be {batch.shape[0]} x 4, got {list(meta.shape)}")
        if not np.issubdtype(meta.dtype, np.integer):
            raise ValueError(f"meta must be integer, got {meta.dtype}")
        if batch.dtype.name not in ALLOWED_DTYPES:
            raise ValueError(f"batch dtype {batch.dtype.name!r} cannot be sent; allowed: {list(ALLOWED_DTYPES)}")
        if out_dtype not in OUT_DTYPES:
            raise ValueError(f"out_dtype must be one of {list(OUT_DTYPES)}, got {out_dtype!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        stats = CallStats(self.address, stage, int(batch.shape[0]))
        return _Job(stage, batch, meta.astype(np.int32, copy=False), out_dtype, request_id, deadline, stats)

    def _remaining(self, job: _Job) -> float | None:
        if job.deadline is None:
            return None
        left = job.deadline - time.monotonic()
        if left <= 0:
            raise WorkerError(self.address, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        return left

    def _chunk_limit(self, job: _Job) -> int:
        """Most windows per request: fits both sides' message limits and the stage's max_batch."""
        info = self.info(timeout=self._remaining(job))
        limit = min(self.max_message_bytes, info.max_message_bytes or self.max_message_bytes)
        per_window = job.batch[0].nbytes + job.meta[0].nbytes
        budget = limit - _REQUEST_OVERHEAD - len(job.stage.encode()) - len(job.request_id.encode())
        if per_window > budget:
            raise ValueError(f"one window is {per_window} bytes, more than the message limit allows ({budget})")
        spec = info.stages.get(job.stage)
        max_batch = spec.max_batch if spec is not None and spec.max_batch > 0 else job.batch.shape[0]
        return max(1, min(budget // max(per_window, 1), max_batch))

    def _request(self, job: _Job, lo: int, hi: int) -> pb.StageRequest:
        batch, meta = job.batch[lo:hi], job.meta[lo:hi]
        job.stats.requests += 1
        job.stats.bytes_sent += batch.nbytes + meta.nbytes
        return pb.StageRequest(
            stage=job.stage,
            batch=encode_tensor(batch),
            meta=encode_tensor(meta),
            out_dtype=job.out_dtype,
            request_id=job.request_id,
        )

    def _answer(self, job: _Job, resp: pb.StageResponse, windows: int) -> np.ndarray:
        """Decode and sanity-check one answer (the worker is not trusted to be well-formed)."""
        try:
            out = decode_tensor(resp.output, allowed_dtypes=(job.out_dtype,))
            if out.ndim < 1 or out.shape[0] != windows:
                raise ValueError(f"answer shape {list(out.shape)} for {windows} windows")
        except ValueError as exc:
            raise WorkerError(self.address, grpc.StatusCode.INTERNAL, f"malformed answer: {exc}") from None
        job.stats.bytes_received += len(resp.output.data)
        job.stats.compute_seconds += resp.compute_seconds
        job.stats.worker_id = resp.worker_id
        return out

    def _send(
        self, call: StageCall, job: _Job, bounds: list[tuple[int, int]]
    ) -> Iterator[tuple[int, pb.StageResponse]]:
        """Send `bounds` chunks (unary for one, one stream for several); yield (windows, answer) in order."""
        timeout = self._remaining(job)
        if len(bounds) == 1:
            lo, hi = bounds[0]
            fut = self._stub.RunStage.future(self._request(job, lo, hi), timeout=timeout, metadata=self._metadata)
            call._attach(fut)
            yield hi - lo, fut.result()
            return
        # Requests are encoded lazily as gRPC pulls them, so at most a few chunks are in memory at once.
        requests = (self._request(job, lo, hi) for lo, hi in bounds)
        stream = self._stub.RunStageStream(requests, timeout=timeout, metadata=self._metadata)
        call._attach(stream)
        answered = 0
        for (lo, hi), resp in zip(bounds, stream):
            answered += 1
            yield hi - lo, resp
        if answered < len(bounds):  # a stream that ends OK but early would otherwise be resent forever
            raise WorkerError(
                self.address, grpc.StatusCode.INTERNAL, f"stream ended after {answered} of {len(bounds)} answers"
            )

    def _execute(self, call: StageCall, job: _Job) -> None:
        """Run a job to completion, finishing `call` with the output or the error."""
        outputs: list[np.ndarray] = []
        done = 0
        total = job.batch.shape[0]
        try:
            chunk = self._chunk_limit(job)
            while done < total and not call.cancelled():
                bounds = [(lo, min(lo + chunk, total)) for lo in range(done, total, chunk)]
                try:
                    for windows, resp in self._send(call, job, bounds):
                        outputs.append(self._answer(job, resp, windows))
                        done += windows
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and chunk > 1 and not call.cancelled():
                        # An answer (or request) was too large: go on with smaller chunks.
                        chunk = max(1, chunk // 2)
                        logger.info("%s: %s; retrying the remaining windows %d at a time",
                                    self.address, exc.details(), chunk)
                        continue
                    raise WorkerError.from_rpc_error(self.address, exc) from None
            if call.cancelled():
                raise CancelledError()
            # Always hand back a fresh writable array (decoded answers are read-only views).
            result: np.ndarray | None = (
                outputs[0].copy() if len(outputs) == 1 else np.concatenate(outputs, axis=0)
            )
            error: BaseException | None = None
        except Exception as exc:  # WorkerError, ValueError, CancelledError, ...: never leave a future hanging
            result, error = None, exc
        job.stats.wall_seconds = time.perf_counter() - job.started
        call.stats = job.stats
        self.last_call = job.stats
        call._finish(result, error)


def _info_from_pb(resp: pb.InfoResponse) -> WorkerInfo:
    stages = {
        s.name: StageInfo(s.name, tuple(s.input_dtypes), s.channels, s.max_side, s.multiple_of, s.max_batch)
        for s in resp.stages
    }
    return WorkerInfo(resp.model_name, stages, resp.pedvit_version, resp.worker_id, resp.max_message_bytes)
