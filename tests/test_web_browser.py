"""End to end: headless Chromium loads the demo page, uploads a real photo, clicks a point, and sees the mask
and the worker tiles drawn (Playwright driving Debian's /usr/bin/chromium; see
scripts/install_browser_test_deps.sh). Screenshot: artifacts/web_demo.png."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pedvit.edge.build import in_process_workers
from pedvit.web.app import DemoApp
from pedvit.web.server import DemoServer

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = os.environ.get("PEDVIT_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright missing: run scripts/install_browser_test_deps.sh")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not installed at {CHROMIUM}: run scripts/install_browser_test_deps.sh")
    profile = tempfile.mkdtemp(prefix="pedvit-chromium-")
    with sync_api.sync_playwright() as p:
        try:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS, viewport={"width": 1440, "height": 900},
                bypass_csp=True,  # the page's CSP forbids eval, which Playwright's wait_for_function uses
            )
        except Exception as error:  # noqa: BLE001 - e.g. missing shared libraries in a bare container
            shutil.rmtree(profile, ignore_errors=True)
            pytest.skip(f"Chromium could not be launched: {error}")
        try:
            yield context.new_page()
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(mobile_sam):
    srv = DemoServer(DemoApp(mobile_sam, in_process_workers(mobile_sam, 3)), "127.0.0.1", 0)
    srv.serve_in_thread()
    yield srv
    srv.close()


def canvas_alpha(page, selector: str) -> np.ndarray:
    """Alpha channel (H x W uint8) of a canvas on the page."""
    data = page.evaluate(
        """(sel) => { const c = document.querySelector(sel); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        const a = new Array(c.width * c.height); for (let i = 0; i < a.length; i++) a[i] = d.data[4 * i + 3];
        return {w: c.width, h: c.height, a}; }""",
        selector,
    )
    return np.asarray(data["a"], dtype=np.uint8).reshape(data["h"], data["w"])


def test_upload_click_mask_and_tiles(browser_page, server, astronaut, tmp_path):
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("#samples button")  # config loaded
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    page.set_input_files("#file", str(photo))
    page.wait_for_function("document.getElementById('image-canvas').width === 512")
    assert page.locator("#error").is_hidden()

    # click the astronaut's helmet (x=250, y=80 in image pixels), scaled to the displayed canvas
    box = page.locator("#prompt-canvas").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 250 * box["width"] / 512, box["y"] + 80 * box["height"] / 512)
    page.wait_for_function("document.body.dataset.segmented !== undefined", timeout=120_000)
    page.wait_for_function("[...document.querySelectorAll('.tile canvas')].every(c => c.dataset.drawn === '1')")
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()

    mask = canvas_alpha(page, "#mask-canvas")
    assert mask.shape == (512, 512)
    assert 0 < (mask > 0).mean() < 0.9  # an overlay is drawn, and it is not the whole picture
    assert mask[80, 250] > 0  # the clicked point is inside the mask

    tiles = page.locator(".tile-worker canvas")
    assert tiles.count() == 3
    for i in range(tiles.count()):
        alpha = canvas_alpha(page, f".tile-worker:nth-of-type({i + 1}) canvas")
        opaque = alpha == 255
        assert 0 < opaque.mean() < 0.9  # each worker got some pixels, never the whole image
    assert not errors, errors

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_demo.png"), full_page=True)


def test_right_click_has_no_context_menu_and_errors_show(browser_page, server):
    page = browser_page
    page.goto(server.url + "/")
    page.wait_for_selector("#samples button")
    page.click("#samples button[data-sample='coffee']")
    page.wait_for_function("document.getElementById('image-canvas').width === 600")
    # ask for something impossible: one worker, edge compute forbidden -> the page shows the server's error
    page.select_option("#workers", "1")
    page.uncheck("#allow-local")
    prevented = page.evaluate(
        """() => { const c = document.getElementById('prompt-canvas');
        const e = new MouseEvent('contextmenu', {bubbles: true, cancelable: true}); c.dispatchEvent(e); return e.defaultPrevented; }"""
    )
    assert prevented
    box = page.locator("#prompt-canvas").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    assert "impossible" in page.locator("#error").inner_text()


def test_video_tab_upload_box_run_and_playback(browser_page, server, tmp_path):
    from test_web_video import object_box, video_bytes

    from pedvit.video import pan_clip

    clip = pan_clip(200, (240, 320), scale=1.5, radius=36)
    frames = 4
    video_bytes(clip.frames[:frames], tmp_path / "clip.mp4")
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("#clip-samples button", state="attached")  # config loaded (the tab is hidden yet)
    page.click("#tab-video")
    assert page.locator("#canvas-wrap").is_hidden() and page.locator("#video-wrap").is_visible()
    page.set_input_files("#clip-file", str(tmp_path / "clip.mp4"))
    page.wait_for_function("document.getElementById('video-frame').width === 320")
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()

    # drag a box around the disc on the first frame (image pixels scaled to the displayed canvas)
    x0, y0, x1, y1 = object_box(clip.object_masks[0])
    box = page.locator("#video-prompt").bounding_box()
    sx, sy = box["width"] / 320, box["height"] / 240
    page.mouse.move(box["x"] + (x0 - 6) * sx, box["y"] + (y0 - 6) * sy)
    page.mouse.down()
    page.mouse.move(box["x"] + (x0 + x1) / 2 * sx, box["y"] + (y0 + y1) / 2 * sy, steps=4)
    page.mouse.move(box["x"] + (x1 + 6) * sx, box["y"] + (y1 + 6) * sy, steps=4)
    page.mouse.up()
    page.fill("#cap", "0.4")
    page.click("#video-run")
    page.wait_for_function("document.body.dataset.videoState !== undefined", timeout=300_000)
    assert page.evaluate("document.body.dataset.videoState") == "done", page.locator("#error").inner_text()
    assert page.locator("#error").is_hidden()

    assert page.get_attribute("#video-slider", "max") == str(frames - 1)
    page.wait_for_function(f"document.body.dataset.videoFrame === '{frames - 1}'")  # it followed the run to the end
    mask = canvas_alpha(page, "#video-mask") > 0
    truth = clip.object_masks[frames - 1]
    assert (mask & truth).sum() / (mask | truth).sum() > 0.8  # the last frame's mask is drawn over the disc
    assert (canvas_alpha(page, "#video-windows") > 0).mean() > 0.05  # its windows are outlined
    assert page.locator(".worker-row .bar").count() == 3  # one coverage bar per worker, with the cap marked
    assert page.locator(".worker-row .bar .cap").count() == 3
    assert page.locator("#coverage-maps img").count() == 3
    assert "max worker scene coverage" in page.locator("#video-result").inner_text()

    page.fill("#video-slider", "0")  # scrub back to the first frame: its prompt box shows again
    page.wait_for_function("document.body.dataset.videoFrame === '0'")
    assert (canvas_alpha(page, "#video-prompt") > 0).any()
    page.click("#video-play")
    page.wait_for_function(f"document.body.dataset.videoFrame === '{frames - 1}'", timeout=30_000)
    assert not errors, errors

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_demo_video.png"), full_page=True)
