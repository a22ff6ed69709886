"""`pedvit video` through the CLI's main: bad input exits 2 before any model or worker starts; a folder of
frames with a frame of another size, an unreadable frame and a lost object runs to the end with each
recorded, and its ledger stays valid; a video file gives masks, JSON and an overlay."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pedvit.cli import main
from pedvit.edge.ledger import check_ledger, read_ledger
from pedvit.video import pan_clip

BOX = "352,180,472,300"  # the disc on the first frame of pan_clip(300)


@pytest.fixture(scope="module")
def clip():
    return pan_clip(300)


def _write_video(path: Path, frames: np.ndarray) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (frames.shape[2], frames.shape[1]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("not_a_video", "cannot read video"),
    ("empty_folder", "holds no frames"),
    ("zero_frames", "video"),
])
def test_bad_input_exits_2_before_any_work(tmp_path: Path, capsys, case: str, message: str) -> None:
    if case == "missing":
        source = tmp_path / "nope.mp4"
    elif case == "not_a_video":
        source = tmp_path / "text.mp4"
        source.write_text("this is not a video\n")
    elif case == "empty_folder":
        source = tmp_path / "frames"
        source.mkdir()
        (source / "notes.txt").write_text("no frames here")
    else:
        source = tmp_path / "empty.mp4"
        _write_video(source, np.zeros((0, 64, 64, 3), np.uint8))
    # the default mode would start local worker processes: exiting 2 fast shows nothing started
    code = main(["video", str(source), "--box", "1,1,10,10", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_bad_options_and_prompts_exit_2(tmp_path: Path, clip, capsys) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(clip.frames[0]).save(frames / "0000.png")
    out = str(tmp_path / "out")
    assert main(["video", str(frames), "--out", out]) == 2
    assert "needs a prompt" in capsys.readouterr().err
    assert main(["video", str(frames), "--box", "700,10,800,50", "--out", out]) == 2
    assert "outside the 640 x 480 image" in capsys.readouterr().err
    assert main(["video", str(frames), "--box", BOX, "--temporal", "naive", "--coverage-cap", "0.3", "--out", out]) == 2
    assert "needs --temporal sticky" in capsys.readouterr().err


@pytest.mark.slow
def test_folder_with_a_resized_frame_an_unreadable_frame_and_a_lost_object(tmp_path: Path, clip) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(clip.frames[0]).save(frames / "0000.png")
    Image.fromarray(clip.frames[1][::2, ::2]).save(frames / "0001.png")  # another size mid-stream
    (frames / "0002.png").write_bytes(b"not a png")  # unreadable
    Image.fromarray(clip.frames[2]).save(frames / "0003.png")
    Image.fromarray(np.zeros_like(clip.frames[0])).save(frames / "0004.png")  # the object is lost
    out, result, ledger = tmp_path / "masks", tmp_path / "r.json", tmp_path / "ledger.jsonl"
    code = main(["video", str(frames), "--box", BOX, "--in-process", "--local", "2", "--temporal", "sticky",
                 "--coverage-cap", "0.5", "--out", str(out), "--json", str(result), "--ledger", str(ledger),
                 "--quiet"])
    assert code == 0
    data = json.loads(result.read_text())
    assert [s["input_frame"] for s in data["skipped"]] == [1, 2]
    assert "240 x 320, the stream is 480 x 640" in data["skipped"][0]["reason"]
    assert "cannot read image" in data["skipped"][1]["reason"]
    assert sorted(p.name for p in out.glob("*.png")) == ["frame_00000.png", "frame_00003.png", "frame_00004.png"]
    assert [f["index"] for f in data["frames"]] == [0, 1, 2] and data["lost_frames"] == [2]
    assert data["workers"] == ["inproc0", "inproc1"] and 0 < data["max_worker_scene_coverage"] <= 0.5
    assert check_ledger(ledger) == (3, [])
    assert [r["extra"]["video"]["frame"] for r in read_ledger(ledger)] == [0, 1, 2]


@pytest.mark.slow
def test_video_file_gives_masks_json_and_overlay(tmp_path: Path, clip) -> None:
    video = tmp_path / "clip.mp4"
    _write_video(video, clip.frames[:4])
    out, result, overlay = tmp_path / "masks", tmp_path / "r.json", tmp_path / "o.mp4"
    code = main(["video", str(video), "--box", BOX, "--monolithic", "--out", str(out), "--json", str(result),
                 "--overlay", str(overlay), "--max-frames", "3", "--quiet"])
    assert code == 0
    data = json.loads(result.read_text())
    assert data["frames_segmented"] == 3 and data["max_worker_scene_coverage"] == 0.0
    for t in range(3):
        mask = np.array(Image.open(out / f"frame_{t:05d}.png")) > 0
        gt = clip.object_masks[t]
        assert (mask & gt).sum() / (mask | gt).sum() > 0.85  # mp4 compression costs a little
    capture = cv2.VideoCapture(str(overlay))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
