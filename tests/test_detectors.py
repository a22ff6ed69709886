"""Edge detectors of sensitive content (faces, text, people), fail-closed behaviour and the annotated sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import pedvit.partition.detectors as detectors
from pedvit.partition import Constraints, DetectorError, WindowGrid, constraints_for_image, parse_keep_local
from pedvit.partition.sensitivity import Region, sensitive_windows


def _text_image(text: str = "ACCOUNT 4821 7730", height: int = 20, shape: tuple[int, int] = (300, 500),
                at: tuple[int, int] = (60, 140)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A grey photo-like noise image with one dark text line; returns (image, ink box x0, y0, x1, y1)."""
    from pedvit.eval.composite import font_path

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(170, 12, shape + (3,)), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    font = ImageFont.truetype(font_path(), size=round(height * 1.25))
    draw = ImageDraw.Draw(pil)
    draw.text(at, text, fill=(20, 20, 20), font=font)
    box = draw.textbbox(at, text, font=font)
    return np.asarray(pil), box


def test_mtcnn_finds_the_astronauts_face(astronaut: np.ndarray) -> None:
    faces = detectors.load_detector("mtcnn").detect(astronaut)
    assert faces and all(r.kind == "face" for r in faces)
    best = max(faces, key=lambda r: r.score)
    y0, x0, y1, x1 = best.box
    # hand-checked face box: x 181-264, y 67-172; the detection covers it (it is grown by a margin)
    assert y0 <= 67 + 10 and x0 <= 181 + 10 and y1 >= 172 - 10 and x1 >= 264 - 10
    assert (y1 - y0) < 250 and (x1 - x0) < 250  # and is not the whole photo


def test_dbnet_finds_a_text_line_and_nothing_on_noise() -> None:
    img, (x0, y0, x1, y1) = _text_image()
    det = detectors.load_detector("dbnet")
    found = det.detect(img)
    assert found and all(r.kind == "text" for r in found)
    ys0, xs0, ys1, xs1 = (min(r.box[0] for r in found), min(r.box[1] for r in found),
                          max(r.box[2] for r in found), max(r.box[3] for r in found))
    assert ys0 <= y0 and xs0 <= x0 and ys1 >= y1 and xs1 >= x1  # the union covers the ink
    plain = np.clip(np.random.default_rng(1).normal(170, 12, (300, 500, 3)), 0, 255).astype(np.uint8)
    assert det.detect(plain) == []


def test_text_line_windows_stay_local_across_a_seam() -> None:
    # a 1024 x 448 image: the line spans the seam at x = 224 (two windows), all of them must stay local
    img, (x0, y0, x1, y1) = _text_image(shape=(448, 1024), at=(150, 200), height=14)
    grid = WindowGrid(img.shape[:2])
    c = constraints_for_image(img, grid, Constraints(), keep_local=("text",), objects=False)
    touched = sensitive_windows(grid, [Region("text", (y0, x0, y1, x1), 1.0)], 0)
    assert len(touched) >= 2 and touched <= c.keep_local
    assert len(c.keep_local) < len(grid.content_ids)  # not everything


def test_parse_keep_local() -> None:
    assert parse_keep_local(None) == ("faces", "text")
    assert parse_keep_local("faces,people") == ("faces", "people")
    assert parse_keep_local("none") == ()
    with pytest.raises(ValueError, match="unknown keep-local classes"):
        parse_keep_local("faces,plates")
    assert detectors.detector_names(("faces", "text", "detector:haar")) == ("mtcnn", "dbnet", "haar")


def test_unreadable_image_fails_naming_the_detector() -> None:
    with pytest.raises(DetectorError, match="'mtcnn'") as info:
        detectors.run_detectors(np.zeros((64, 64), np.float32), ("faces",))
    assert info.value.detector == "mtcnn" and "no window was sent" in str(info.value)


def test_detector_that_fails_to_load_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> detectors.SensitiveDetector:
        raise OSError(f"weights of {name} not found")

    detectors._cached.cache_clear()
    monkeypatch.setattr(detectors, "_loader", broken)
    try:
        with pytest.raises(DetectorError, match="'dbnet'.*weights of dbnet not found"):
            detectors.run_detectors(np.zeros((32, 32, 3), np.uint8), ("text",))
    finally:
        detectors._cached.cache_clear()


def test_semantic_request_fails_closed_when_a_detector_fails(monkeypatch: pytest.MonkeyPatch, mobile_sam,
                                                              astronaut: np.ndarray, tmp_path) -> None:
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor

    def explode(self: detectors.MtcnnFaceDetector, image: np.ndarray) -> list[Region]:
        raise RuntimeError("simulated inference failure")

    monkeypatch.setattr(detectors.MtcnnFaceDetector, "detect", explode)
    workers = in_process_workers(mobile_sam, 3, record_inputs=True)
    ledger = tmp_path / "ledger.jsonl"
    pred = DistributedSamPredictor(mobile_sam, workers, scheme="semantic", fusion="off", ledger=ledger)
    with pytest.raises(DetectorError, match="'mtcnn'.*simulated inference failure"):
        pred.set_image(astronaut)
    assert all(w.received == [] for w in workers)  # no window was sent to any worker
    assert not ledger.exists() or ledger.read_text() == ""
    pred.close()


def test_unknown_keep_local_class_is_refused(mobile_sam) -> None:
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor

    with pytest.raises(ValueError, match="unknown keep-local classes"):
        DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 2), scheme="semantic", fusion="off",
                                keep_local_classes="faces,licence")


@pytest.mark.slow
def test_semantic_run_keeps_face_and_text_local_and_ledger_names_detectors(mobile_sam, astronaut: np.ndarray,
                                                                            tmp_path) -> None:
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.edge.ledger import check_ledger

    img = astronaut.copy()
    text, box = _text_image(shape=(40, 260), at=(10, 8), height=16)
    img[440:480, 200:460] = text  # a name plate straddling the seam at x = 224
    workers = in_process_workers(mobile_sam, 4)
    ledger = tmp_path / "ledger.jsonl"
    with DistributedSamPredictor(mobile_sam, workers, scheme="semantic", fusion="off", ledger=ledger) as pred:
        pred.set_image(img)
        record, grid = pred.last_run, pred.engine.last_grid
    sent = {i for w in record.workers.values() for i in w.windows}
    seen = grid.original_mask(sent)
    assert not seen[67:172, 181:264].any()  # the face
    assert not seen[448:464, 210:450].any()  # the text line
    line = json.loads(ledger.read_text().splitlines()[-1])
    assert line["extra"]["sensitive"]["keep_local_classes"] == ["faces", "text"]
    assert line["extra"]["sensitive"]["detectors"] == ["mtcnn", "dbnet"]
    assert check_ledger(ledger)[1] == []


def test_hog_people_detector_loads_and_runs() -> None:
    det = detectors.load_detector("hog")
    assert det.kind == "person"
    assert isinstance(det.detect(np.full((200, 120, 3), 128, np.uint8)), list)


def test_composite_set_is_deterministic_and_annotated() -> None:
    from pedvit.eval.composite import composite_set

    a, b = composite_set(2, seed=3), composite_set(2, seed=3)
    assert [x.name for x in a] == [x.name for x in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        assert x.regions == y.regions
        assert max(x.image.shape[:2]) == 1024
        kinds = {r.kind for r in x.regions}
        assert kinds == {"face", "text"}
        for r in x.regions:
            x0, y0, x1, y1 = r.box
            assert 0 <= x0 < x1 <= x.image.shape[1] and 0 <= y0 < y1 <= x.image.shape[0]
            assert (16 <= r.size <= 256) if r.kind == "face" else (8 <= r.size <= 96 and r.text)
    assert not np.array_equal(composite_set(1, seed=4)[0].image, a[0].image)


def test_privacy_rows_count_text_read_by_the_attack() -> None:
    from pedvit.eval.privacy_eval import evaluate_photos, summarize

    img, _ = _text_image("PASSPORT 5501 2273", height=28, shape=(448, 640), at=(120, 190))
    rep = evaluate_photos([("sign", img)], workers_list=(2,), schemes=("semantic",), colluders=2,
                          detect_kinds=("face", "text"), methods=("telea",), progress=False, figure_images=())
    rows = {(r["scheme"], r["colluders"]): r for r in summarize(rep)["rows"]}
    assert rows[("cloud-only", 1)]["text_in_full_image"] >= 1
    # the cloud sees every pixel, so it reads what the full image shows; semantic workers read nothing
    assert rows[("cloud-only", 1)]["text_found_by_one_worker"] == rows[("cloud-only", 1)]["text_in_full_image"]
    for k in (1, 2):
        r = rows[("semantic", k)]
        assert r["text_in_full_image"] >= 1 and r["text_found_by_one_worker"] == 0
        assert {"faces_in_full_image", "faces_found_by_one_worker", "n_workers", "colluders"} <= set(r)


def test_halo_crops_that_touch_a_region_stay_local() -> None:
    grid = WindowGrid((1024, 1024))
    region = [Region("face", (100, 230, 110, 240), 1.0)]  # just right of the seam at x = 224, row 0
    assert sensitive_windows(grid, region, 0) == {1}
    # window 0's crop with a 32 px halo reaches x = 256: it would carry the face's pixels to its worker
    assert sensitive_windows(grid, region, 0, halo_px=32) == {0, 1}


def test_detect_eval_recall_can_fail_and_summarizes() -> None:
    from pedvit.eval.composite import composite_set
    from pedvit.eval.detect_eval import evaluate_image, format_detect_eval, summarize_detect_eval

    item = composite_set(1, seed=5)[0]
    good = evaluate_image(item, classes=("faces", "text"))
    blind = evaluate_image(item, classes=("people",))  # HOG finds neither faces nor text lines
    assert len(good["regions"]) == len(item.regions) >= 4
    text_kept = [g["kept"] for g in good["regions"] if g["kind"] == "text" and g["size"] >= 12]
    assert text_kept and all(text_kept)
    assert sum(g["kept"] for g in blind["regions"]) < sum(g["kept"] for g in good["regions"])
    good["set"] = "composite"
    s = summarize_detect_eval([good])
    row = s["sets"]["composite"]["table"]["text all"]
    assert row["regions"] == sum(r.kind == "text" for r in item.regions) and row["edge_recall"] == 1.0
    assert "| text all |" in format_detect_eval(s)


def test_pedvit_plans_says_which_detectors_semantic_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from pedvit.cli import main

    assert main(["plans", "--plan", "vit-exact", "--json", "--keep-local", "faces,people"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["keep_local_classes"] == ["faces", "people"]
    assert row["keep_local_detectors"] == {"faces": ["mtcnn"], "people": ["hog"]}
    assert main(["plans", "--plan", "vit-exact"]) == 0
    assert "faces (mtcnn), text (dbnet) stay on the edge" in capsys.readouterr().out
