"""`pedvit bench`: end-to-end latency, edge CPU, overhead and bytes of split inference vs two baselines.

For every model and plan, in the same run and on the same image:

* **monolithic**: `SamPredictor.set_image` (the whole encoder on the edge) + one mask decode;
* **cloud-only**: the edge resizes, sends the whole 1024 x 1024 canvas to ONE worker process (stage
  `sam.encoder`), gets the 64 x 64 x 256 embedding back, and decodes;
* **pedvit**: `DistributedSamPredictor` over the first N of a pool of gRPC worker processes (N in --workers).

Per request it records a latency breakdown (edge preprocessing, fan-out rounds, worker compute, serialisation
estimate, transfer/queueing, edge merge, mask decoder), payload bytes and the edge process CPU seconds
(`time.process_time`: every thread of this process, so gRPC and codec threads count; worker processes do not).
Rows report medians over `--repeats` requests, and ratios against the baselines of the same run.

Workers run on loopback by default (`--pin-workers` pins them to cores the edge does not use, so that a
machine with enough cores can show the parallel speedup), on other machines (`--addresses`), or in Linux
network namespaces behind emulated links (`--netem`, see `pedvit.eval.netem`).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pedvit.cloud.launch import WorkerProcess, start_worker, stop_workers, worker_argv

from .perf_report import targets

#: Plans benchmarked per model by default.
DEFAULT_PLANS: dict[str, tuple[str, ...]] = {
    "mobile_sam": ("tinyvit-isolated",),
    "vit_b": ("vit-exact", "vit-isolated"),
    "vit_l": ("vit-exact", "vit-isolated"),
    "vit_h": ("vit-exact", "vit-isolated"),
}


# ------------------------------------------------------------------------------------------ workers
def bench_worker_argv(model: str, *, host: str = "127.0.0.1", device: str = "cpu", threads: int = 2) -> list[str]:
    """The command line of one benchmark worker: it also serves the whole encoder (the cloud-only baseline)."""
    return worker_argv(model, host=host, device=device, threads=threads, extra_args=["--serve-full-encoder"])


def core_layout(n_workers: int, pin: bool) -> tuple[tuple[int, ...] | None, list[tuple[int, ...] | None]]:
    """(edge cores, per-worker cores). Pinned: the edge keeps the first core(s), workers share the rest
    round-robin. On a 2-core machine that is one core for the edge and one for all workers."""
    if not pin:
        return None, [None] * n_workers
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("--pin-workers needs at least 2 cores")
    edge_n = max(1, len(cores) // (n_workers + 1))
    edge, rest = tuple(cores[:edge_n]), cores[edge_n:]
    per = max(1, len(rest) // n_workers)
    layout = [tuple(rest[(i * per) % len(rest) : (i * per) % len(rest) + per]) for i in range(n_workers)]
    return edge, layout


# --------------------------------------------------------------------------------------- measuring
@dataclass
class Sample:
    """One request's measurements (seconds, bytes)."""

    end_to_end_s: float
    preprocess_s: float
    encode_s: float
    decode_s: float
    edge_cpu_s: float
    dispatch_s: float = 0.0
    worker_wall_s: float = 0.0
    worker_compute_s: float = 0.0
    serialise_s: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    edge_compute_s: float = 0.0

    @property
    def bytes_total(self) -> int:
        return self.bytes_sent + self.bytes_received

    @property
    def overhead_s(self) -> float:
        """gRPC + codec + transfer + queueing on the critical worker: its wall time minus its compute."""
        return max(0.0, self.worker_wall_s - self.worker_compute_s)

    @property
    def merge_s(self) -> float:
        """Edge work outside the fan-out rounds (stitching, global blocks, neck, fusion)."""
        return max(0.0, self.encode_s - self.dispatch_s)


@dataclass
class CodecSpeed:
    """Measured seconds per byte of protobuf encode + serialise + parse + decode (the serialisation estimate)."""

    seconds_per_byte: float

    @classmethod
    def measure(cls, nbytes: int = 8 << 20, repeats: int = 3) -> "CodecSpeed":
        from pedvit.transport import pedvit_pb2 as pb
        from pedvit.transport.codec import decode_tensor, encode_tensor

        array = np.random.default_rng(0).standard_normal(nbytes // 2).astype(np.float16)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            wire = pb.StageRequest(stage="x", batch=encode_tensor(array)).SerializeToString()
            decode_tensor(pb.StageRequest.FromString(wire).batch)
            best = min(best, time.perf_counter() - started)
        return cls(best / array.nbytes)


def _decode_once(predictor: Any) -> float:
    """Run the prompt encoder + mask decoder once (one foreground point at the centre); return seconds."""
    import torch

    device = predictor.model.device
    h, w = predictor.input_size
    coords = torch.tensor([[[w / 2.0, h / 2.0]]], device=device)
    labels = torch.ones(1, 1, dtype=torch.int64, device=device)
    _sync(device)
    started = time.perf_counter()
    predictor.predict_torch(coords, labels, multimask_output=True)
    _sync(device)
    return time.perf_counter() - started


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def _monolithic_predictor(model: Any) -> Any:
    """A `SamPredictor` whose monolithic `_encode` moves the input to the model's device (the stock one
    builds a CPU tensor)."""
    import torch

    from pedvit.edge.predictor import SamPredictor

    class DevicePredictor(SamPredictor):
        def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.array(resized, dtype=np.float32)).to(self.model.device).permute(2, 0, 1)[None]
            return self.model.image_encoder(self.model.preprocess(x))

    return DevicePredictor(model)


def measure_monolithic(model: Any, image: np.ndarray) -> Sample:
    """One monolithic request: set_image + one decode on this process."""
    predictor = _monolithic_predictor(model)
    cpu, started = time.process_time(), time.perf_counter()
    predictor.set_image(image)
    _sync(model.device)
    encode_wall = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    decode_s = _decode_once(predictor)
    pre = predictor.timings["preprocess_s"]
    return Sample(encode_wall + decode_s, pre, encode_wall - pre, decode_s, cpu_s, edge_compute_s=encode_wall - pre)


def measure_cloud_only(model: Any, image: np.ndarray, executor: Any, codec: CodecSpeed) -> Sample:
    """One cloud-only request: the edge sends the whole padded canvas to one worker, then decodes."""
    import torch

    from pedvit.edge.predictor import SamPredictor
    from pedvit.plans.plans import SplitPlan
    from pedvit.plans.stages import FULL_ENCODER

    class CloudOnly(SamPredictor):
        def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
            canvas = SplitPlan.canvas(resized, self.model.img_size)
            meta = np.array([[0, 0, resized.shape[0], resized.shape[1]]], dtype=np.int32)
            started = time.perf_counter()
            out = executor.run(FULL_ENCODER, canvas[None], meta, out_dtype="float16", timeout=600.0)
            self.call_wall = time.perf_counter() - started
            return torch.from_numpy(np.asarray(out, dtype=np.float32)).permute(0, 3, 1, 2).to(self.model.device)

    predictor = CloudOnly(model)
    cpu, started = time.process_time(), time.perf_counter()
    predictor.set_image(image)
    encode_wall = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    decode_s = _decode_once(predictor)
    stats = executor.stats()
    pre = predictor.timings["preprocess_s"]
    return Sample(
        encode_wall + decode_s, pre, encode_wall - pre, decode_s, cpu_s,
        dispatch_s=predictor.call_wall, worker_wall_s=stats.wall_seconds, worker_compute_s=stats.compute_seconds,
        serialise_s=codec.seconds_per_byte * (stats.bytes_sent + stats.bytes_received),
        bytes_sent=stats.bytes_sent, bytes_received=stats.bytes_received,
    )


def measure_split(predictor: Any, image: np.ndarray, codec: CodecSpeed) -> Sample:
    """One pedvit request through a `DistributedSamPredictor` (its engine's recorder times the fan-out rounds)."""
    cpu, started = time.process_time(), time.perf_counter()
    predictor.set_image(image)
    _sync(predictor.model.device)
    encode_wall = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    decode_s = _decode_once(predictor)
    recorder = predictor.engine.last_recorder
    run = recorder.record
    workers = list(run.workers.values())
    critical = max(workers, key=lambda w: w.wall_s) if workers else None
    sent = sum(w.bytes_sent for w in workers)
    received = sum(w.bytes_received for w in workers)
    pre = predictor.timings["preprocess_s"]
    return Sample(
        encode_wall + decode_s, pre, encode_wall - pre, decode_s, cpu_s,
        dispatch_s=sum(recorder.round_seconds),
        worker_wall_s=critical.wall_s if critical else 0.0,
        worker_compute_s=critical.compute_s if critical else 0.0,
        serialise_s=codec.seconds_per_byte * (critical.bytes_sent + critical.bytes_received) if critical else 0.0,
        bytes_sent=sent, bytes_received=received, edge_compute_s=run.edge_compute_s,
    )


def _median(samples: Sequence[Sample], key: Callable[[Sample], float]) -> float:
    return float(statistics.median(key(s) for s in samples))


def summarise(samples: Sequence[Sample]) -> dict[str, float]:
    """Medians of every field over repeats."""
    keys = {
        "end_to_end_s": lambda s: s.end_to_end_s,
        "preprocess_s": lambda s: s.preprocess_s,
        "encode_s": lambda s: s.encode_s,
        "decode_s": lambda s: s.decode_s,
        "edge_cpu_s": lambda s: s.edge_cpu_s,
        "dispatch_s": lambda s: s.dispatch_s,
        "worker_wall_s": lambda s: s.worker_wall_s,
        "worker_compute_s": lambda s: s.worker_compute_s,
        "serialise_s": lambda s: s.serialise_s,
        "transfer_s": lambda s: max(0.0, s.overhead_s - s.serialise_s),
        "overhead_s": lambda s: s.overhead_s,
        "merge_s": lambda s: s.merge_s,
        "edge_compute_s": lambda s: s.edge_compute_s,
        "bytes_sent": lambda s: s.bytes_sent,
        "bytes_received": lambda s: s.bytes_received,
        "bytes_total": lambda s: s.bytes_total,
    }
    return {name: _median(samples, fn) for name, fn in keys.items()}


# ------------------------------------------------------------------------------------------ running
@dataclass
class BenchOptions:
    models: tuple[str, ...] = ("mobile_sam", "vit_b")
    workers: tuple[int, ...] = (1, 2, 4, 8)
    repeats: int = 3
    device: str = "cpu"
    image: str | None = None
    plans: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PLANS))
    addresses: tuple[str, ...] = ()  # external workers (all of one model); empty: start them here
    pin_workers: bool = False
    worker_threads: int | None = None
    edge_threads: int | None = None
    network: str = "loopback"
    progress: bool = True
    fusion: str = "auto"  # the learned edge fusion of tinyvit-isolated: "auto" (default, as the predictor) or "off"


def load_image(path: str | None) -> np.ndarray:
    """The benchmark image: `path`, else the first bundled real photo."""
    if path:
        import cv2

        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path!r}")
        return np.ascontiguousarray(bgr[..., ::-1])
    from pedvit.data import real_photos

    photos = real_photos()
    first = photos[0]
    image = getattr(first, "image", first)
    if callable(image):
        image = image()
    return np.asarray(image)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def run_model(model_name: str, options: BenchOptions, image: np.ndarray, codec: CodecSpeed) -> list[dict[str, Any]]:
    """Every row (baselines + each plan x worker count) of one model."""
    import torch

    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.models import build_model
    from pedvit.transport.client import RemoteExecutor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(model_name).to(options.device)
    n_max = max(options.workers)
    started: list[WorkerProcess] = []
    edge_cpus = None
    logs = tempfile.TemporaryDirectory(prefix="pedvit-bench-workers-")
    if options.addresses:
        addresses = list(options.addresses)
        if len(addresses) < n_max:
            raise ValueError(f"--addresses gives {len(addresses)} workers, --workers asks for {n_max}")
    else:
        edge_cpus, layout = core_layout(n_max, options.pin_workers)
        threads = options.worker_threads or max(1, (len(os.sched_getaffinity(0)) // n_max) if not options.pin_workers else len(layout[0] or (1,)))
        bar = _progress(n_max, options.progress, f"{model_name}: starting workers")
        try:
            for i, cpus in enumerate(layout):
                started.append(start_worker(bench_worker_argv(model_name, device=options.device), Path(logs.name) / f"w{i}.log",
                                            name=f"w{i}", own_session=True, cpus=cpus, env={"OMP_NUM_THREADS": str(threads)}))
                bar.update()
        except BaseException:
            stop_workers(started)
            logs.cleanup()
            raise
        finally:
            bar.close()
        addresses = [w.address for w in started]
    previous_affinity = os.sched_getaffinity(0)
    if edge_cpus:
        os.sched_setaffinity(0, edge_cpus)
    plans = options.plans.get(model_name, DEFAULT_PLANS[model_name])
    total = options.repeats * (2 + len(plans) * len(options.workers))
    bar = _progress(total, options.progress, f"{model_name}")
    rows: list[dict[str, Any]] = []
    try:
        # Warm-up: first calls pay for lazy initialisation (allocator, gRPC channel, thread pools).
        cloud = RemoteExecutor(addresses[0], name="cloud-only")
        measure_monolithic(model, image)
        measure_cloud_only(model, image, cloud, codec)
        mono = summarise([_step(bar, measure_monolithic, model, image) for _ in range(options.repeats)])
        cloud_only = summarise([_step(bar, measure_cloud_only, model, image, cloud, codec) for _ in range(options.repeats)])
        cloud.close()
        base = {"model": model_name, "device": options.device, "network": options.network, "image_size": list(image.shape[:2])}
        rows.append({**base, "plan": "monolithic", "workers": 0, **mono})
        rows.append({**base, "plan": "cloud-only", "workers": 1, **cloud_only})
        for plan in plans:
            for n in options.workers:
                with DistributedSamPredictor(model, addresses[:n], plan=plan, fusion=options.fusion) as predictor:
                    fusion = getattr(predictor.plan, "fusion", None)
                    if isinstance(fusion, torch.nn.Module):
                        fusion.to(options.device)
                    measure_split(predictor, image, codec)  # warm-up
                    summary = summarise([_step(bar, measure_split, predictor, image, codec) for _ in range(options.repeats)])
                rows.append({**base, "plan": plan, "workers": n, "fusion": fusion is not None, **summary})
    finally:
        bar.close()
        os.sched_setaffinity(0, previous_affinity)
        stop_workers(started)
        logs.cleanup()
    for row in rows:
        add_ratios(row, mono, cloud_only)
    return rows


def _step(bar: Any, fn: Callable[..., Sample], *args: Any) -> Sample:
    sample = fn(*args)
    bar.update()
    return sample


def add_ratios(row: dict[str, Any], mono: dict[str, float], cloud_only: dict[str, float]) -> None:
    """The headline ratios of one row against the baselines of the same run."""
    row["latency_ratio_vs_monolithic"] = row["end_to_end_s"] / mono["end_to_end_s"]
    row["edge_cpu_share"] = row["edge_cpu_s"] / mono["edge_cpu_s"]
    row["overhead_share"] = row["overhead_s"] / row["end_to_end_s"] if row["end_to_end_s"] else 0.0
    row["bytes_ratio_vs_cloud_only"] = row["bytes_total"] / cloud_only["bytes_total"] if cloud_only["bytes_total"] else 0.0


def run_bench(options: BenchOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All rows for `options.models`, and the target checks."""
    if options.edge_threads:
        import torch

        torch.set_num_threads(options.edge_threads)  # the edge (and the monolithic baseline) use this many
    image = load_image(options.image)
    codec = CodecSpeed.measure()
    rows: list[dict[str, Any]] = []
    for model in options.models:
        rows += run_model(model, options, image, codec)
    return rows, targets(rows)
