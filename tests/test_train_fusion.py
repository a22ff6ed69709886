"""Smoke test of the fusion trainer (`pedvit.training`, run as `scripts/train_fusion.py distil`) on CPU with real
MobileSAM weights:
a few steps on cached augmented images change the weights and write weights + metadata, for both objectives
(the embedding one with the edge's whole-image context pass)."""

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
@pytest.mark.parametrize("objective, context_px", [("mask", 0), ("embedding", 224)])
def test_distil_with_cache_trains_and_writes_metadata(tmp_path: Path, objective: str, context_px: int) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "train_fusion.py"), "distil", "--device", "cpu", "--steps", "3",
           "--objective", objective,
           "--batch", "1", "--points", "1", "--cache", "2", "--val-images", "1", "--log-every", "3", "--workers", "0",
           "--threads", "2", "--warmup", "1", "--variants", f"tiny:16:1:0:{context_px}", "--out-dir", str(tmp_path)]
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
    assert module.context_px == meta["config"].get("context_px", 0) == context_px
    assert (meta["context_flops_per_image"] > 0) == (context_px > 0)
    assert set(meta["held_out"]).isdisjoint(meta["training_photos"])
    assert torch.isfinite(torch.tensor(meta["history"][-1]["tiny"]["val_agreement"]))
    # The metadata says which loss produced the weights (the embedding objective never runs the decoder).
    assert ("KL of mask logits" in meta["objective"]) == (objective == "mask")


def test_seam_distance_marks_window_borders() -> None:
    from pedvit.training.features import seam_distance

    dist = seam_distance()
    assert dist.shape == (64, 64)
    # Token rows/columns 0, 13, 14, 27, ... touch a window border; 6 and 7 are a 14-token window's centre.
    assert int(dist[0, 30]) == 0 and int(dist[30, 13]) == 0 and int(dist[14, 40]) == 0
    assert int(dist[6, 7]) == 6 and int(dist[20, 21]) == 6
    assert int(dist[2, 9]) == 2 and int(dist.max()) == 6


@pytest.mark.slow
@torch.no_grad()
def test_seam_oracle_interpolates_between_isolated_and_monolithic() -> None:
    """band 0 = the isolated trunk, band 7 (every token is < 7 from a border) = the monolithic trunk."""
    from pedvit.data import real_photos
    from pedvit.models import build_model
    from pedvit.training.evaluate import SeamOraclePredictor
    from pedvit.training.features import monolithic_trunk, resize, stitched_fast

    model = build_model("mobile_sam").eval()
    resized = resize(model, real_photos(min_count=0, names=["camera"])[0].image)
    neck = model.image_encoder.run_neck
    iso, mono = neck(stitched_fast(model, resized)), neck(monolithic_trunk(model, resized))
    assert float((iso - mono).abs().max()) > 0.1  # the two ends differ, so the checks below can fail
    for band, expected in ((0, iso), (7, mono)):
        got = SeamOraclePredictor(model, None, band)._encode(resized, resized)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    half = SeamOraclePredictor(model, None, 2)._encode(resized, resized)
    assert float((half - iso).abs().max()) > 0.1 and float((half - mono).abs().max()) > 0.1


def test_wide_photo_table_is_disjoint_from_held_out_and_well_formed() -> None:
    from pedvit.training.photos import EXTRA_PHOTOS, HELD_OUT, WIDE_PHOTOS, photo_file_name

    wide, extra, held_out = WIDE_PHOTOS, EXTRA_PHOTOS, set(HELD_OUT)
    assert len(wide) >= 50
    assert not (set(wide) & set(extra)) and not (set(wide) & held_out)
    files = {photo_file_name(name, member) for name, (_, _, member, _) in wide.items()}
    assert len(files) == len(wide)  # one file per photo, no clashes
    for name, (spec, source, member, sha) in wide.items():
        assert "==" in spec and len(sha) == 64 and int(sha, 16) >= 0
        assert source == "wheel" or source.endswith((".tar.gz", ".zip"))
        assert photo_file_name(name, member).endswith((".jpg", ".png"))


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_read_member_finds_files_under_the_sdist_top_level_folder(tmp_path: Path, kind: str) -> None:
    import io
    import tarfile
    import zipfile

    from pedvit.training.photos import read_member

    payload = b"\xff\xd8 not really a jpeg"
    archive = tmp_path / f"pkg-1.0.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("pkg-1.0/PKG-INFO", "x")
            zf.writestr("pkg-1.0/tests/images/a.jpg", payload)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for name, data in (("pkg-1.0/PKG-INFO", b"x"), ("pkg-1.0/tests/images/a.jpg", payload)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    assert read_member(archive, "tests/images/a.jpg", top_level=True) == payload
    with pytest.raises(KeyError):
        read_member(archive, "tests/images/missing.jpg", top_level=True)


def test_extra_photos_refuses_a_file_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    from PIL import Image

    from pedvit.training.photos import EXTRA_PHOTOS, WIDE_PHOTOS, extra_photos, photo_file_name

    for name, (_, member) in EXTRA_PHOTOS.items():
        Image.new("RGB", (8, 8)).save(tmp_path / photo_file_name(name, member))
    assert len(extra_photos(str(tmp_path))) == len(EXTRA_PHOTOS)  # the original six are not pinned
    with pytest.raises(SystemExit, match="fetch-extra --wide"):
        extra_photos(str(tmp_path), wide=True)
    for name, (_, _, member, _) in WIDE_PHOTOS.items():
        Image.new("RGB", (8, 8)).save(tmp_path / photo_file_name(name, member))
    with pytest.raises(SystemExit, match="not the pinned"):
        extra_photos(str(tmp_path), wide=True)


@pytest.mark.slow
def test_adapt_then_distil_on_the_adapted_trunk(tmp_path: Path) -> None:
    """`adapt` trains only the adaptable trunk parameters (here with seam padding) and writes the adapter +
    metadata; `distil --adapter` trains the fusion on the adapted trunk's features and ships the adapter, seam
    padding included, inside the fusion weights; joint training keeps the seam padding."""
    from pedvit.models import build_model
    from pedvit.plans.fusion import load_window_adapter
    from pedvit.plans.window_adapter import adaptable_parameters

    script = str(ROOT / "scripts" / "train_fusion.py")
    adapt = [sys.executable, script, "adapt", "--steps", "3", "--cache", "1", "--val-images", "1", "--batch", "2",
             "--log-every", "3", "--warmup", "1", "--threads", "2", "--seam-padding", "replicate",
             "--out", str(tmp_path / "adapter.pt")]
    done = subprocess.run(adapt, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = load_window_adapter(tmp_path / "adapter.pt")
    assert adapter is not None and adapter.seam_padding == "replicate"
    reference = adaptable_parameters(build_model("mobile_sam").image_encoder)
    assert set(adapter.params) <= set(reference)
    assert any(not torch.equal(v, reference[n]) for n, v in adapter.params.items())  # three steps moved something
    meta = json.loads((tmp_path / "adapter.json").read_text())
    assert meta["adapter_id"] == adapter.adapter_id and meta["optimizer"]["steps"] == 3
    assert meta["seam_padding"] == "replicate"
    assert set(meta["held_out"]).isdisjoint(meta["training_photos"])
    distil = [sys.executable, script, "distil", "--device", "cpu", "--steps", "2", "--objective", "embedding",
              "--batch", "1", "--points", "1", "--cache", "1", "--val-images", "1", "--log-every", "2", "--workers", "0",
              "--threads", "2", "--warmup", "1", "--variants", "tiny:16:1:0", "--adapter", str(tmp_path / "adapter.pt"),
              "--out-dir", str(tmp_path)]
    done = subprocess.run(distil, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    module = load_default_fusion(tmp_path / "fusion_tiny.pt")
    assert module.window_adapter is not None and module.window_adapter.adapter_id == adapter.adapter_id
    fusion_meta = json.loads((tmp_path / "fusion_tiny.json").read_text())
    assert fusion_meta["window_adapter"]["adapter_id"] == adapter.adapter_id
    assert fusion_meta["window_adapter"]["training"]["optimizer"]["steps"] == 3
    # --adapter-lr: the adapter trains jointly with the fusion; the file stores the moved adapter.
    joint = distil[:-2] + ["--adapter-lr", "1e-3", "--out-dir", str(tmp_path / "joint")]
    done = subprocess.run(joint, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    joint_module = load_default_fusion(tmp_path / "joint" / "fusion_tiny.pt")
    moved = joint_module.window_adapter
    assert moved is not None and moved.adapter_id != adapter.adapter_id and moved.seam_padding == "replicate"
    assert set(moved.params) <= set(reference)
    assert any(not torch.equal(v, adapter.params[n]) for n, v in moved.params.items() if n in adapter.params)
    joint_meta = json.loads((tmp_path / "joint" / "fusion_tiny.json").read_text())
    assert joint_meta["window_adapter"]["adapter_id"] == moved.adapter_id
    assert joint_meta["window_adapter"]["training"]["initial_adapter"]["adapter_id"] == adapter.adapter_id
    assert joint_meta["optimizer"]["adapter_lr"] == 1e-3
    two = distil[:-2] + ["--adapter-lr", "1e-3", "--variants", "a:16:1:0,b:16:1:0", "--out-dir", str(tmp_path / "two")]
    done = subprocess.run(two, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "single --variants item" in done.stderr


def test_step_budget_stops_at_110_percent_of_its_minutes_and_never_caps_explicit_steps() -> None:
    """A budget in minutes also stops on the wall clock (steps slower than timed, e.g. on a shared GPU), so the
    run still saves its weights; an explicit --steps runs them all."""
    import time

    from pedvit.training.loop import StepBudget

    late = StepBudget(0, 1.0, time.perf_counter() - 67, "t")  # 67 s of a 60 s budget gone
    assert late.finished(5)
    on_time = StepBudget(0, 1.0, time.perf_counter() - 30, "t")
    assert not on_time.finished(5)
    explicit = StepBudget(8, 0.001, time.perf_counter() - 600, "t")
    assert not explicit.finished(7) and explicit.finished(8)
