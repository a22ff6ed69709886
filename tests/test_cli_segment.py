"""`pedvit segment` end to end: local gRPC workers, monolithic, in-process, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pedvit.cli import main
from pedvit.cli.segment import load_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A real photo written as JPEG (the CLI reads files)."""
    from pedvit.data import real_photos

    image = real_photos(min_count=1, names=None)[0].image
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    Image.fromarray(image).save(path, quality=95)
    return path, np.array(Image.open(path).convert("RGB"))


def test_segment_local_grpc_workers(photo, tmp_path, capsys):
    path, image = photo
    h, w = image.shape[:2]
    out = {k: tmp_path / f"{k}.{'json' if k in ('json',) else 'jsonl' if k == 'ledger' else 'png'}" for k in ("out", "overlay", "views", "json", "ledger")}
    code = main(["segment", str(path), "--local", "2", "--point", f"{w // 2},{h // 2}",
                 *[arg for k, v in out.items() for arg in (f"--{k}", str(v))]])
    assert code == 0, capsys.readouterr().err
    mask = np.array(Image.open(out["out"]))
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
    result = json.loads(out["json"].read_text())
    assert result["mode"] == "local" and result["plan"] == "tinyvit-isolated"
    assert result["mask_area"] == int((mask == 255).sum()) > 0
    assert set(result["timings"]) >= {"preprocess_s", "encode_s", "decode_s"}
    assert len(result["workers"]) == 2
    windows = [set(v["windows"]) for v in result["workers"].values()]
    assert windows[0] and windows[1] and not windows[0] & windows[1]
    assert all(v["bytes_sent"] > 0 for v in result["workers"].values())
    assert result["ledger"] == str(out["ledger"]) and out["ledger"].exists()
    assert Image.open(out["overlay"]).size == (w, h)
    views = np.array(Image.open(out["views"]).convert("RGB"))
    assert views.ndim == 3 and views.shape[1] > views.shape[0]  # 3 tiles (2 workers + edge) side by side
    assert main(["ledger", "check", str(out["ledger"])]) == 0


def test_segment_monolithic_and_in_process_agree(photo, tmp_path, capsys):
    path, image = photo
    h, w = image.shape[:2]
    # An object's box (the tight box of the monolithic mask for the centre point), as a user would draw it:
    # an arbitrary box is an ambiguous prompt on which even small feature changes may pick another object.
    point = tmp_path / "point.png"
    assert main(["segment", str(path), "--monolithic", "--point", f"{w // 2},{h // 2}", "--out", str(point)]) == 0
    ys, xs = np.nonzero(np.array(Image.open(point)))
    box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"
    mono, split = tmp_path / "mono.png", tmp_path / "split.png"
    assert main(["segment", str(path), "--monolithic", "--box", box, "--out", str(mono), "--json", str(tmp_path / "m.json")]) == 0
    assert main(["segment", str(path), "--in-process", "--local", "3", "--box", box, "--out", str(split), "--views", str(tmp_path / "v.png")]) == 0
    a, b = np.array(Image.open(mono)) > 0, np.array(Image.open(split)) > 0
    assert a.shape == b.shape == (h, w)
    # The isolated split is approximate: the masks agree closely but need not be identical.
    assert (a & b).sum() / max(1, (a | b).sum()) > 0.7
    assert json.loads((tmp_path / "m.json").read_text())["mode"] == "monolithic"


def test_segment_bad_input_exit_2(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "missing.jpg"), "--monolithic"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert main(["segment", str(tmp_path / "junk.png"), "--monolithic"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    Image.new("RGB", (64, 48)).save(tmp_path / "small.png")
    assert main(["segment", str(tmp_path / "small.png"), "--monolithic", "--point", "500,10"]) == 2
    assert "outside" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(tmp_path / "small.png"), "--point", "1,2,3,4"])
    assert exit_info.value.code == 2


def test_load_image_modes_and_exif(tmp_path):
    gray = Image.fromarray((np.arange(12 * 20) % 256).astype(np.uint8).reshape(12, 20), mode="L")
    gray.save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (12, 20, 3)
    rgba = Image.new("RGBA", (20, 12), (255, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == 255).all()  # transparent -> white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise when shown
    Image.new("RGB", (20, 12)).save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (20, 12, 3)


def test_segment_keeps_faces_on_the_edge_by_default(tmp_path, capsys):
    """A user who passes no scheme gets `semantic`: the astronaut's face windows are computed on the edge."""
    from pedvit.data import real_photos
    from pedvit.partition import WindowGrid
    from pedvit.partition.detectors import run_detectors, sensitive_windows

    image = real_photos(min_count=1, names=("astronaut",))[0].image
    path = tmp_path / "astronaut.png"
    Image.fromarray(image).save(path)
    report = tmp_path / "r.json"
    assert main(["segment", str(path), "--in-process", "--local", "3", "--point", "250,120", "--out",
                 str(tmp_path / "m.png"), "--json", str(report)]) == 0, capsys.readouterr().err
    result = json.loads(report.read_text())
    assert result["scheme"] == "semantic" and result["sensitive"]["regions"].get("face", 0) >= 1
    sent = set().union(*(set(v["windows"]) for v in result["workers"].values()))
    grid = WindowGrid(image.shape[:2])
    face_windows = sensitive_windows(grid, run_detectors(image, ("faces",)), 16, 0)
    assert face_windows and face_windows <= set(result["local_windows"]) and not face_windows & sent
