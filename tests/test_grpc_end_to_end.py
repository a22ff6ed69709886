"""Real `pedvit worker` processes (MobileSAM weights) on loopback, driven by the distributed predictor."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pedvit.edge.cluster import ClusterError, load_cluster, start_local_workers
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.engine import PrivacyConstraintError
from pedvit.edge.ledger import check_ledger
from pedvit.transport.client import RemoteExecutor
from pedvit.transport.calls import WorkerError
from pedvit.transport.tls import ClientTLS, generate_dev_pki

pytestmark = pytest.mark.slow

N_WORKERS = 4
POINT = (np.array([[250.0, 200.0]]), np.array([1]))


@pytest.fixture(scope="module")
def four():
    """4 MobileSAM worker processes, shared by this module's tests (start-up is the slow part)."""
    with start_local_workers(N_WORKERS, "mobile_sam", timeout_s=300) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def reference(mobile_sam, astronaut):
    """In-process split (same plan, float32 wire): embedding and masks to compare with."""
    def run(n: int) -> tuple[torch.Tensor, np.ndarray]:
        with DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, n), wire_dtype="float32") as p:
            p.set_image(astronaut)
            masks, _, _ = p.predict(*POINT)
            return p.get_image_embedding().clone(), masks

    return run


def test_grpc_equals_in_process_bit_exact(mobile_sam, astronaut, four, reference, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    with DistributedSamPredictor(mobile_sam, four.executors(), wire_dtype="float32", ledger=ledger) as p:
        p.set_image(astronaut)
        masks, _, _ = p.predict(*POINT)
        embedding = p.get_image_embedding()
        record = p.last_run
    ref_embedding, ref_masks = reference(4)
    assert torch.equal(embedding, ref_embedding)
    assert np.array_equal(masks, ref_masks)
    # Every content window went to exactly one worker over the network, none to the edge.
    assert record is not None and not record.failovers and not record.local_windows
    held = [w.windows for w in record.workers.values()]
    assert sum(len(h) for h in held) == len(record.content_windows)
    assert set().union(*held) == set(record.content_windows)
    assert all(w.bytes_sent > 0 and w.bytes_received > 0 for w in record.workers.values())
    assert check_ledger(ledger) == (1, [])


def test_float16_wire_is_close_and_cheaper(mobile_sam, astronaut, four, reference):
    with DistributedSamPredictor(mobile_sam, four.executors(), wire_dtype="float16") as p:
        p.set_image(astronaut)
        embedding = p.get_image_embedding()
        f16_bytes = sum(w.bytes_received for w in p.last_run.workers.values())
    with DistributedSamPredictor(mobile_sam, four.executors(), wire_dtype="float32") as p:
        p.set_image(astronaut)
        f32_bytes = sum(w.bytes_received for w in p.last_run.workers.values())
    ref_embedding, _ = reference(4)
    assert f16_bytes * 2 == f32_bytes
    assert not torch.equal(embedding, ref_embedding)  # float16 rounding is real...
    assert torch.allclose(embedding, ref_embedding, atol=2e-2, rtol=1e-2)  # ...and small


def test_sixteen_workers_serve_one_request(mobile_sam, astronaut, reference):
    with start_local_workers(16, "mobile_sam", timeout_s=600) as sixteen:
        with DistributedSamPredictor(mobile_sam, sixteen.executors(), wire_dtype="float32") as p:
            p.set_image(astronaut)
            masks, _, _ = p.predict(*POINT)
            record = p.last_run
    _, ref_masks = reference(4)
    # Each window is computed alone, so the result does not depend on the assignment; only the batch
    # composition differs (16 vs 4 workers), which may move float rounding, hence IoU and not equality.
    for ours, theirs in zip(masks, ref_masks):
        assert (ours & theirs).sum() / max(1, (ours | theirs).sum()) >= 0.999
    used = [name for name, w in record.workers.items() if w.windows]
    assert len(used) >= 12  # 25 windows over 16 workers: nearly all of them take part
    assert max(len(w.windows) for w in record.workers.values()) <= record.max_windows_per_worker
    assert not record.failovers


def test_cluster_file_roundtrip(mobile_sam, astronaut, four, tmp_path):
    path = four.cluster().save(tmp_path / "sub" / "cluster.json")
    data = json.loads(path.read_text())
    assert [w["address"] for w in data["workers"]] == four.addresses
    cluster = load_cluster(path)
    assert [w.pid for w in cluster.workers] == [w.pid for w in four.workers]
    with DistributedSamPredictor(mobile_sam, str(path)) as p:
        p.set_image(astronaut)
        assert set(p.last_run.workers) == {w.name for w in four.workers}


def test_load_cluster_errors(tmp_path):
    with pytest.raises(ClusterError, match="not found"):
        load_cluster(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ClusterError, match="not valid JSON"):
        load_cluster(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text('{"workers": []}')
    with pytest.raises(ClusterError, match="non-empty"):
        load_cluster(tmp_path / "empty.json")


def test_worker_that_cannot_start_reports_its_stderr():
    with pytest.raises(ClusterError, match="exited with code") as info:
        start_local_workers(1, extra_args=["--no-such-flag"], timeout_s=120)
    assert "unrecognized arguments: --no-such-flag" in str(info.value)


def test_tls_end_to_end(mobile_sam, astronaut, reference, tmp_path):
    pki = tmp_path / "pki"
    generate_dev_pki(pki)
    with start_local_workers(2, "mobile_sam", tls=pki, timeout_s=180) as cluster:
        assert cluster.client_tls is not None
        with DistributedSamPredictor(mobile_sam, cluster.executors(), wire_dtype="float32", allow_local=False) as p:
            p.set_image(astronaut)
            masks, _, _ = p.predict(*POINT)
            assert not p.last_run.failovers
        _, ref_masks = reference(2)
        assert np.array_equal(masks, ref_masks)

        address = cluster.addresses[0]
        batch = np.zeros((1, 224, 224, 3), np.uint8)
        meta = np.array([[0, 0, 224, 224]], np.int32)
        # No client certificate (plaintext): refused.
        with RemoteExecutor(address) as plain:
            assert not plain.health(timeout=3.0)
            with pytest.raises(WorkerError, match="UNAVAILABLE"):
                plain.run("tinyvit.trunk", batch, meta, timeout=10.0)
        # A certificate from another CA: refused in the handshake.
        other = generate_dev_pki(tmp_path / "other")
        rogue = ClientTLS(pki / "ca.pem", other["edge.pem"], other["edge.key"])
        with RemoteExecutor(address, tls=rogue) as bad:
            with pytest.raises(WorkerError):
                bad.run("tinyvit.trunk", batch, meta, timeout=10.0)
        # Through the predictor: without local compute the request fails clearly instead of leaking.
        with DistributedSamPredictor(mobile_sam, cluster.addresses, allow_local=False) as p:
            with pytest.raises(PrivacyConstraintError, match="local compute is forbidden"):
                p.set_image(astronaut)


def test_cluster_status_cli(four, tmp_path, capsys):
    from pedvit.cli import main

    path = four.cluster().save(tmp_path / "cluster.json")
    assert main(["cluster", "status", "--cluster-file", str(path), "--json"]) == 0
    statuses = json.loads(capsys.readouterr().out)
    assert [s["address"] for s in statuses] == four.addresses
    assert all(s["healthy"] and s["model"] == "mobile_sam" and "tinyvit.trunk" in s["stages"] and s["pid_alive"] for s in statuses)
    # A worker nobody serves shows as DOWN and makes the command fail.
    data = json.loads(path.read_text())
    data["workers"].append({"address": "127.0.0.1:1", "name": "gone"})
    path.write_text(json.dumps(data))
    assert main(["cluster", "status", "--cluster-file", str(path)]) == 1
    assert "gone\t127.0.0.1:1\tDOWN" in capsys.readouterr().out
