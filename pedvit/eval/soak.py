"""Fault soak: many requests over real `pedvit worker` processes while faults are injected, then what held.

The fleet is `workers` MobileSAM worker processes on loopback. `hostile` of them run the worker's hidden
fault mode (`pedvit.cloud.worker.FaultInjection`: half answer NaN, half garbage, each answer with probability
`hostile_rate`). Before each request the driver draws a process fault with probability `fault_rate`, at a
random moment of the request, on a random honest worker:

* ``kill`` (odd-numbered honest workers only, so the others run throughout and their RSS can be followed):
  SIGKILL; the dead process stays a member for 0-2 requests (calls to it fail over), then it is replaced by
  a fresh process (or, with probability 1/4 while the fleet is above 3/4 of its size, dropped);
* ``stop`` (any honest worker): SIGSTOP; SIGCONT after 0-2 more requests (the engine's stall check fails it
  meanwhile).

Every request encodes one of a few real photos and decodes one point prompt with one long-lived
`DistributedSamPredictor` (default engine settings, a ledger). Each result is compared with a fault-free
reference of the same photo (in-process workers, same wire dtype): a result is wrong when its embedding
differs by more than `EMBEDDING_TOLERANCE` or its mask by more than `MASK_TOLERANCE` of its pixels. Injected
answers are matched with the edge's rejections through the request ids the hostile workers log.

    report = run_soak(SoakConfig(workers=16, requests=300))   # `pedvit eval soak --workers 16 --requests 300`
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pedvit.cloud.launch import WorkerProcess, start_worker, stop_workers, worker_argv
from pedvit.edge.build import in_process_workers
from pedvit.edge.cluster import start_local_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.ledger import check_ledger
from pedvit.models import Sam, build_model

log = logging.getLogger(__name__)

#: Largest max-abs difference of an embedding from its fault-free reference. The float16 wire against the
#: edge's own float32 windows differs by ~6e-5 (values up to ~0.6); a garbage or NaN window would differ by
#: orders of magnitude more.
EMBEDDING_TOLERANCE = 1e-3
#: Largest fraction of mask pixels that may differ from the reference (that rounding flips a few pixels at the
#: mask's edge, ~1e-5 of them; a corrupted window changes whole regions).
MASK_TOLERANCE = 1e-3
#: How often (in requests) the RSS trace is sampled.
RSS_EVERY = 10
#: The worker's log line for an injected answer (`pedvit.cloud.worker`), with the request id.
_INJECTED = re.compile(r"injected a (garbage|nan) answer for request '([0-9a-f]+)'")


@dataclass(frozen=True)
class SoakConfig:
    """What a soak runs.

    Attributes:
        workers: worker processes (fleet size).
        requests: requests after `warmup` fault-free ones.
        hostile: workers that corrupt answers (alternately garbage and NaN); never killed or stopped, so each
            corrupted answer reaches the edge.
        hostile_rate: probability that a hostile worker corrupts an answer.
        fault_rate: probability that a request gets a process fault (kill or stop, equally likely).
        warmup: fault-free requests before the start RSS is taken (the first requests allocate buffers).
        image_side: longest side the photos are scaled down to (pixels).
        seed: seed of the fault schedule.
    """

    workers: int = 16
    requests: int = 60
    hostile: int = 2
    hostile_rate: float = 0.2
    fault_rate: float = 0.5
    warmup: int = 3
    image_side: int = 448
    seed: int = 0
    model: str = "mobile_sam"

    def __post_init__(self) -> None:
        if self.workers < 3 or not 0 <= self.hostile <= self.workers - 2:
            raise ValueError("need workers >= 3 and 0 <= hostile <= workers - 2 (two honest workers to fault)")
        if self.requests < 1 or self.warmup < 1:
            raise ValueError("requests and warmup must be >= 1")
        if not (0 <= self.hostile_rate <= 1 and 0 <= self.fault_rate <= 1):
            raise ValueError("hostile_rate and fault_rate are probabilities in [0, 1]")


@dataclass
class SoakReport:
    """What a soak measured (`format_report` prints it)."""

    config: dict[str, Any]
    requests: int = 0
    lost: int = 0
    wrong: int = 0
    faults: dict[str, int] = field(default_factory=lambda: {"kill": 0, "stop": 0, "restart": 0, "drop": 0})
    faults_on_busy_worker: int = 0  # process faults that hit a worker holding windows of that request
    injected: dict[str, int] = field(default_factory=lambda: {"garbage": 0, "nan": 0})
    detected: int = 0
    undetected: list[str] = field(default_factory=list)
    false_rejections: list[str] = field(default_factory=list)
    failovers: int = 0
    ledger_records: int = 0
    ledger_problems: list[str] = field(default_factory=list)
    max_embedding_diff: float = 0.0
    max_mask_diff: float = 0.0
    #: workers that ran through the whole soak: [after the warm-up, after `settle_requests`, at the end]
    worker_rss_mb: dict[str, list[float]] = field(default_factory=dict)
    settle_requests: int = 0
    worker_rss_growth_max: float = 0.0  # largest end / settled - 1 (steady state: a leak grows with requests)
    worker_rss_growth_from_warmup_max: float = 0.0  # largest end / after-warm-up - 1 (includes allocator warm-up)
    edge_rss_mb: list[float] = field(default_factory=list)  # [start, end]
    #: every `RSS_EVERY` requests: (requests done, median RSS of the original workers still running, edge RSS)
    rss_trace: list[tuple[int, float, float]] = field(default_factory=list)
    request_seconds: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        seconds = out.pop("request_seconds")
        out["request_s"] = {"median": float(np.median(seconds)) if seconds else None, "max": max(seconds, default=None)}
        return out


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for process {pid}")


def soak_images(side: int) -> list[np.ndarray]:
    """Real photos (skimage) scaled so the longest side is `side` px: H x W x 3 uint8 each."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for photo in photos:
        image = Image.fromarray(photo)
        image.thumbnail((side, side))
        out.append(np.asarray(image.convert("RGB")))
    return out


def _prompt(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    return np.array([[w / 2, h / 2]]), np.array([1])


def references(model: Sam, images: list[np.ndarray]) -> list[tuple[torch.Tensor, np.ndarray]]:
    """The fault-free (embedding, mask) of each image: in-process workers, the float16 wire."""
    out = []
    with DistributedSamPredictor(model, in_process_workers(model, 4)) as predictor:
        for image in images:
            predictor.set_image(image)
            mask = predictor.predict(*_prompt(image), multimask_output=False)[0][0]
            out.append((predictor.get_image_embedding().clone(), mask))
    return out


class _Fleet:
    """The worker processes, their engine membership, and the faults the driver applies to them."""

    def __init__(self, config: SoakConfig, log_dir: Path, predictor: DistributedSamPredictor) -> None:
        self.config, self.log_dir, self.predictor = config, log_dir, predictor
        self.processes: dict[str, WorkerProcess] = {}  # engine name -> process (current members only)
        self.retired: list[WorkerProcess] = []  # killed, dropped or replaced
        self.stopped: dict[str, int] = {}  # name -> requests left before SIGCONT
        self.dead: dict[str, int] = {}  # name -> requests left before it is replaced or dropped
        self.hostile: set[str] = set()
        self.generation: dict[str, int] = {}
        self._lock = threading.Lock()

    def honest_targets(self, kind: str) -> list[str]:
        """Honest members that are running (neither dead nor stopped) and may get fault `kind`: any of them may
        be stopped, only the odd-numbered ones killed (the others live through the soak: their RSS is tracked)."""
        running = [n for n in self.processes if n not in self.hostile and n not in self.dead and n not in self.stopped]
        return sorted(n for n in running if kind == "stop" or int(n.split(".")[0][1:]) % 2 == 1)

    def apply(self, kind: str, name: str, rng: random.Random, report: SoakReport) -> None:
        """Apply a process fault to member `name` (called from a timer thread during a request)."""
        process = self.processes[name]
        with self._lock:
            if kind == "kill":
                os.kill(process.pid, signal.SIGKILL)
                self.dead[name] = rng.randint(0, 2)
            else:
                os.kill(process.pid, signal.SIGSTOP)
                self.stopped[name] = rng.randint(0, 2)
            report.faults[kind] += 1

    def after_request(self, rng: random.Random, report: SoakReport) -> None:
        """Count down: SIGCONT stopped workers, replace (or drop) dead ones whose turn has come."""
        with self._lock:
            for name in list(self.stopped):
                self.stopped[name] -= 1
                if self.stopped[name] < 0:
                    os.kill(self.processes[name].pid, signal.SIGCONT)
                    del self.stopped[name]
            due = [n for n in self.dead if self.dead[n] <= 0]
            for name in self.dead:
                self.dead[name] -= 1
        for name in due:
            del self.dead[name]
            self.retired.append(self.processes.pop(name))
            self.predictor.engine.remove_worker(name)
            if len(self.processes) > 3 * self.config.workers // 4 and rng.random() < 0.25:
                report.faults["drop"] += 1
                continue
            self._restart(name)
            report.faults["restart"] += 1

    def _restart(self, old: str) -> None:
        from pedvit.transport.client import RemoteExecutor

        base = old.split(".")[0]
        self.generation[base] = self.generation.get(base, 0) + 1
        name = f"{base}.{self.generation[base]}"
        process = start_worker(worker_argv(self.config.model), self.log_dir / f"{name}.log", name=name, timeout_s=300)
        self.processes[name] = process
        self.predictor.engine.add_worker(RemoteExecutor(process.address, name=name), name)

    def running(self) -> set[str]:
        """Members whose process is alive (killed ones wait for their replacement in `dead`)."""
        return set(self.processes) - set(self.dead)

    def resume_all(self) -> None:
        for name in list(self.stopped):
            os.kill(self.processes[name].pid, signal.SIGCONT)
        self.stopped.clear()

    def all_processes(self) -> list[WorkerProcess]:
        return [*self.processes.values(), *self.retired]


def hostile_args(config: SoakConfig, index: int) -> list[str]:
    """Worker arguments of fleet member `index`: the first `config.hostile` corrupt answers (garbage, nan, ...)."""
    if index >= config.hostile:
        return []
    return ["--inject-fault", ("garbage", "nan")[index % 2], "--fault-rate", str(config.hostile_rate)]


def _injected_answers(log_dir: Path) -> dict[tuple[str, str], str]:
    """(request id, worker name) -> fault kind of every corrupted answer the hostile workers logged."""
    out: dict[tuple[str, str], str] = {}
    for path in log_dir.glob("*.log"):
        for kind, request_id in _INJECTED.findall(path.read_text(errors="replace")):
            out[(request_id, path.stem)] = kind
    return out


def _one_request(predictor: DistributedSamPredictor, image: np.ndarray, reference: tuple[torch.Tensor, np.ndarray],
                 report: SoakReport, rejected: set[tuple[str, str]]) -> Any:
    """Encode + decode one image; count it (lost, wrong, failovers, rejections). Returns the run record."""
    started = time.monotonic()
    try:
        predictor.set_image(image)
        mask = predictor.predict(*_prompt(image), multimask_output=False)[0][0]
    except Exception as error:  # noqa: BLE001 - a lost request is what the soak counts
        report.lost += 1
        report.errors.append(f"{type(error).__name__}: {error}"[:300])
        return None
    report.request_seconds.append(time.monotonic() - started)
    embedding = predictor.get_image_embedding()
    diff = float((embedding - reference[0]).abs().max())
    mask_diff = float((mask != reference[1]).mean())
    report.max_embedding_diff = max(report.max_embedding_diff, diff)
    report.max_mask_diff = max(report.max_mask_diff, mask_diff)
    report.wrong += int(not diff <= EMBEDDING_TOLERANCE or mask_diff > MASK_TOLERANCE)
    record = predictor.last_run
    report.failovers += len(record.failovers)
    for name, worker in record.workers.items():
        if any("AnswerRejected" in e for e in worker.errors):
            rejected.add((record.request_id, name))
    return record


def run_soak(config: SoakConfig, out_dir: str | os.PathLike[str] | None = None) -> SoakReport:
    """Run the soak described by `config`; the ledger and worker logs go to `out_dir` (default: a temporary
    directory, removed afterwards)."""
    started = time.monotonic()
    report = SoakReport(asdict(config))
    model = build_model(config.model)
    images = soak_images(config.image_side)
    refs = references(model, images)
    tmp = tempfile.TemporaryDirectory(prefix="pedvit-soak-") if out_dir is None else None
    base = Path(out_dir) if out_dir is not None else Path(tmp.name)  # type: ignore[union-attr]
    log_dir, ledger = base / "workers", base / "ledger.jsonl"
    log_dir.mkdir(parents=True, exist_ok=True)
    ledger.unlink(missing_ok=True)
    names = [f"w{i}" for i in range(config.workers)]
    local = start_local_workers(config.workers, config.model, log_dir=log_dir, names=names, timeout_s=600.0,
                                extra_args=lambda i: hostile_args(config, i))
    predictor = DistributedSamPredictor(model, local.executors(), ledger=ledger)
    fleet = _Fleet(config, log_dir, predictor)
    fleet.processes = {w.name: w for w in local.workers}
    fleet.hostile = set(names[:config.hostile])
    rejected: set[tuple[str, str]] = set()
    try:
        _drive(fleet, images, refs, report, rejected)
    finally:
        fleet.resume_all()
        predictor.close()
        stop_workers(fleet.all_processes())
    _tally(report, log_dir, rejected, ledger)
    report.wall_s = round(time.monotonic() - started, 1)
    if tmp is not None:
        tmp.cleanup()
    return report


def _drive(fleet: _Fleet, images: list[np.ndarray], refs: list[tuple[torch.Tensor, np.ndarray]], report: SoakReport,
           rejected: set[tuple[str, str]]) -> None:
    """The warm-up, then the requests with their faults; worker and edge RSS after the warm-up and at the end
    (and every `RSS_EVERY` requests)."""
    config, predictor, rng = fleet.config, fleet.predictor, random.Random(fleet.config.seed)
    for i in range(config.warmup):
        _one_request(predictor, images[i % len(images)], refs[i % len(refs)], report, rejected)
    report.worker_rss_mb = {n: [rss_mb(p.pid)] for n, p in fleet.processes.items()}
    report.edge_rss_mb = [rss_mb(os.getpid())]
    report.settle_requests = max(RSS_EVERY, config.requests // 10) if config.requests > RSS_EVERY else 0
    for i in range(config.requests):
        if i == report.settle_requests:
            _sample_workers(fleet, report)
        fault = _schedule_fault(fleet, rng, report, config.fault_rate)
        record = _one_request(predictor, images[i % len(images)], refs[i % len(refs)], report, rejected)
        if fault is not None:
            timer, victim = fault
            timer.join()
            if record is not None and record.assignment.get(victim):
                report.faults_on_busy_worker += 1
        fleet.after_request(rng, report)
        report.requests += 1
        if report.requests % RSS_EVERY == 0:
            alive = [rss_mb(fleet.processes[n].pid) for n in report.worker_rss_mb if n in fleet.running()]
            median = round(float(np.median(alive)), 1) if alive else 0.0
            report.rss_trace.append((report.requests, median, round(rss_mb(os.getpid()), 1)))
            log.info("soak: %d/%d requests, lost %d, wrong %d", report.requests, config.requests, report.lost,
                     report.wrong)
    fleet.resume_all()
    _sample_workers(fleet, report)
    report.worker_rss_mb = {n: [round(v, 1) for v in vs] for n, vs in report.worker_rss_mb.items() if len(vs) == 3}
    rss = report.worker_rss_mb.values()
    report.worker_rss_growth_max = max((end / settled - 1 for _, settled, end in rss), default=0.0)
    report.worker_rss_growth_from_warmup_max = max((end / start - 1 for start, _, end in rss), default=0.0)
    report.edge_rss_mb = [round(v, 1) for v in (*report.edge_rss_mb, rss_mb(os.getpid()))]


def _sample_workers(fleet: _Fleet, report: SoakReport) -> None:
    """Append the RSS of every tracked worker still running its first process."""
    for name, values in report.worker_rss_mb.items():
        if name in fleet.running():
            values.append(rss_mb(fleet.processes[name].pid))


def _tally(report: SoakReport, log_dir: Path, rejected: set[tuple[str, str]], ledger: Path) -> None:
    """Match the answers the hostile workers corrupted with the edge's rejections; check the ledger."""
    injected = _injected_answers(log_dir)
    for kind in injected.values():
        report.injected[kind] += 1
    report.detected = len(rejected & set(injected))
    report.undetected = [f"{w} request {r}" for r, w in sorted(set(injected) - rejected)]
    report.false_rejections = [f"{w} request {r}" for r, w in sorted(rejected - set(injected))]
    report.ledger_records, report.ledger_problems = check_ledger(ledger)


def _schedule_fault(fleet: _Fleet, rng: random.Random, report: SoakReport,
                    fault_rate: float) -> tuple[threading.Timer, str] | None:
    """Maybe start a timer that kills or stops a random honest worker 0-0.5 s into the next request:
    (the timer, the victim's name), or None."""
    if rng.random() >= fault_rate:
        return None
    kind = rng.choice(("kill", "stop"))
    targets = fleet.honest_targets(kind)
    if len(fleet.honest_targets("stop")) < 2 or not targets:
        return None
    victim = rng.choice(targets)
    timer = threading.Timer(rng.uniform(0.0, 0.5), fleet.apply, args=(kind, victim, random.Random(rng.random()), report))
    timer.start()
    return timer, victim


def format_report(report: SoakReport) -> str:
    """A few lines a person reads."""
    d = report.to_dict()
    growth = 100 * report.worker_rss_growth_max
    rss = list(report.worker_rss_mb.values())
    return "\n".join([
        f"soak: {report.requests} requests over {report.config['workers']} workers in {report.wall_s:.0f} s "
        f"(request median {d['request_s']['median'] or 0:.2f} s, max {d['request_s']['max'] or 0:.2f} s)",
        f"lost {report.lost}, wrong {report.wrong} (max embedding diff {report.max_embedding_diff:.2e}, "
        f"max mask diff {report.max_mask_diff:.2e})",
        f"process faults {report.faults} ({report.faults_on_busy_worker} on a worker holding windows), "
        f"failovers {report.failovers}",
        f"injected answers {report.injected}, detected {report.detected}, undetected {len(report.undetected)}, "
        f"false rejections {len(report.false_rejections)}",
        f"worker RSS (MiB, median of {len(rss)} that ran throughout) after warm-up "
        f"{np.median([r[0] for r in rss]) if rss else 0:.0f}, after {report.settle_requests} requests "
        f"{np.median([r[1] for r in rss]) if rss else 0:.0f}, end {np.median([r[2] for r in rss]) if rss else 0:.0f}; "
        f"max growth {growth:.1f} % since request {report.settle_requests} "
        f"({100 * report.worker_rss_growth_from_warmup_max:.1f} % since the warm-up); edge RSS {report.edge_rss_mb} MiB",
        f"ledger: {report.ledger_records} records, {len(report.ledger_problems)} problems",
    ])
