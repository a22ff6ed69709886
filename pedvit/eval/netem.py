"""Real network emulation for `pedvit bench --netem`: edge and workers in their own Linux network namespaces.

Topology (root only; needs `ip` and `tc`): one namespace for the edge, one per worker, and one veth pair per
edge-worker link with a private /30 that exists only inside these namespaces (10.213.<i>.0/30: edge .1,
worker .2). Nothing is added to, or changed in, the root namespace except the namespaces themselves, whose
names start with a per-run unique prefix (`pvb<pid>x<rand>-`; every pedvit namespace starts `pvb`).
Each end of a link gets `netem delay RTT/2` + `tbf rate R`, so a round trip costs the profile's RTT and each
direction is limited to R.

Profiles (per worker i, cycling): "wifi" 20 ms RTT / 100 Mbit/s, "lte" 60 ms RTT / 20 Mbit/s, and "mixed"
(heterogeneous: wifi, lte, wifi, lte, ...).

Workers run inside their namespaces (`ip netns exec`), pinned to the cores `--pin-workers` gives them (the
edge keeps the first core); the edge part of the benchmark runs as a child process inside the edge
namespace (`ip netns exec <edge> python -m pedvit bench --addresses ...`) because a Python 3.11 process cannot move all its threads into another namespace. The child also calibrates
the projection (`pedvit.eval.projection`) on its loopback; `netem_validation` then compares the projection
over each profile's link with the N = 1 row measured behind that link. Namespaces are removed in
`finally`, at exit (`atexit`), and by `pedvit bench --netem-cleanup`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from pedvit.cloud.launch import WorkerProcess, ready_line, start_worker, stop_workers
from pedvit.eval import perf_bench
from pedvit.eval.bench_noise import TrustPolicy, read_system, system_report
from pedvit.eval.bench_run import validate
from pedvit.eval.perf_report import targets
from pedvit.eval.projection import Link, RequestParts, project

NAME_ROOT = "pvb"
PROXY_PORT = 50051
SUBNET = "10.213"


@dataclass(frozen=True)
class LinkProfile:
    """One emulated link: round-trip time and rate (each direction)."""

    name: str
    rtt_ms: float
    rate_mbit: float


PROFILES: dict[str, LinkProfile] = {
    "wifi": LinkProfile("wifi", 20.0, 100.0),
    "lte": LinkProfile("lte", 60.0, 20.0),
}


def profile_links(profile: str, n: int) -> list[LinkProfile]:
    """The link of each of n workers under a profile name ("wifi", "lte", or heterogeneous "mixed")."""
    if profile == "mixed":
        return [PROFILES["wifi" if i % 2 == 0 else "lte"] for i in range(n)]
    if profile not in PROFILES:
        raise ValueError(f"unknown netem profile {profile!r}; choose wifi, lte or mixed")
    return [PROFILES[profile]] * n


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or skip --netem)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    return None


def netem_qdisc_available() -> bool:
    """Does this kernel have the `netem` qdisc (sch_netem)? Some VMs' kernels do not; then the delay is
    emulated by `DelayProxy` in user space and only the rate is shaped in the kernel (tbf)."""
    name = f"{NAME_ROOT}probe{os.getpid()}x{secrets.token_hex(2)}"
    try:
        _run("ip", "netns", "add", name)
        return _run("ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False).returncode == 0
    finally:
        _run("ip", "netns", "del", name, check=False)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def list_namespaces() -> list[str]:
    """Names of existing network namespaces."""
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_leftovers(prefix: str = NAME_ROOT) -> list[str]:
    """Delete every namespace whose name starts with `prefix` (deleting a namespace deletes its veths)."""
    removed = []
    for name in list_namespaces():
        if name.startswith(prefix):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class Topology:
    """The namespaces and addresses of one emulated network. Use as a context manager."""

    links: list[LinkProfile]
    #: None: probe the kernel; False: delay in user space (`DelayProxy`) in front of each worker.
    kernel_delay: bool | None = None
    prefix: str = field(default_factory=lambda: f"{NAME_ROOT}{os.getpid()}x{secrets.token_hex(2)}-")
    created: list[str] = field(default_factory=list)

    @property
    def edge_ns(self) -> str:
        return f"{self.prefix}e"

    def worker_ns(self, i: int) -> str:
        return f"{self.prefix}w{i}"

    def worker_ip(self, i: int) -> str:
        return f"{SUBNET}.{i}.2"

    def edge_ip(self, i: int) -> str:
        return f"{SUBNET}.{i}.1"

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def _add_ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self.created.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _shape(self, ns: str, dev: str, link: LinkProfile) -> None:
        rate = f"{link.rate_mbit}mbit"
        tbf = ["tbf", "rate", rate, "burst", "256kbit", "latency", "100ms"]
        if self.kernel_delay:
            # netem delays by half the RTT each way; tbf (child of netem) limits the rate.
            delay = f"{link.rtt_ms / 2:.3f}ms"
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "delay", delay)
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", *tbf)
        else:
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", *tbf)

    def up(self) -> "Topology":
        if len(self.links) > 250:
            raise ValueError("at most 250 workers")
        atexit.register(self.down)
        if self.kernel_delay is None:
            self.kernel_delay = netem_qdisc_available()
        try:
            self._add_ns(self.edge_ns)
            for i, link in enumerate(self.links):
                ns = self.worker_ns(i)
                self._add_ns(ns)
                edge_dev, worker_dev = f"pve{i}", f"pvw{i}"
                # Created directly inside the edge namespace: the root namespace never holds these devices.
                _run("ip", "-n", self.edge_ns, "link", "add", edge_dev, "type", "veth", "peer", "name", worker_dev, "netns", ns)
                _run("ip", "-n", self.edge_ns, "addr", "add", f"{self.edge_ip(i)}/30", "dev", edge_dev)
                _run("ip", "-n", ns, "addr", "add", f"{self.worker_ip(i)}/30", "dev", worker_dev)
                _run("ip", "-n", self.edge_ns, "link", "set", edge_dev, "up")
                _run("ip", "-n", ns, "link", "set", worker_dev, "up")
                self._shape(self.edge_ns, edge_dev, link)
                self._shape(ns, worker_dev, link)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Delete every namespace this topology created (idempotent)."""
        while self.created:
            _run("ip", "netns", "del", self.created.pop(), check=False)

    def __enter__(self) -> "Topology":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


class DelayProxy:
    """User-space one-way delay for a TCP service: listens on `listen`, forwards to `target`, and holds every
    chunk `delay_s` in each direction (order kept; the rate is shaped by tbf on the veth). Used when the
    kernel has no netem qdisc. Runs inside the worker's namespace: `python -m pedvit.eval.netem proxy ...`."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
        self.listen, self.target, self.delay_s = listen, target, delay_s

    async def _pipe(self, reader: Any, writer: Any) -> None:
        import asyncio

        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((loop.time() + self.delay_s, data))
        finally:
            queue.put_nowait((0.0, None))
            await sender

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def serve(self) -> None:
        import asyncio

        server = await asyncio.start_server(self._handle, *self.listen)
        print(ready_line(self.listen[1]), flush=True)  # the line a worker prints: launched the same way
        async with server:
            await server.serve_forever()


def ping_rtt_ms(topology: Topology, i: int) -> float | None:
    """Measured RTT (ms) edge -> worker i (one ping; None if ping is missing or fails)."""
    if shutil.which("ping") is None:
        return None
    out = _run(*topology.exec_prefix(topology.edge_ns), "ping", "-c", "2", "-i", "0.2", "-W", "2", topology.worker_ip(i), check=False).stdout
    for line in out.splitlines():
        if "min/avg/max" in line or "rtt" in line:
            try:
                return float(line.split("=")[1].split("/")[1])
            except (IndexError, ValueError):
                return None
    return None


def _start_link_workers(topology: Topology, links: list[LinkProfile], model: str, args: argparse.Namespace,
                        logs: str, cpus: list[tuple[int, ...] | None]) -> list[WorkerProcess]:
    """One worker per link inside its namespace (pinned to `cpus[i]`), behind a user-space delay proxy when the
    kernel has no netem qdisc. Returns every process started (workers and proxies)."""
    workers: list[WorkerProcess] = []
    threads = {"OMP_NUM_THREADS": str(args.worker_threads or 1)}
    for i in range(len(links)):
        ns = topology.exec_prefix(topology.worker_ns(i))
        log = pathlib.Path(logs) / f"w{i}.log"
        if topology.kernel_delay:
            argv = ns + perf_bench.bench_worker_argv(model, host=topology.worker_ip(i), device=args.device)
            workers.append(start_worker(argv, log, name=f"w{i}", host=topology.worker_ip(i), own_session=True,
                                        env=threads, cpus=cpus[i]))
            continue
        # No netem qdisc: the worker listens on the namespace's loopback, a delay proxy on the link.
        worker = start_worker(ns + perf_bench.bench_worker_argv(model, host="127.0.0.1", device=args.device), log,
                              name=f"w{i}", own_session=True, env=threads, cpus=cpus[i])
        workers.append(worker)
        proxy = ns + [sys.executable, "-m", "pedvit.eval.netem", "proxy", "--listen", f"{topology.worker_ip(i)}:{PROXY_PORT}",
                      "--target", worker.address, "--delay-ms", str(links[i].rtt_ms / 2)]
        workers.append(start_worker(proxy, log.with_name(f"proxy{i}.log"), name=f"proxy{i}", host=topology.worker_ip(i),
                                    own_session=True))
    return workers


def _edge_child(topology: Topology, profile: str, model: str, args: argparse.Namespace, addresses: list[str],
                out: str, pinned: bool) -> list[str]:
    """The edge half of the benchmark, run inside the edge namespace (it also calibrates the projection there)."""
    return topology.exec_prefix(topology.edge_ns) + [
        sys.executable, "-m", "pedvit", "bench", "--models", model, "--workers", args.workers,
        "--repeats", str(args.repeats), "--device", args.device, "--json", out,
        "--addresses", ",".join(addresses), "--network-label", f"netem-{profile}",
    ] + (["--image", args.image] if args.image else []) + (["--plans", args.plans] if args.plans else []) \
      + (["--no-progress"] if args.no_progress else []) + (["--pin-workers"] if pinned else []) \
      + (["--no-projection"] if args.no_projection else []) \
      + (["--edge-threads", str(args.edge_threads)] if args.edge_threads else [])


def run_profile(profile: str, model: str, args: argparse.Namespace, n_max: int) -> dict[str, Any]:
    """Build the namespaces of one profile, start the workers inside them (pinned off the edge's core where
    there are 2+ cores), run the edge part inside the edge namespace, tear everything down; returns the
    child's report with each row labelled with its links."""
    links = profile_links(profile, n_max)
    pinned = len(os.sched_getaffinity(0)) >= 2
    cpus = perf_bench.core_layout(n_max, True)[1] if pinned else [None] * n_max
    with Topology(links) as topology:
        rtts = [ping_rtt_ms(topology, i) for i in range(n_max)]
        print(f"netem {profile}: {n_max} links, measured ping RTT ms {rtts}", file=sys.stderr)
        logs = tempfile.TemporaryDirectory(prefix="pedvit-netem-workers-")
        workers: list[WorkerProcess] = []
        try:
            workers = _start_link_workers(topology, links, model, args, logs.name, cpus)
            edge_addresses = [w.address for w in workers if not w.address.startswith("127.")]
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "report.json")
                subprocess.run(_edge_child(topology, profile, model, args, edge_addresses, out, pinned), check=True,
                               stdout=subprocess.DEVNULL)
                with open(out) as f:
                    report = json.load(f)
        finally:
            stop_workers(workers)
            logs.cleanup()
    for row in report["rows"]:
        row["delay"] = "kernel netem" if topology.kernel_delay else "user-space proxy"
        row["link_rtt_ms"] = [link.rtt_ms for link in links]
        row["link_rate_mbit"] = [link.rate_mbit for link in links]
        row["ping_rtt_ms"] = rtts
    return report


def netem_validation(profile: str, report: dict[str, Any], system: dict[str, Any]) -> list[dict[str, Any]]:
    """Projected (the child's loopback-calibrated parts over the profile's link) vs measured under netem, for
    each plan with N = 1 (one worker on its own core, the edge on the other)."""
    link_profile = profile_links(profile, 1)[0]
    link = Link(f"netem {profile} ({link_profile.rate_mbit:g} Mbit/s, {link_profile.rtt_ms:g} ms)",
                link_profile.rate_mbit * 1e6, link_profile.rtt_ms / 1000)
    parts = report.get("projection", {}).get("parts", {})
    out = []
    for row in report["rows"]:
        key = f"{row['model']}|{row['plan']}|{row['workers']}"
        if row["workers"] == 1 and key in parts:
            out.append(validate(row, link.name, project(RequestParts.from_dict(parts[key]), link), system, TrustPolicy()))
    return out


def run_netem_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every profile x model (`run_profile`); returns the report (rows, targets, projection with the
    validation under each profile, system)."""
    profiles = [p.strip() for p in str(args.netem).split(",") if p.strip()]
    n_max = max(int(n) for n in args.workers.split(","))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    before = read_system()
    reports = [(profile, run_profile(profile, model, args, n_max)) for profile in profiles for model in models]
    system = system_report(before, read_system())
    rows = [row for _, report in reports for row in report["rows"]]
    projection: dict[str, list[dict[str, Any]]] = {"rows": [], "calibration_rows": [], "validation": []}
    for profile, report in reports:
        child = report.get("projection", {})
        projection["rows"] += [{**r, "network": f"netem-{profile}"} for r in child.get("rows", [])]
        projection["calibration_rows"] += child.get("calibration_rows", [])
        projection["validation"] += child.get("validation", []) + netem_validation(profile, report, system)
    return {"rows": rows, "targets": targets(rows, system), "system": system, "projection": projection}


def main(argv: list[str] | None = None) -> int:
    """`python -m pedvit.eval.netem proxy --listen IP:PORT --target HOST:PORT --delay-ms MS` (run by the bench)."""
    import asyncio

    parser = argparse.ArgumentParser(prog="python -m pedvit.eval.netem")
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="user-space delay proxy (one-way delay in each direction)")
    proxy.add_argument("--listen", required=True)
    proxy.add_argument("--target", required=True)
    proxy.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)

    def split(address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        return host, int(port)

    try:
        asyncio.run(DelayProxy(split(args.listen), split(args.target), args.delay_ms / 1000).serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
