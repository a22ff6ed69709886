"""JSON API of `pedvit demo` over real HTTP (in-process workers, real MobileSAM weights)."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pedvit.edge.build import in_process_workers
from pedvit.partition import WindowGrid
from pedvit.web.app import DemoApp
from pedvit.web.images import ApiError, decode_image
from pedvit.web.server import DemoServer

pytestmark = pytest.mark.slow  # real weights: two image encodes


@pytest.fixture(scope="module")
def server(mobile_sam):
    app = DemoApp(mobile_sam, in_process_workers(mobile_sam, 3))
    srv = DemoServer(app, "127.0.0.1", 0)
    srv.serve_in_thread()
    yield srv
    srv.close()


def call(server: DemoServer, method: str, path: str, body: bytes | dict | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw, ctype = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        status, raw, ctype = error.code, error.read(), error.headers["Content-Type"]
    return status, json.loads(raw) if ctype.startswith("application/json") else raw


def decode_png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def png_file(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_and_config(server):
    status, page = call(server, "GET", "/")
    assert status == 200 and b"<canvas id=\"mask-canvas\"" in page
    for name in ("app.js", "style.css"):
        assert call(server, "GET", f"/static/{name}")[0] == 200
    assert call(server, "GET", "/static/../app.py")[0] == 404  # whitelist, no traversal
    status, config = call(server, "GET", "/api/config")
    assert status == 200
    assert config["workers_available"] == 3 and config["model"] == "mobile_sam"
    assert config["plans"] == ["tinyvit-isolated"]  # ViT plans do not fit MobileSAM
    assert "astronaut" in config["samples"]


def test_upload_segment_and_worker_tiles(server, coffee):
    status, info = call(server, "POST", "/api/images", png_file(coffee), {"Content-Type": "image/png"})
    assert status == 200, info
    assert (info["height"], info["width"]) == coffee.shape[:2]
    status, shown = call(server, "GET", f"/api/images/{info['image_id']}.png")
    assert status == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(shown)).convert("RGB")), coffee)  # lossless round trip

    h, w = coffee.shape[:2]
    body = {"image_id": info["image_id"], "points": [[w // 2, h // 2, 1]], "workers": 3, "scheme": "interleaved", "halo": 16, "compare": True}
    status, result = call(server, "POST", "/api/segment", body)
    assert status == 200, result
    mask = decode_png(result["mask"])
    assert mask.shape[:2] == (h, w)
    drawn = mask[..., 3] > 0
    assert 0 < drawn.mean() < 1 and abs(drawn.mean() - result["mask_area"]) < 1e-6
    assert not result["cached"]
    # the monolithic comparison: its own mask, and the reported IoU is the IoU of the two drawn masks
    mono = decode_png(result["mono"]["mask"])[..., 3] > 0
    assert mono.shape == drawn.shape and mono.any()
    assert result["mono"]["iou"] == pytest.approx((drawn & mono).sum() / (drawn | mono).sum())

    grid = WindowGrid(coffee.shape[:2])
    workers = [t for t in result["tiles"] if t["kind"] == "worker"]
    assert len(workers) == 3
    seen: set[int] = set()
    for tile in workers:
        windows = set(tile["windows"])
        assert windows and not windows & seen  # disjoint window sets
        seen |= windows
        assert tile["bytes_sent"] > 0
        rgba = decode_png(tile["png"])
        opaque = rgba[..., 3] == 255
        # it shows some of the image, never all of it
        assert 0 < opaque.mean() < 0.9, tile["name"]
        assert tile["coverage"] == pytest.approx(grid.original_mask(windows, 16).mean())
    edge = next(t for t in result["tiles"] if t["kind"] == "edge")
    assert seen | set(edge["windows"]) >= set(grid.content_ids)
    assert set(result["run"]["workers"]) == {t["name"] for t in workers}

    # a new click on the same image and settings only runs the decoder
    body["points"].append([w // 4, h // 4, 0])
    status, again = call(server, "POST", "/api/segment", body)
    assert status == 200 and again["cached"]
    assert again["timings"]["encode_s"] == 0.0


def test_sample_and_errors(server):
    status, info = call(server, "POST", "/api/images/sample", {"name": "astronaut"})
    assert status == 200 and info["width"] == 512
    image_id = info["image_id"]

    status, error = call(server, "POST", "/api/images", b"GIF89a but not really", {"Content-Type": "image/gif"})
    assert status == 415 and "error" in error
    status, error = call(server, "POST", "/api/images", b"", {"Content-Type": "image/png"})
    assert status == 400 and "empty" in error["error"]
    status, error = call(server, "POST", "/api/images/sample", {"name": "../../etc/passwd"})
    assert status == 404
    # one worker may never hold the whole image; with edge compute forbidden this cannot be satisfied
    # (interleaved: under the default semantic scheme the face's windows would stay on the edge anyway)
    status, error = call(server, "POST", "/api/segment", {"image_id": image_id, "points": [[10, 10, 1]], "workers": 1,
                                                          "scheme": "interleaved", "allow_local": False})
    assert status == 422 and "impossible" in error["error"]
    status, error = call(server, "POST", "/api/segment", {"image_id": image_id, "points": [[10, 10, 1]], "workers": 4})
    assert status == 400 and "between 1 and 3" in error["error"]
    status, error = call(server, "POST", "/api/segment", {"image_id": image_id, "points": [[10, 10, 1]], "halo": 7})
    assert status == 400
    status, error = call(server, "POST", "/api/segment", {"image_id": "nope", "points": [[10, 10, 1]]})
    assert status == 404
    status, error = call(server, "POST", "/api/segment", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "JSON" in error["error"]
    status, error = call(server, "POST", "/api/segment", {"image_id": image_id})
    assert status == 400 and "point" in error["error"]
    status, error = call(server, "GET", "/api/nothing")
    assert status == 404 and "error" in error


def test_oversized_upload_is_refused_before_reading(server):
    request = urllib.request.Request(server.url + "/api/images", data=b"x", method="POST", headers={"Content-Length": str(50 * 1024 * 1024)})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413


def test_decompression_bomb_is_refused():
    # a tiny PNG that declares 9000 x 9000 pixels (> MAX_IMAGE_PIXELS)
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 1_000_000
    with pytest.raises(ApiError) as info:
        decode_image(buffer.getvalue())
    assert info.value.status == 413


def test_dp_epsilon_is_passed_only_when_set_and_supported(mobile_sam):
    app = DemoApp(mobile_sam, in_process_workers(mobile_sam, 2))
    try:
        with pytest.raises(ApiError) as info:
            app.parse_settings({"dp_epsilon": -1})
        assert info.value.status == 400
        plain = app._predictor(app.parse_settings({}))
        assert plain.engine.outgoing is None  # no noise unless asked for
        if not app.dp_supported:
            with pytest.raises(ApiError):
                app.parse_settings({"dp_epsilon": 2})
            return
        noisy = app._predictor(app.parse_settings({"dp_epsilon": 2}))
        assert noisy is not plain and noisy.engine.outgoing is not None  # noise hook on every window sent
    finally:
        app.close()


def test_fusion_is_on_by_default_and_can_be_turned_off(mobile_sam):
    app = DemoApp(mobile_sam, in_process_workers(mobile_sam, 2))
    try:
        default = app._predictor(app.parse_settings({"plan": "tinyvit-isolated"}))
        off = app._predictor(app.parse_settings({"plan": "tinyvit-isolated", "fusion": False}))
        assert off is not default  # a separate cache entry: embeddings differ
        assert default.plan.fusion is not None and off.plan.fusion is None
    finally:
        app.close()
