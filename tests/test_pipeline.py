"""Pipelining many images: the next image is encoded while the caller decodes the current one; failures are
per image; pipelined and sequential batches give the same results."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pedvit.edge.pipeline import EncodedImage, PipelinedEmbeddings, PrecomputedPredictor
from pedvit.models.transforms import ResizeLongestSide


class _FakeEngine:
    """Records which image each encode got; fails on images whose first pixel is 13."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.second_started = threading.Event()
        self.last_run = self.last_grid = None

    def encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        value = int(original[0, 0, 0])
        self.started.append(value)
        if len(self.started) == 2:
            self.second_started.set()
        if value == 13:
            raise RuntimeError("worker answered garbage\ntraceback...")
        self.last_run, self.last_grid = f"record-{value}", f"grid-{value}"
        return torch.full((1, 256, 64, 64), float(value))


def _fake_predictor() -> SimpleNamespace:
    return SimpleNamespace(engine=_FakeEngine(), transform=ResizeLongestSide(1024))


def _image(value: int) -> np.ndarray:
    return np.full((8, 10, 3), value, dtype=np.uint8)


def test_next_image_is_encoded_while_the_caller_works() -> None:
    predictor = _fake_predictor()
    stream = PipelinedEmbeddings(predictor).run([1, 2, 3], _image)
    first = next(stream)
    # The caller has not asked for image 2 yet: the pipeline started it anyway.
    assert predictor.engine.second_started.wait(timeout=30)
    assert first.key == 1 and first.record == "record-1" and first.grid == "grid-1" and float(first.features[0, 0, 0, 0]) == 1.0
    rest = list(stream)
    assert [item.key for item in rest] == [2, 3] and [item.record for item in rest] == ["record-2", "record-3"]


def test_sequential_mode_encodes_on_demand() -> None:
    predictor = _fake_predictor()
    stream = PipelinedEmbeddings(predictor, pipelined=False).run([1, 2], _image)
    next(stream)
    assert predictor.engine.started == [1]
    assert [item.key for item in stream] == [2]


def test_failures_are_per_image() -> None:
    def load(key: int) -> np.ndarray:
        if key == 4:
            raise OSError("cannot read image 4.jpg")
        return _image(key)

    items = list(PipelinedEmbeddings(_fake_predictor()).run([1, 13, 4, 2], load))
    assert [(item.key, item.error) for item in items] == [
        (1, None), (13, "worker answered garbage"), (4, "cannot read image 4.jpg"), (2, None)]
    assert items[3].record == "record-2"


def test_pipelining_needs_a_split_predictor(mobile_sam) -> None:
    from pedvit.edge.predictor import SamPredictor

    with pytest.raises(ValueError, match="split predictor"):
        PipelinedEmbeddings(SamPredictor(mobile_sam))


def test_precomputed_predictor_takes_only_its_image(mobile_sam) -> None:
    from pedvit.edge.predictor import SamPredictor

    source = SamPredictor(mobile_sam)
    predictor = PrecomputedPredictor(source)
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="no precomputed embedding"):
        predictor.set_image(image)
    features = torch.zeros(1, 256, 64, 64)
    predictor.use(EncodedImage("a", image, features, "record-a", "grid-a"))
    with pytest.raises(RuntimeError, match="no precomputed embedding"):
        predictor.set_image(image[::-1].copy())  # another image
    predictor.use(EncodedImage("a", image, features, "record-a", "grid-a"))
    predictor.set_image(image)
    assert predictor.get_image_embedding() is features and predictor.last_run == "record-a"
    assert predictor.engine.last_grid == "grid-a" and predictor.original_size == (40, 60)
    with pytest.raises(ValueError, match="no embedding"):
        predictor.use(EncodedImage("b", error="broken"))


@pytest.mark.slow
def test_pipelined_batch_equals_sequential(tmp_path, capsys) -> None:
    from pedvit.cli import main
    from pedvit.data.photos import photo

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(photo(name).image[::2, ::2]).save(folder / f"{name}.png")
    (folder / "zz-broken.png").write_bytes(b"\x89PNG but not really")
    outputs = {}
    for flag in ("pipelined", "sequential"):
        out = tmp_path / flag
        extra = [] if flag == "pipelined" else ["--no-pipeline"]
        assert main(["segment", str(folder), "--in-process", "--local", "2", "--everything", "--points-per-side", "4",
                     "--pred-iou-thresh", "0.7", "--stability-score-thresh", "0.85", "--out-dir", str(out), *extra]) == 1
        summary = json.loads((out / "summary.json").read_text())
        assert summary["pipelined"] == (flag == "pipelined")
        assert [Path(s["image"]).name for s in summary["skipped"]] == ["zz-broken.png"]
        outputs[flag] = {name: json.loads((out / f"{name}.json").read_text()) for name in ("chelsea", "coffee", "astronaut")}
    for name, result in outputs["pipelined"].items():
        other = outputs["sequential"][name]
        assert [m["segmentation"] for m in result["masks"]] == [m["segmentation"] for m in other["masks"]]
        # each image's record is its own encode's: the windows its workers got, and its size
        assert len(result["runs"]) == 1 and result["runs"][0]["image_size"] == result["image_size"]
        assert {k: v["windows"] for k, v in result["runs"][0]["workers"].items()} == \
               {k: v["windows"] for k, v in other["runs"][0]["workers"].items()}


def test_throughput_bench_rejects_bad_arguments(capsys) -> None:
    from pedvit.cli import main

    assert main(["bench", "throughput", "--workers", "two"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["bench", "throughput", "--workers", "0"]) == 2


@pytest.mark.slow
def test_throughput_bench_runs_every_configuration(tmp_path) -> None:
    from pedvit.eval.throughput_bench import format_table, run_throughput

    results = run_throughput(workers=(1,), n_images=2, points_per_side=0, progress=False)
    assert [r["config"] for r in results["rows"]] == ["monolithic", "split 1, sequential", "split 1, pipelined"]
    assert all(r["seconds"] > 0 and r["masks"] == 2 for r in results["rows"])
    assert "| split 1, pipelined |" in format_table(results)
