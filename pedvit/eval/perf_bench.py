"""`pedvit bench`: end-to-end latency, edge CPU, overhead and bytes of split inference vs two baselines.

For every model and plan, in the same run and on the same image:

* **monolithic**: `SamPredictor.set_image` (the whole encoder on the edge) + one mask decode;
* **cloud-only**: the edge resizes, sends the whole 1024 x 1024 canvas to ONE worker process (stage
  `sam.encoder`), gets the 64 x 64 x 256 embedding back, and decodes;
* **pedvit**: `DistributedSamPredictor` over the first N of a pool of gRPC worker processes (N in --workers).

Per request it records a latency breakdown (edge preprocessing, fan-out rounds, worker compute, serialisation
estimate, transfer/queueing, edge merge, mask decoder), payload bytes and the edge process CPU seconds
(`time.process_time`: every thread of this process, so gRPC and codec threads count; worker processes do not).
The configurations run interleaved (one warm-up each, then A B C A B C ..., `run_interleaved`); rows report
medians over `--repeats` requests, min / max / spread of end-to-end (`bench_noise`), and ratios against the
baselines of the same run. `pedvit.eval.bench_run` drives a whole run (and the projection's calibration).

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

from .bench_noise import interleaved, spread_summary

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
    """Medians of every field over repeats, the sample count, and min / max / spread of end-to-end
    (spread = (max - min) / median, `bench_noise.spread_summary`)."""
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
    out: dict[str, float] = {name: _median(samples, fn) for name, fn in keys.items()}
    spread = spread_summary([s.end_to_end_s for s in samples])
    out.update(samples=len(samples), end_to_end_min_s=spread["min"], end_to_end_max_s=spread["max"],
               end_to_end_spread=spread["spread"])
    return out


# ------------------------------------------------------------------------------------------ running
#: What `pedvit bench` runs without arguments (about 2 minutes on a quiet 2-core machine) and with --full.
QUICK_MODELS, QUICK_WORKERS = ("mobile_sam",), (1, 2, 4)
FULL_MODELS, FULL_WORKERS = ("mobile_sam", "vit_b"), (1, 2, 4, 8)


@dataclass
class BenchOptions:
    models: tuple[str, ...] = QUICK_MODELS
    workers: tuple[int, ...] = QUICK_WORKERS
    repeats: int = 5
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
    project: bool = True  # measure the parts for the projected multi-machine latency (`pedvit.eval.projection`)


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


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar on stderr (its ETA is the estimate that counts: it comes from this run's own requests)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def load_model(model_name: str, device: str) -> Any:
    from pedvit.models import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(model_name).to(device)


def start_pool(model_name: str, n: int, options: BenchOptions, logs: str,
               cpus: Sequence[tuple[int, ...] | None] | None = None) -> list[WorkerProcess]:
    """Start n benchmark workers (one torch thread count for all: --worker-threads, else cores / n or the
    pinned cores' count); all are stopped again if one fails to start."""
    layout = list(cpus) if cpus is not None else [None] * n
    threads = options.worker_threads or (len(layout[0]) if layout[0] else max(1, len(os.sched_getaffinity(0)) // n))
    started: list[WorkerProcess] = []
    bar = progress_bar(n, options.progress, f"{model_name}: starting workers")
    try:
        for i, worker_cpus in enumerate(layout):
            started.append(start_worker(bench_worker_argv(model_name, device=options.device), Path(logs) / f"w{i}.log",
                                        name=f"w{i}", own_session=True, cpus=worker_cpus, env={"OMP_NUM_THREADS": str(threads)}))
            bar.update()
    except BaseException:
        stop_workers(started)
        raise
    finally:
        bar.close()
    return started


@dataclass
class Config:
    """One configuration of the interleaved run: a row's label and the function that measures one request."""

    plan: str
    workers: int
    measure: Callable[[], Sample]
    fusion: bool | None = None


def open_split_predictor(model: Any, workers: Sequence[Any], plan: str, options: BenchOptions) -> Any:
    """A `DistributedSamPredictor` over `workers` (addresses or executors), its fusion on the bench's device."""
    import torch

    from pedvit.edge.distributed import DistributedSamPredictor

    predictor = DistributedSamPredictor(model, list(workers), plan=plan, fusion=options.fusion)
    fusion = getattr(predictor.plan, "fusion", None)
    if isinstance(fusion, torch.nn.Module):
        fusion.to(options.device)
    return predictor


def split_configs(model: Any, options: BenchOptions, addresses: Sequence[str], image: np.ndarray, codec: CodecSpeed,
                  opened: list[Any]) -> list[Config]:
    """One config per plan x worker count; their predictors are appended to `opened` (the caller closes them)."""
    configs = []
    for plan in options.plans.get(model.name, DEFAULT_PLANS[model.name]):
        for n in options.workers:
            predictor = open_split_predictor(model, addresses[:n], plan, options)
            opened.append(predictor)
            has_fusion = getattr(predictor.plan, "fusion", None) is not None
            configs.append(Config(plan, n, lambda p=predictor: measure_split(p, image, codec), has_fusion))
    return configs


def run_interleaved(configs: Sequence[Config], repeats: int, bar: Any) -> list[list[Sample]]:
    """One warm-up request per config (first calls pay for lazy initialisation: allocator, gRPC channel,
    thread pools), then `repeats` rounds A B C A B C ...; returns each config's samples."""
    for config in configs:
        config.measure()
        bar.update()
    samples: dict[int, list[Sample]] = {i: [] for i in range(len(configs))}
    for i in interleaved(range(len(configs)), repeats):
        samples[i].append(configs[i].measure())
        bar.update()
    return [samples[i] for i in range(len(configs))]


def requests_per_model(options: BenchOptions, model_name: str) -> int:
    """Requests (warm-ups included) `run_model` makes for one model: monolithic, cloud-only, each split config."""
    configs = 2 + len(options.plans.get(model_name, DEFAULT_PLANS[model_name])) * len(options.workers)
    return configs * (1 + options.repeats)


def run_model(model: Any, options: BenchOptions, image: np.ndarray, codec: CodecSpeed, bar: Any) -> list[dict[str, Any]]:
    """Every row (baselines + each plan x worker count) of one model, measured interleaved."""
    from pedvit.transport.client import RemoteExecutor

    n_max = max(options.workers)
    started: list[WorkerProcess] = []
    edge_cpus = None
    logs = tempfile.TemporaryDirectory(prefix="pedvit-bench-workers-")
    previous_affinity = os.sched_getaffinity(0)
    opened: list[Any] = []
    try:
        if options.addresses:
            addresses = list(options.addresses)
            if len(addresses) < n_max:
                raise ValueError(f"--addresses gives {len(addresses)} workers, --workers asks for {n_max}")
            if options.pin_workers:  # the workers were pinned by whoever started them; the edge keeps its cores
                edge_cpus = core_layout(n_max, True)[0]
        else:
            edge_cpus, layout = core_layout(n_max, options.pin_workers)
            started = start_pool(model.name, n_max, options, logs.name, layout)
            addresses = [w.address for w in started]
        if edge_cpus:
            os.sched_setaffinity(0, edge_cpus)
        cloud = RemoteExecutor(addresses[0], name="cloud-only")
        opened.append(cloud)
        configs = [Config("monolithic", 0, lambda: measure_monolithic(model, image)),
                   Config("cloud-only", 1, lambda: measure_cloud_only(model, image, cloud, codec))]
        configs += split_configs(model, options, addresses, image, codec, opened)
        samples = run_interleaved(configs, options.repeats, bar)
    finally:
        for item in opened:
            item.close()
        os.sched_setaffinity(0, previous_affinity)
        stop_workers(started)
        logs.cleanup()
    base = {"model": model.name, "device": options.device, "network": options.network, "image_size": list(image.shape[:2])}
    rows = [{**base, "plan": c.plan, "workers": c.workers, **({"fusion": c.fusion} if c.fusion is not None else {}),
             **summarise(s)} for c, s in zip(configs, samples)]
    for row in rows:
        add_ratios(row, rows[0], rows[1])
    return rows


def add_ratios(row: dict[str, Any], mono: dict[str, Any], cloud_only: dict[str, Any]) -> None:
    """The headline ratios of one row against the baselines of the same run (medians over medians)."""
    row["latency_ratio_vs_monolithic"] = row["end_to_end_s"] / mono["end_to_end_s"]
    row["edge_cpu_share"] = row["edge_cpu_s"] / mono["edge_cpu_s"]
    row["overhead_share"] = row["overhead_s"] / row["end_to_end_s"] if row["end_to_end_s"] else 0.0
    row["bytes_ratio_vs_cloud_only"] = row["bytes_total"] / cloud_only["bytes_total"] if cloud_only["bytes_total"] else 0.0
