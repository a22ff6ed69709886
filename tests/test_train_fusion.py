"""Smoke test of the fusion trainer (`scripts/train_fusion.py distil`) on CPU with real MobileSAM weights:
a few steps on cached augmented images change the weights and write weights + metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pedvit.plans.fusion import load_default_fusion

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_distil_with_cache_trains_and_writes_metadata(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "train_fusion.py"), "distil", "--device", "cpu", "--steps", "3",
           "--batch", "1", "--points", "1", "--cache", "2", "--val-images", "1", "--log-every", "3", "--workers", "0",
           "--threads", "2", "--warmup", "1", "--variants", "tiny:16:1:0", "--out-dir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cached 2 augmented images" in done.stdout
    module = load_default_fusion(tmp_path / "fusion_tiny.pt")
    assert module is not None
    # The zero-initialised output layers moved: three steps of training changed the module.
    assert any(float(b.up.weight.abs().sum()) > 0 for b in module.blocks)
    meta = json.loads((tmp_path / "fusion_tiny.json").read_text())
    assert meta["optimizer"]["steps"] == 3 and "2 cached augmented images" in meta["data"]
    assert meta["config"]["hidden"] == 16 and meta["history"][-1]["step"] == 3
    assert set(meta["held_out"]).isdisjoint(meta["training_photos"])
    assert torch.isfinite(torch.tensor(meta["history"][-1]["tiny"]["val_agreement"]))
