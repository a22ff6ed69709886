"""The demo's video tab over real HTTP (real MobileSAM, 2 in-process workers): a clip is uploaded, a run is
started and polled to the end (one mask per frame, each worker's scene coverage under the cap), bad clips and
bad runs get 4xx JSON errors, the sample clips, and the page has the tab."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pedvit.edge.build import in_process_workers
from pedvit.video import pan_clip
from pedvit.web.app import DemoApp
from pedvit.web.images import MAX_UPLOAD_BYTES, ApiError
from pedvit.web.server import STATIC_DIR, DemoServer
from pedvit.web.video import MAX_CLIP_FRAMES, SAMPLE_FRAMES, decode_clip

from test_web_api import call, decode_png

FRAMES = 4
CAP = 0.35  # binds: with 2 workers and no cap, a worker gets about 0.45 of the first frame


@pytest.fixture(scope="module")
def clip():
    return pan_clip(200, (240, 320), scale=1.5, radius=36)  # the sample pan clip's generator, same size


def video_bytes(frames: np.ndarray, path: Path) -> bytes:
    """T x H x W x 3 RGB frames as an MP4 file's bytes (OpenCV, mp4v)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (frames.shape[2], frames.shape[1]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path.read_bytes()


def object_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.fixture(scope="module")
def server(mobile_sam):
    srv = DemoServer(DemoApp(mobile_sam, in_process_workers(mobile_sam, 2)), "127.0.0.1", 0)
    srv.serve_in_thread()
    yield srv
    srv.close()


def poll(server: DemoServer, job_id: str, timeout_s: float = 600) -> tuple[dict, list[dict]]:
    """Poll a job with ``since`` until it ends: (last answer, every frame received)."""
    frames: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, answer = call(server, "GET", f"/api/video/{job_id}?since={len(frames)}")
        assert status == 200, answer
        assert answer["since"] == len(frames)
        frames += answer["frames"]
        if answer["state"] not in ("queued", "running"):
            return answer, frames
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {timeout_s} s")


@pytest.mark.slow
def test_upload_run_and_poll_to_the_end(server, clip, tmp_path) -> None:
    status, info = call(server, "POST", "/api/clips", video_bytes(clip.frames[:FRAMES], tmp_path / "c.mp4"),
                        {"Content-Type": "video/mp4"})
    assert status == 200, info
    assert (info["frames"], info["height"], info["width"]) == (FRAMES, 240, 320)
    status, jpeg = call(server, "GET", f"/api/clips/{info['clip_id']}/{FRAMES - 1}.jpg")
    assert status == 200 and np.asarray(Image.open(io.BytesIO(jpeg))).shape == (240, 320, 3)
    assert call(server, "GET", f"/api/clips/{info['clip_id']}/{FRAMES}.jpg")[0] == 404

    body = {"clip_id": info["clip_id"], "box": object_box(clip.object_masks[0]), "workers": 2, "temporal": "sticky",
            "coverage_cap": CAP, "reuse": True}
    status, started = call(server, "POST", "/api/video", body)
    assert status == 200, started
    assert started["total"] == FRAMES
    answer, frames = poll(server, started["job_id"])
    assert answer["state"] == "done", answer["error"]
    assert [f["index"] for f in frames] == list(range(FRAMES))  # one record per frame, none twice
    names = [w["name"] for w in answer["workers"]]
    assert names == ["inproc0", "inproc1"] and answer["workers"][0]["colour"] != answer["workers"][1]["colour"]
    content = {int(k) for k in answer["windows"]}
    for f, truth in zip(frames, clip.object_masks[:FRAMES]):
        mask = decode_png(f["mask"])[..., 3] > 0
        assert mask.shape == (240, 320) and mask.sum() == f["mask_area"]
        assert (mask & truth).sum() / (mask | truth).sum() > 0.8, f["index"]  # the disc is followed
        assert len(f["coverage"]) == 2 and max(f["coverage"]) <= CAP + 1e-9
        assert max(f["coverage"]) == pytest.approx(f["max_worker_scene_coverage"])
        sent = [set(ids) for ids in f["windows_per_worker"].values()]
        assert sum(map(len, sent)) == len(set().union(*sent))  # no window goes to two workers
        elsewhere = set(f["kept_local"]) | set(f["held_back"]) | set(f["reused"])
        assert not set().union(*sent) & elsewhere
        assert set().union(*sent) | elsewhere <= content
    assert frames[0]["held_back"]  # the cap binds: the edge keeps windows a worker may not see
    assert answer["max_worker_scene_coverage"] <= CAP
    maps = answer["coverage_maps"]
    assert [m["name"] for m in maps] == names
    for m, coverage in zip(maps, frames[-1]["coverage"]):
        assert m["coverage"] == pytest.approx(coverage)
        picture = decode_png(m["png"])
        assert picture.shape[2] == 4 and (picture[..., 3] > 0).any()

    # polled again after the end: no frames past the end, the same final state
    status, again = call(server, "GET", f"/api/video/{started['job_id']}?since={FRAMES}")
    assert status == 200 and again["frames"] == [] and again["state"] == "done"


def test_bad_clips_get_4xx(server, clip, tmp_path) -> None:
    status, error = call(server, "POST", "/api/clips", b"\x00\x00\x00\x18ftypmp42 but not a video", {"Content-Type": "video/mp4"})
    assert status == 415 and "OpenCV" in error["error"]
    status, error = call(server, "POST", "/api/clips", b"", {"Content-Type": "video/mp4"})
    assert status == 400 and "empty" in error["error"]
    small = np.ascontiguousarray(clip.frames[: MAX_CLIP_FRAMES + 1, :32, :48])
    status, error = call(server, "POST", "/api/clips", video_bytes(small, tmp_path / "long.mp4"), {"Content-Type": "video/mp4"})
    assert status == 413 and "too long" in error["error"]
    status, info = call(server, "POST", "/api/clips", video_bytes(small[:MAX_CLIP_FRAMES], tmp_path / "ok.mp4"),
                        {"Content-Type": "video/mp4"})
    assert status == 200 and info["frames"] == MAX_CLIP_FRAMES  # the limit itself is accepted
    big = np.zeros((1, 1088, 1928, 3), np.uint8)
    status, error = call(server, "POST", "/api/clips", video_bytes(big, tmp_path / "big.mp4"), {"Content-Type": "video/mp4"})
    assert status == 413 and "too large" in error["error"]
    # the body limit: refused before the body is read, and by the decoder itself
    request_headers = {"Content-Type": "video/mp4", "Content-Length": str(50 * 1024 * 1024)}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(server.url + "/api/clips", data=b"x", method="POST", headers=request_headers), timeout=30)
    assert refused.value.code == 413
    with pytest.raises(ApiError) as info_error:
        decode_clip(b"\x00" * (MAX_UPLOAD_BYTES + 1))
    assert info_error.value.status == 413


def test_uploads_leave_no_file_behind(clip, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    data = video_bytes(clip.frames[:2], tmp_path / "c.mp4")
    frames, fps = decode_clip(data)
    assert frames.shape == (2, 240, 320, 3) and fps == pytest.approx(10)
    with pytest.raises(ApiError):
        decode_clip(b"not a video at all")
    assert list((tmp_path / "tmp").iterdir()) == []  # decoded or refused, the temporary copy is gone


def test_bad_runs_get_4xx(server, mobile_sam) -> None:
    status, info = call(server, "POST", "/api/clips/sample", {"name": "static"})
    assert status == 200 and info["frames"] == SAMPLE_FRAMES and (info["height"], info["width"]) == (240, 320)
    x0, y0, x1, y1 = info["object_box"]
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
    assert call(server, "POST", "/api/clips/sample", {"name": "../../etc/passwd"})[0] == 404
    clip_id, box = info["clip_id"], info["object_box"]
    for body, code, words in [
        ({"box": box}, 400, "clip_id"),
        ({"clip_id": "nope", "box": box}, 404, "unknown clip"),
        ({"clip_id": clip_id}, 400, "point"),
        ({"clip_id": clip_id, "box": [0, 0, 400, 100]}, 400, "outside"),
        ({"clip_id": clip_id, "box": box, "temporal": "naive", "coverage_cap": 0.3}, 400, "sticky"),
        ({"clip_id": clip_id, "box": box, "coverage_cap": 1.5}, 400, "(0, 1]"),
        ({"clip_id": clip_id, "box": box, "temporal": "wobbly"}, 400, "temporal"),
        ({"clip_id": clip_id, "box": box, "workers": 3}, 400, "between 1 and 2"),
    ]:
        status, error = call(server, "POST", "/api/video", body)
        assert status == code and words in error["error"], (body, error)
    assert call(server, "GET", "/api/video/nope")[0] == 404


@pytest.mark.slow
def test_one_run_at_a_time_and_cancel(server) -> None:
    app = server.app
    status, info = call(server, "POST", "/api/clips/sample", {"name": "pan"})
    assert status == 200
    body = {"clip_id": info["clip_id"], "box": info["object_box"], "workers": 2}
    with app.lock:  # the run cannot compute a frame while the test holds the model lock
        status, first = call(server, "POST", "/api/video", body)
        assert status == 200
        status, error = call(server, "POST", "/api/video", body)
        assert status == 409 and "in progress" in error["error"]
        status, cancelling = call(server, "POST", f"/api/video/{first['job_id']}/cancel")
        assert status == 200 and cancelling["cancelling"]
    answer, frames = poll(server, first["job_id"])
    assert answer["state"] == "cancelled" and frames == []  # cancelled before its first frame
    status, second = call(server, "POST", "/api/video", {**body, "temporal": "naive"})  # a new run may start now
    assert status == 200
    call(server, "POST", f"/api/video/{second['job_id']}/cancel")
    assert poll(server, second["job_id"])[0]["state"] == "cancelled"


def test_the_page_has_the_video_tab(server) -> None:
    status, page = call(server, "GET", "/")
    assert status == 200
    for element in (b'id="tab-video"', b'id="clip-file"', b'id="video-run"', b'id="video-slider"', b'id="coverage-chart"',
                    b'id="temporal"', b'id="cap"', b'id="reuse"'):
        assert element in page, element
    status, config = call(server, "GET", "/api/config")
    assert config["video"]["sample_clips"] == ["pan", "static"] and config["video"]["max_frames"] == MAX_CLIP_FRAMES
    script = (STATIC_DIR / "app.js").read_text()
    for endpoint in ("/api/clips", "/api/clips/sample", "/api/video", "?since="):
        assert endpoint in script, endpoint
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed: the script's syntax is checked only with it")
    checked = subprocess.run([node, "--check", str(STATIC_DIR / "app.js")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_coverage_maps_show_what_each_worker_saw() -> None:
    from types import SimpleNamespace

    from pedvit.video import SceneCoverage
    from pedvit.web.video import coverage_maps

    rng = np.random.default_rng(0)
    frames = rng.integers(40, 255, (2, 20, 30, 3), dtype=np.uint8)
    offsets = [(0.0, 0.0), (10.0, 0.0)]  # the camera moved 10 px down: a 30 x 30 scene
    coverage = SceneCoverage(2)
    for offset in offsets:
        coverage.add_frame((20, 30), offset)
    coverage.mark(0, (0, 0, 20, 15))  # worker 0 saw the left half of frame 0; worker 1 nothing
    records = [SimpleNamespace(index=i, offset=o) for i, o in enumerate(offsets)]
    seen, nothing = coverage_maps(frames, records, coverage)  # type: ignore[arg-type]
    assert seen.shape == nothing.shape == (30, 30, 4) and (seen[..., 3] == 255).all()  # the scene, cropped
    # the mosaic holds the last frame where frames overlap: scene rows 10..29 are frame 1
    assert np.array_equal(seen[:10, :15, :3], frames[0][:10, :15])
    assert np.array_equal(seen[10:20, :15, :3], frames[1][:10, :15])
    assert np.array_equal(seen[:, 15:, :3], nothing[:, 15:, :3])  # unseen: dimmed for both
    assert (nothing[..., :3] < 64).all()
