"""`pedvit bench` (perf_bench): a tiny real run produces the JSON rows; netem namespaces come and go cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pedvit.eval import netem
from pedvit.eval.perf_report import vit_edge_flop_share
from pedvit.plans.stages import FULL_ENCODER, build_worker_stages, stages_for_model

REQUIRED_KEYS = {"model", "plan", "workers", "latency_ratio_vs_monolithic", "edge_cpu_share", "overhead_share", "bytes_ratio_vs_cloud_only"}


def test_full_encoder_stage_matches_monolithic(mobile_sam, astronaut) -> None:
    """The cloud-only baseline stage computes the same embedding as the monolithic predictor."""
    from pedvit.edge.predictor import SamPredictor
    from pedvit.plans.plans import SplitPlan

    predictor = SamPredictor(mobile_sam)
    predictor.set_image(astronaut)
    resized = predictor.transform.apply_image(astronaut)
    canvas = SplitPlan.canvas(resized, mobile_sam.img_size)
    meta = np.array([[0, 0, resized.shape[0], resized.shape[1]]], dtype=np.int32)
    stage = stages_for_model(mobile_sam)[FULL_ENCODER]
    out = stage.run(canvas[None], meta)
    assert out.shape == (1, 64, 64, 256)
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), predictor.features.numpy(), atol=1e-4)
    with pytest.raises(ValueError):
        stage.spec.validate("uint8", (1, 224, 224, 3), (1, 4))  # a window is not the whole canvas
    with pytest.raises(ValueError):
        stage.run(canvas[None], np.array([[16, 0, 100, 100]], dtype=np.int32))


def test_worker_stages_device_option_on_cpu() -> None:
    """`build_worker_stages(device=...)` (the worker's --device) runs on the device it was given."""
    stages = build_worker_stages("mobile_sam", None, device="cpu", full_encoder=True)
    assert FULL_ENCODER in stages and "tinyvit.trunk" in stages
    trunk = stages["tinyvit.trunk"]
    out = trunk.run(np.zeros((2, 224, 224, 3), np.uint8), np.array([[0, 0, 224, 224], [0, 224, 224, 224]], np.int32))
    assert out.shape == (2, 14, 14, 320) and out.dtype == np.float32
    # A split worker loads only what its stages need: no full-encoder baseline unless asked for.
    assert FULL_ENCODER not in build_worker_stages("mobile_sam", None)


def test_vit_flop_share_estimate() -> None:
    """Global blocks' share grows with width; ViT-H's 4 of 32 blocks stay well under ViT-B's 4 of 12."""
    vit_b = vit_edge_flop_share(depth=12, dim=768, global_blocks=4)
    vit_h = vit_edge_flop_share(depth=32, dim=1280, global_blocks=4)
    assert 0 < vit_h < vit_b < 1


@pytest.mark.slow
def test_tiny_bench_run_writes_json(tmp_path) -> None:
    """mobile_sam, 1 worker process, 1 repeat: every row has the headline keys and sane values; the projection
    is calibrated; one sample per row cannot show its spread, so no measured target gets a verdict."""
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    argv = [sys.executable, "-m", "pedvit", "bench", "--models", "mobile_sam", "--workers", "1", "--repeats", "1",
            "--json", str(out), "--markdown", str(md), "--no-progress"]
    subprocess.run(argv, check=True, timeout=600, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["plan"] for r in rows] == ["monolithic", "cloud-only", "tinyvit-isolated"]
    for row in rows:
        assert REQUIRED_KEYS <= row.keys()
        assert row["end_to_end_s"] > 0 and row["samples"] == 1 and row["end_to_end_spread"] == 0.0
    mono, cloud, split = rows
    assert mono["latency_ratio_vs_monolithic"] == pytest.approx(1.0)
    assert cloud["bytes_ratio_vs_cloud_only"] == pytest.approx(1.0)
    # cloud-only ships the 1024 x 1024 x 3 canvas out and a 64 x 64 x 256 float16 embedding back.
    assert cloud["bytes_sent"] >= 1024 * 1024 * 3 and cloud["bytes_received"] == 64 * 64 * 256 * 2
    assert split["bytes_total"] > 0 and split["worker_compute_s"] > 0
    assert any(t["target"].startswith("ViT-H") for t in data["targets"])
    assert all(t["result"] in ("n/a", "noisy: no verdict") for t in data["targets"] if t["how"] == "measured")
    assert {"cores", "load_before", "load_after", "steal_share"} <= data["system"].keys()
    projection = data["projection"]
    assert [r["link"] for r in projection["rows"]] == ["1 Gbit/s, 5 ms", "50 Mbit/s, 30 ms"]
    assert projection["rows"][1]["projected_s"] > projection["rows"][0]["projected_s"] > 0
    parts = projection["parts"]["mobile_sam|tinyvit-isolated|1"]
    call = parts["rounds"][0]["p0"][0]
    assert call["compute_s"] > 0 and call["bytes_sent"] > 0  # the one logical worker's trunk call
    (check,) = projection["validation"]
    assert check["link"] == "loopback" and check["measured_s"] > 0 and check["result"] == "noisy: no verdict"
    assert "projected_latency_ratio" in data["headline"]
    assert "tinyvit-isolated" in md.read_text()


@pytest.mark.skipif(netem.unavailable_reason() is not None, reason=str(netem.unavailable_reason()))
def test_netem_topology_up_and_down() -> None:
    """Namespaces with shaped veths: the edge reaches each worker across its link; everything is removed."""
    before = set(netem.list_namespaces())
    topology = netem.Topology(netem.profile_links("mixed", 2))
    with topology:
        names = set(netem.list_namespaces())
        assert {topology.edge_ns, topology.worker_ns(0), topology.worker_ns(1)} <= names
        # The link addresses exist only inside the namespaces, never in the root namespace.
        root_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        assert topology.edge_ip(0) not in root_addrs and topology.worker_ip(1) not in root_addrs
        qdisc = subprocess.run(topology.exec_prefix(topology.edge_ns) + ["tc", "qdisc", "show", "dev", "pve1"], capture_output=True, text=True).stdout
        assert "tbf" in qdisc
        assert ("netem" in qdisc) == bool(topology.kernel_delay)
        if shutil.which("ping"):
            rtt = netem.ping_rtt_ms(topology, 1)  # "lte": 60 ms RTT
            assert rtt is not None and rtt >= 55
    assert set(netem.list_namespaces()) == before
    assert not topology.created


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("ip") is not None, reason="covers the non-root message only")
def test_netem_skips_clearly_without_root() -> None:
    assert netem.unavailable_reason()


def test_bench_parser_options() -> None:
    from pedvit.cli import bench, build_parser

    args = build_parser().parse_args(["bench", "--models", "mobile_sam", "--workers", "1,2", "--netem", "--device", "cpu"])
    assert args.netem == "wifi,lte" and args.func is bench._cmd_bench
    options = bench.options_from_args(args)
    assert options.workers == (1, 2) and options.models == ("mobile_sam",)
    quick = bench.options_from_args(build_parser().parse_args(["bench"]))
    assert quick.models == ("mobile_sam",) and quick.workers == (1, 2, 4) and quick.project
    full = bench.options_from_args(build_parser().parse_args(["bench", "--full", "--no-projection"]))
    assert full.models == ("mobile_sam", "vit_b") and full.workers == (1, 2, 4, 8) and not full.project
    with pytest.raises(SystemExit):
        bench.options_from_args(build_parser().parse_args(["bench", "--repeats", "0"]))


def test_delay_proxy_adds_round_trip_delay() -> None:
    """The user-space delay proxy (used where the kernel lacks netem) holds each direction `delay` seconds."""
    import asyncio
    import time

    async def scenario() -> float:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = netem.DelayProxy(("127.0.0.1", 0), ("127.0.0.1", port), 0.05)
        proxy_server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        proxy_port = proxy_server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        started = time.perf_counter()
        writer.write(b"ping")
        await writer.drain()
        assert await reader.readexactly(4) == b"ping"
        elapsed = time.perf_counter() - started
        writer.close()
        server.close()
        proxy_server.close()
        return elapsed

    assert asyncio.run(scenario()) >= 0.1
