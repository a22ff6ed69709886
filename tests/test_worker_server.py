"""Worker server + RemoteExecutor over real gRPC on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pedvit.cloud.launch import parse_ready_line
from pedvit.cloud.worker import WorkerServer, serve
from pedvit.plans.stage import StageSpec
from pedvit.transport import pedvit_pb2 as pb
from pedvit.transport import pedvit_pb2_grpc as pb_grpc
from pedvit.transport.client import RemoteExecutor
from pedvit.transport.calls import WorkerError
from pedvit.transport.codec import encode_tensor

REPO = Path(__file__).resolve().parent.parent
KIB = 1024


class DoubleStage:
    """Returns 2 * batch as float32."""

    def __init__(self, name: str = "double", max_batch: int = 64) -> None:
        self.spec = StageSpec(name, ("uint8", "float16", "float32"), channels=3, max_side=128, max_batch=max_batch)

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32) * 2


class ExpandStage:
    """Answers 4x as many float32 channels as it gets uint8 ones: a 16x larger answer than request."""

    spec = StageSpec("expand", ("uint8",), channels=3, max_side=128)

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        return np.repeat(batch.astype(np.float32), 4, axis=-1)


class BoomStage:
    spec = StageSpec("boom", ("float32",), channels=3, max_side=64)

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        raise RuntimeError("secret-payload-1234")


class WrongBatchStage:
    spec = StageSpec("wrong_b", ("float32",), channels=3, max_side=64)

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0] + 1, 2), np.float32)


def make_test_stages(model_name: str = "test", checkpoint: str | None = None) -> dict:
    """Stage factory, also used by the CLI subprocess test via --stages-factory."""
    stages = [DoubleStage(), ExpandStage(), BoomStage(), WrongBatchStage()]
    return {s.spec.name: s for s in stages}


def windows(b: int, side: int = 16, dtype: str = "uint8", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, 255, (b, side, side, 3)).astype(dtype)
    meta = np.tile(np.array([0, 0, side, side], np.int32), (b, 1))
    meta[:, 0] = np.arange(b) * side
    return batch, meta


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerServer]:
    w = serve(0, make_test_stages(), model_name="test-model", worker_id="w-test")
    yield w
    w.stop(grace=None)


@pytest.fixture(scope="module")
def client(worker: WorkerServer) -> Iterator[RemoteExecutor]:
    with RemoteExecutor(worker.address, name="w0") as ex:
        yield ex


@pytest.fixture(scope="module")
def stub(worker: WorkerServer) -> Iterator[pb_grpc.WindowWorkerStub]:
    with grpc.insecure_channel(worker.address) as ch:
        yield pb_grpc.WindowWorkerStub(ch)


def test_round_trip_and_stats(client: RemoteExecutor) -> None:
    batch, meta = windows(5)
    out = client.run("double", batch, meta, request_id="req-1")
    assert out.dtype == np.float16 and out.shape == batch.shape and out.flags.writeable
    np.testing.assert_array_equal(out, batch.astype(np.float16) * 2)
    out32 = client.run("double", batch.astype(np.float32), meta, out_dtype="float32")
    assert out32.dtype == np.float32
    s = client.stats()
    assert s is not None and s.stage == "double" and s.windows == 5 and s.requests == 1
    assert s.bytes_sent == batch.nbytes * 4 + meta.nbytes and s.bytes_received == out32.nbytes
    assert s.worker_id == "w-test" and s.wall_seconds >= s.compute_seconds >= 0


def test_info_and_health(client: RemoteExecutor) -> None:
    info = client.info()
    assert info.model_name == "test-model" and info.worker_id == "w-test"
    assert set(info.stages) == {"double", "expand", "boom", "wrong_b"}
    double = info.stages["double"]
    assert double.channels == 3 and double.input_dtypes == ("uint8", "float16", "float32")
    assert info.max_message_bytes == 64 * 2**20
    assert client.health()


def _base_request() -> pb.StageRequest:
    batch, meta = windows(2)
    return pb.StageRequest(stage="double", batch=encode_tensor(batch), meta=encode_tensor(meta))


@st.composite
def malformed_requests(draw: st.DrawFn) -> pb.StageRequest:
    """A valid request with one thing broken."""
    r = _base_request()
    kind = draw(st.sampled_from([
        "stage", "dtype_name", "dtype_spec", "rank", "channels", "short", "long", "huge", "side",
        "batch_size", "meta_shape", "meta_dtype", "meta_negative", "meta_valid", "out_dtype",
        "no_batch", "no_meta",
    ]))
    if kind == "stage":
        r.stage = draw(st.text(max_size=20).filter(lambda s: s not in make_test_stages()))
    elif kind == "dtype_name":
        r.batch.dtype = draw(st.sampled_from(["float64", "", "int8", "uint8\x00"]))
    elif kind == "dtype_spec":  # allowed on the wire, not by the stage
        r.batch.CopyFrom(encode_tensor(np.zeros((2, 16, 16, 3), np.int32)))
    elif kind == "rank":
        shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=6).filter(lambda s: len(s) != 4))
        r.batch.CopyFrom(encode_tensor(np.zeros(shape, np.uint8)))
    elif kind == "channels":
        c = draw(st.integers(0, 8).filter(lambda c: c != 3))
        r.batch.CopyFrom(encode_tensor(np.zeros((2, 16, 16, c), np.uint8)))
    elif kind == "short":
        r.batch.data = r.batch.data[: draw(st.integers(0, len(r.batch.data) - 1))]
    elif kind == "long":
        r.batch.data += draw(st.binary(min_size=1, max_size=9))
    elif kind == "huge":
        r.batch.ClearField("shape")
        r.batch.shape.extend([2, draw(st.integers(2**16, 2**40)), draw(st.integers(2**16, 2**40)), 3])
    elif kind == "side":
        side = draw(st.sampled_from([0, 129, 1024]))
        r.batch.CopyFrom(encode_tensor(np.zeros((2, side, 16, 3), np.uint8)))
    elif kind == "batch_size":
        b, m = windows(65, side=1)
        r.batch.CopyFrom(encode_tensor(b))
        r.meta.CopyFrom(encode_tensor(m))
    elif kind == "meta_shape":
        shape = draw(st.sampled_from([(2,), (2, 3), (3, 4), (1, 4), (2, 4, 1), (0, 4)]))
        r.meta.CopyFrom(encode_tensor(np.zeros(shape, np.int32)))
    elif kind == "meta_dtype":
        r.meta.CopyFrom(encode_tensor(np.zeros((2, 4), draw(st.sampled_from(["float32", "uint8", "float16"])))))
    elif kind == "meta_negative":
        m = np.zeros((2, 4), np.int32)
        m[draw(st.integers(0, 1)), draw(st.integers(0, 3))] = draw(st.integers(-(2**31), -1))
        r.meta.CopyFrom(encode_tensor(m))
    elif kind == "meta_valid":
        m = np.full((2, 4), 16, np.int32)
        m[draw(st.integers(0, 1)), draw(st.integers(2, 3))] = draw(st.integers(17, 2**31 - 1))
        r.meta.CopyFrom(encode_tensor(m))
    elif kind == "out_dtype":
        r.out_dtype = draw(st.sampled_from(["float64", "uint8", "fp16", " float16"]))
    elif kind == "no_batch":
        r.ClearField("batch")
    else:
        r.ClearField("meta")
    return r


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=malformed_requests())
def test_malformed_requests_are_invalid_argument(
    request: pb.StageRequest, stub: pb_grpc.WindowWorkerStub, client: RemoteExecutor
) -> None:
    with pytest.raises(grpc.RpcError) as exc_info:
        stub.RunStage(request, timeout=5)
    assert exc_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc_info.value.details()
    assert exc_info.value.details()  # readable, non-empty
    # Streamed, the same request ends the stream with the same code.
    with pytest.raises(grpc.RpcError) as exc_info:
        list(stub.RunStageStream(iter([_base_request(), request]), timeout=5))
    assert exc_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.health()


def test_invalid_argument_messages_are_readable(client: RemoteExecutor) -> None:
    batch, meta = windows(2)
    with pytest.raises(WorkerError) as e:
        client.run("nope", batch, meta)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown stage 'nope'" in e.value.message
    with pytest.raises(WorkerError, match="expects 3 channels, got 4"):
        client.run("double", np.zeros((2, 16, 16, 4), np.uint8), meta)


def test_stage_failure_is_internal_and_worker_survives(client: RemoteExecutor) -> None:
    batch, meta = windows(2, dtype="float32")
    for stage in ("boom", "wrong_b"):
        with pytest.raises(WorkerError) as e:
            client.run(stage, batch, meta)
        assert e.value.code == grpc.StatusCode.INTERNAL
        assert "secret" not in str(e.value)  # the exception text may hold data: not sent
    assert client.health()
    assert client.run("double", batch, meta).shape == batch.shape


def test_local_argument_errors(client: RemoteExecutor) -> None:
    batch, meta = windows(2)
    with pytest.raises(ValueError, match="meta"):
        client.run("double", batch, meta[:1])
    with pytest.raises(ValueError, match="out_dtype"):
        client.run("double", batch, meta, out_dtype="float64")
    with pytest.raises(ValueError, match="float64"):
        client.run("double", batch.astype(np.float64), meta)
    with pytest.raises(ValueError, match="at least one window"):
        client.run("double", batch[:0], meta[:0])


def test_oversize_batch_is_split_and_streamed() -> None:
    limit = 256 * KIB
    w = serve(0, make_test_stages(), max_message_bytes=limit)
    try:
        batch, meta = windows(30, side=64, dtype="float32")  # 48 KiB per window, 1.4 MiB in all
        with RemoteExecutor(w.address, max_message_bytes=limit) as ex:
            out = ex.run("double", batch, meta, out_dtype="float32")
            np.testing.assert_array_equal(out, batch * 2)
            assert (s := ex.stats()) is not None and s.requests > 1
        # A client with a larger limit learns the worker's from Info and splits all the same.
        with RemoteExecutor(w.address) as ex:
            np.testing.assert_array_equal(ex.run("double", batch, meta, out_dtype="float32"), batch * 2)
            # Answers 16x the request size: the too-large answers are refused and the client halves.
            small, small_meta = windows(12, side=64)
            out = ex.run("expand", small, small_meta, out_dtype="float32")
            np.testing.assert_array_equal(out, np.repeat(small.astype(np.float32), 4, axis=-1))
            assert (s := ex.stats()) is not None and s.requests > 12
    finally:
        w.stop(None)


def test_batch_over_stage_max_batch_is_split(client: RemoteExecutor) -> None:
    batch, meta = windows(70, side=4)
    out = client.run("double", batch, meta, out_dtype="float32")
    np.testing.assert_array_equal(out, batch * 2.0)
    assert (s := client.stats()) is not None and s.requests == 2


@pytest.fixture(scope="module")
def slow_worker() -> Iterator[WorkerServer]:
    w = serve(0, make_test_stages(), delay_per_window_s=0.1)
    yield w
    w.stop(None)


def test_delay_option_slows_the_worker(slow_worker: WorkerServer) -> None:
    batch, meta = windows(3)
    with RemoteExecutor(slow_worker.address) as ex:
        ex.run("double", batch, meta)
        s = ex.stats()
        assert s is not None and s.compute_seconds >= 0.3 and s.wall_seconds >= 0.3


def test_deadline_is_a_worker_error(slow_worker: WorkerServer) -> None:
    batch, meta = windows(3)
    with RemoteExecutor(slow_worker.address) as ex:
        ex.info()  # warm the cache so the deadline hits RunStage
        with pytest.raises(WorkerError) as e:
            ex.run("double", batch, meta, timeout=0.05)
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_futures_hedging_and_cancel(worker: WorkerServer, slow_worker: WorkerServer) -> None:
    batch, meta = windows(10)  # 1 s on the slow worker
    with RemoteExecutor(worker.address) as fast, RemoteExecutor(slow_worker.address) as slow:
        slow.info()
        slow_call = slow.run_future("double", batch, meta)
        fast_call = fast.run_future("double", batch, meta)
        out = fast_call.result(timeout=10)
        assert not slow_call.done()
        assert slow_call.cancel() and slow_call.cancelled() and slow_call.done()
        with pytest.raises(CancelledError):
            slow_call.result(timeout=1)
        assert not fast_call.cancel()  # already finished
        np.testing.assert_array_equal(out, batch.astype(np.float16) * 2)
        assert fast_call.stats is not None and fast_call.stats.windows == 10
        seen = []
        fast_call.add_done_callback(seen.append)
        assert seen == [fast_call]
        assert slow.health()


def test_unreachable_worker() -> None:
    with RemoteExecutor("127.0.0.1:1") as ex:
        assert not ex.health(timeout=0.5)
        with pytest.raises(WorkerError) as e:
            ex.run("double", *windows(1), timeout=2)
        assert e.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_token_auth() -> None:
    w = serve(0, make_test_stages(), token="s3cret", max_message_bytes=128 * KIB)
    try:
        batch, meta = windows(2)
        big, big_meta = windows(12, side=64, dtype="float32")  # split: exercises the streaming RPC
        for token in (None, "wrong", "s3cret-but-longer", ""):
            with RemoteExecutor(w.address, token=token) as ex:
                assert ex.health()  # health needs no token (orchestrator probes)
                for b, m in ((batch, meta), (big, big_meta)):
                    with pytest.raises(WorkerError) as e:
                        ex.run("double", b, m)
                    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(w.address) as ch:  # the stream method itself is guarded
            stream = pb_grpc.WindowWorkerStub(ch).RunStageStream(iter([_base_request()]), timeout=5)
            with pytest.raises(grpc.RpcError) as rpc_exc:
                list(stream)
            assert rpc_exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with RemoteExecutor(w.address, token="s3cret", max_message_bytes=128 * KIB) as ex:
            np.testing.assert_array_equal(ex.run("double", big, big_meta, out_dtype="float32"), big * 2)
    finally:
        w.stop(None)


def test_port_in_use_raises(worker: WorkerServer) -> None:
    with pytest.raises(OSError):
        serve(worker.port, make_test_stages())


def test_cli_subprocess_ready_line_and_sigterm(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cli-token\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    cmd = [sys.executable, "-m", "pedvit", "worker", "--port", "0", "--worker-id", "cli",
           "--token-file", str(token_file), "--stages-factory", "test_worker_server:make_test_stages"]
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            port = parse_ready_line(line)
            assert port is not None and line == f"PEDVIT_WORKER_READY port={port}", line
            with RemoteExecutor(f"127.0.0.1:{port}", token="cli-token") as ex:
                assert ex.health(timeout=5)
                assert ex.info().worker_id == "cli"
                batch, meta = windows(2)
                np.testing.assert_array_equal(ex.run("double", batch, meta, out_dtype="float32"), batch * 2.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_servicer_rejects_misnamed_stage() -> None:
    with pytest.raises(ValueError, match="spec is named"):
        serve(0, {"other": DoubleStage()})


def test_register_cli() -> None:
    import argparse

    from pedvit.cli.worker import DEFAULT_STAGES_FACTORY, register

    parser = argparse.ArgumentParser(prog="pedvit")
    sub = register(parser.add_subparsers(dest="command", required=True))
    assert "TEST ONLY" in sub.format_help()
    args = parser.parse_args(["worker", "--port", "7", "--max-message-mb", "8", "--slowdown-per-window", "0.5"])
    assert callable(args.func) and args.port == 7 and args.model == "mobile_sam"
    assert args.max_message_mb == 8 and args.slowdown_per_window == 0.5
    assert args.stages_factory == DEFAULT_STAGES_FACTORY == "pedvit.plans.stages:build_worker_stages"
