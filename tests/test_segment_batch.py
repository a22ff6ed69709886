"""`pedvit segment` on several images / folders, `--everything`, `--edge-runtime`, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pedvit.cli import main
from pedvit.edge.automatic_masks import rle_to_mask
from pedvit.cli.segment_batch import _output_stems, collect_images


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PEDVIT_ONNX_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two real photos, a file that claims to be a JPEG but is not, and a text file."""
    from pedvit.data.photos import photo

    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(photo("chelsea").image).save(root / "cat.jpg", quality=95)
    Image.fromarray(photo("coffee").image[::2, ::2]).save(root / "coffee.png")
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


def test_collect_images(folder, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    images, problems = collect_images([str(folder), str(folder / "cat.jpg"), str(empty), str(tmp_path / "missing.png")])
    assert [p.name for p in images] == ["broken.jpg", "cat.jpg", "coffee.png"]  # sorted, no duplicate, no .txt
    assert problems == [{"image": str(empty), "error": "folder holds no image files"},
                        {"image": str(tmp_path / "missing.png"), "error": "not found"}]
    assert _output_stems([Path("a/x.jpg"), Path("b/x.png"), Path("y.jpg"), Path("c/x.bmp")]) == ["x", "x-2", "y", "x-3"]


@pytest.mark.parametrize("extra, message", [
    (["--json", "r.json"], "cannot name one file"),
    ([], "give --out-dir"),
])
def test_several_images_need_out_dir(folder, capsys, extra, message) -> None:
    assert main(["segment", str(folder), "--monolithic", *extra]) == 2
    assert message in capsys.readouterr().err


def test_everything_usage_errors(folder, tmp_path, capsys) -> None:
    image = str(folder / "cat.jpg")
    assert main(["segment", image, "--everything", "--monolithic", "--point", "10,10"]) == 2
    assert "drop --point/--box" in capsys.readouterr().err
    assert main(["segment", image, "--everything", "--monolithic", "--out", str(tmp_path / "m.png")]) == 2
    assert "--out writes one prompted mask" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "nothing-here"), "--everything", "--monolithic"]) == 2
    assert "no image to segment" in capsys.readouterr().err
    assert main(["segment", image, "--everything", "--monolithic", "--pred-iou-thresh", "2"]) == 2
    assert "pred_iou_thresh" in capsys.readouterr().err


@pytest.mark.slow
def test_folder_with_bad_input_completes_the_rest(folder, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    code = main(["segment", str(folder), str(empty), "--monolithic", "--out-dir", str(out)])
    assert code == 1  # some inputs skipped
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.jpg" in err and "folder holds no image files" in err
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(d["image"]).name for d in summary["done"]) == ["cat.jpg", "coffee.png"]
    assert {Path(s["image"]).name for s in summary["skipped"]} == {"broken.jpg", "empty"}
    for stem in ("cat", "coffee"):
        result = json.loads((out / f"{stem}.json").read_text())
        mask = np.array(Image.open(out / f"{stem}.mask.png"))
        assert result["mask_area"] == int((mask == 255).sum()) > 0 and result["mode"] == "monolithic"
        assert (out / f"{stem}.overlay.png").is_file()
    assert not (out / "broken.json").exists()


@pytest.mark.slow
def test_image_failing_mid_batch_is_skipped(folder, tmp_path, capsys, monkeypatch) -> None:
    """The encoder fails on the first image (as a worker cluster or detector can): it is reported, the rest
    of the batch completes with the same predictor."""
    from pedvit.edge.predictor import SamPredictor

    original = SamPredictor.set_image
    failed = []

    def flaky(self, image, image_format="RGB"):
        if not failed:
            failed.append(image.shape)
            raise RuntimeError("worker pool lost\nsecond line not shown")
        return original(self, image, image_format)

    monkeypatch.setattr(SamPredictor, "set_image", flaky)
    out = tmp_path / "out"
    code = main(["segment", str(folder / "cat.jpg"), str(folder / "coffee.png"), "--everything", "--monolithic",
                 "--points-per-side", "3", "--out-dir", str(out)])
    assert code == 1 and failed
    assert "skipped" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == [{"image": str((folder / "cat.jpg").resolve()), "error": "worker pool lost"}]
    assert [Path(d["image"]).name for d in summary["done"]] == ["coffee.png"]
    assert json.loads((out / "coffee.json").read_text())["count"] >= 1


@pytest.mark.slow
def test_everything_json_and_overlay(folder, tmp_path, capsys) -> None:
    image_path = folder / "cat.jpg"
    h, w = np.array(Image.open(image_path)).shape[:2]
    results = {}
    for runtime in ("torch", "onnx"):
        result_path, overlay = tmp_path / f"{runtime}.json", tmp_path / f"{runtime}.png"
        assert main(["segment", str(image_path), "--everything", "--monolithic", "--points-per-side", "6",
                     "--edge-runtime", runtime, "--json", str(result_path), "--overlay", str(overlay)]) == 0
        assert "1 image(s) done, 0 skipped" in capsys.readouterr().out
        results[runtime] = json.loads(result_path.read_text())
        assert Image.open(overlay).size == (w, h)
    result = results["torch"]
    assert result["count"] == len(result["masks"]) >= 2 and result["options"]["points_per_side"] == 6
    for record in result["masks"]:
        assert {"area", "bbox", "predicted_iou", "stability_score", "segmentation", "point_coords", "crop_box"} <= set(record)
        mask = rle_to_mask(record["segmentation"])
        assert isinstance(record["segmentation"]["counts"], str)  # COCO compressed RLE
        assert mask.shape == (h, w) and int(mask.sum()) == record["area"]
    # The ONNX edge gives the same mask set (prompt encoder + mask decoder in onnxruntime).
    assert [m["segmentation"] for m in results["onnx"]["masks"]] == [m["segmentation"] for m in result["masks"]]


@pytest.mark.slow
def test_point_prompt_same_mask_with_onnx_edge(folder, tmp_path) -> None:
    image_path = folder / "cat.jpg"
    masks = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.png"
        assert main(["segment", str(image_path), "--in-process", "--local", "2", "--point", "220,150",
                     "--edge-runtime", runtime, "--out", str(out)]) == 0
        masks[runtime] = np.array(Image.open(out))
    assert masks["torch"].any() and np.array_equal(masks["torch"], masks["onnx"])
