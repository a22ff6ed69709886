"""The demo's video tab: short clips, background `VideoSession` runs the page polls, and their playback data.

A clip is uploaded as the raw file body (<= 20 MB, like images) or generated (`pedvit.video.clips`: the
camera pan or the static camera with the pasted disc). OpenCV can only decode a video from a file, so an
upload is written to a temporary file in a private directory (``tempfile.TemporaryDirectory``: mode 0700),
decoded at once, and the directory is deleted before the request returns: the demo keeps no clip on disk,
only the decoded frames in a small in-memory LRU. At most `MAX_CLIP_FRAMES` frames and
`MAX_CLIP_FRAME_PIXELS` pixels per frame are decoded (more: 413); frames are scaled down to
`FRAME_LONG_SIDE` px on their long side, which bounds memory and the playback payloads.

A run (`VideoTab.start`) follows the object prompted on the first frame through the clip with a
`pedvit.edge.video_session.VideoSession` on the demo's current split settings plus the temporal ones
(policy, coverage cap, reuse), in a background thread: one frame at a time behind the demo's model lock, so
the image tab stays usable and a run can be cancelled between frames. `VideoTab.job` answers the page's
polls: progress, and the frames done since the page's last poll (mask PNG, windows per worker, kept local /
held back / reused, each worker's cumulative scene coverage); at the end one scene-coverage map per worker
(the clip's scene mosaic, bright where that worker has seen it).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.video_session import TEMPORAL_POLICIES, FrameRecord, VideoSession
from pedvit.video import SceneCoverage, pan_clip, static_clip, window_frame_boxes

from .images import MAX_UPLOAD_BYTES, ApiError, data_url, mask_rgba, png_bytes, worker_colour

#: (points N x 2 | None, labels N | None, box 4 | None) of a request body
Prompts = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]

log = logging.getLogger(__name__)

MAX_CLIP_FRAMES = 60
#: decode guard: a frame may have at most this many pixels (1080p); bigger clips are refused before decoding
MAX_CLIP_FRAME_PIXELS = 1920 * 1080
#: frames are scaled down to this long side (the model resizes to 1024 px anyway; playback stays small)
FRAME_LONG_SIDE = 640
SAMPLE_CLIPS = ("pan", "static")
DEFAULT_TEMPORAL = "sticky"
SAMPLE_FRAMES = 40
MAX_CLIPS = 4
MAX_JOBS = 8
COVERAGE_MAP_SIDE = 320
MASK_COLOUR = (30, 144, 255)


@dataclass
class StoredClip:
    """Decoded clip frames (T x H x W x 3 uint8 RGB) and what the page needs to show them."""

    frames: np.ndarray
    name: str
    fps: float
    object_box: list[int] | None = None  # generated clips: the known object's box in frame 0 (x0, y0, x1, y1)

    def info(self, clip_id: str) -> dict[str, Any]:
        t, h, w = self.frames.shape[:3]
        return {"clip_id": clip_id, "name": self.name, "frames": int(t), "width": int(w), "height": int(h),
                "fps": self.fps, "object_box": self.object_box}


@dataclass
class VideoJob:
    """One background run over a clip: its state, the frames done so far (page payloads), the end's maps."""

    job_id: str
    clip_id: str
    total: int
    settings: dict[str, Any]
    state: str = "queued"  # queued -> running -> done | failed | cancelled
    error: str | None = None
    workers: list[dict[str, str]] = field(default_factory=list)  # name, colour
    windows: dict[int, list[int]] = field(default_factory=dict)  # window id -> frame box x0, y0, x1, y1
    frames: list[dict[str, Any]] = field(default_factory=list)
    coverage_maps: list[dict[str, Any]] = field(default_factory=list)
    max_worker_scene_coverage: float = 0.0
    seconds: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def snapshot(self, since: int) -> dict[str, Any]:
        """The page's poll answer: progress and the frames from index `since` on."""
        return {"job_id": self.job_id, "clip_id": self.clip_id, "state": self.state, "error": self.error,
                "done": len(self.frames), "total": self.total, "settings": self.settings, "workers": self.workers,
                "windows": {str(k): v for k, v in self.windows.items()}, "since": since, "frames": self.frames[since:],
                "max_worker_scene_coverage": self.max_worker_scene_coverage, "seconds": self.seconds,
                "coverage_maps": self.coverage_maps if self.finished else []}


# ---------------------------------------------------------------------------------------------- clips
def _scaled(frame: np.ndarray) -> np.ndarray:
    """H x W x 3 frame scaled down (never up) so that its long side is at most `FRAME_LONG_SIDE`."""
    h, w = frame.shape[:2]
    scale = FRAME_LONG_SIDE / max(h, w)
    if scale >= 1:
        return frame
    return cv2.resize(frame, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)


def decode_clip(data: bytes) -> tuple[np.ndarray, float]:
    """(T x H x W x 3 uint8 RGB frames, frames per second) of an uploaded video file.

    The bytes go to a temporary file in a private directory that is deleted before this returns (OpenCV
    decodes files only). Raises ApiError: 400 empty / no frames / frames of changing size, 413 too many
    bytes, frames or pixels, 415 not a video OpenCV can decode.
    """
    if not data:
        raise ApiError(400, "empty upload: choose a video file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"clip too large ({len(data)} bytes); the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    frames: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="pedvit-clip-") as private:
        path = Path(private) / "upload"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened():
                raise ApiError(415, "not a video OpenCV can decode (try MP4, WebM or AVI)")
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            declared = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) * int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if declared > MAX_CLIP_FRAME_PIXELS:
                raise ApiError(413, f"clip frames too large ({declared:,} pixels); the limit is {MAX_CLIP_FRAME_PIXELS:,} (1080p)")
            first_shape: tuple[int, ...] | None = None
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if len(frames) == MAX_CLIP_FRAMES:
                    raise ApiError(413, f"clip too long: more than {MAX_CLIP_FRAMES} frames; trim it to at most {MAX_CLIP_FRAMES}")
                if frame.shape[0] * frame.shape[1] > MAX_CLIP_FRAME_PIXELS:
                    raise ApiError(413, f"clip frames too large ({frame.shape[1]} x {frame.shape[0]}); the limit is 1080p")
                first_shape = first_shape or frame.shape
                if frame.shape != first_shape:
                    raise ApiError(400, f"frame {len(frames)} is {frame.shape[1]} x {frame.shape[0]}, the clip began at "
                                        f"{first_shape[1]} x {first_shape[0]}")
                frames.append(_scaled(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
        finally:
            capture.release()
    if not frames:
        raise ApiError(400, "the clip has no frames OpenCV can decode")
    if min(frames[0].shape[:2]) < 16:
        raise ApiError(400, f"clip frames too small: {frames[0].shape[1]} x {frames[0].shape[0]} px")
    return np.stack(frames), fps if 0 < fps <= 240 else 10.0


def sample_clip(name: str) -> StoredClip:
    """A small generated clip (`SAMPLE_FRAMES` frames of 240 x 320) with the pasted disc's box in frame 0."""
    if name == "pan":
        # the first 40 frames of a 200-frame pan over the 768 px scene: one sweep down, half-way across
        clip = pan_clip(200, (240, 320), scale=1.5, radius=36)
    elif name == "static":
        clip = static_clip(SAMPLE_FRAMES, (240, 320), radius=36)
    else:
        raise ApiError(404, f"unknown sample clip {name!r}; choose one of {', '.join(SAMPLE_CLIPS)}")
    frames = clip.frames[:SAMPLE_FRAMES]
    ys, xs = np.nonzero(clip.object_masks[0])
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return StoredClip(np.ascontiguousarray(frames), name, 10.0, box)


def jpeg_bytes(frame: np.ndarray, quality: int = 85) -> bytes:
    """H x W x 3 uint8 RGB -> JPEG file bytes."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ApiError(500, "could not encode the frame as JPEG")
    return encoded.tobytes()


# ---------------------------------------------------------------------------------------------- coverage maps
def coverage_maps(frames: np.ndarray, records: list[FrameRecord], coverage: SceneCoverage) -> list[np.ndarray]:
    """One h x w x 4 uint8 picture per worker: the scene mosaic (frames pasted at their estimated offsets),
    at full strength where the worker has seen it and dimmed elsewhere, transparent outside the scene;
    scaled so that its long side is at most `COVERAGE_MAP_SIDE`."""
    seen, (oy, ox) = coverage.seen_map(0)
    h, w = seen.shape
    mosaic = np.zeros((h, w, 3), dtype=np.uint8)
    in_scene = np.zeros((h, w), dtype=bool)
    fh, fw = frames.shape[1:3]
    for record in records:
        dy, dx = int(round(record.offset[0])) - oy, int(round(record.offset[1])) - ox
        y0, x0, y1, x1 = max(0, dy), max(0, dx), min(h, dy + fh), min(w, dx + fw)
        if y0 < y1 and x0 < x1:
            mosaic[y0:y1, x0:x1] = frames[record.index][y0 - dy: y1 - dy, x0 - dx: x1 - dx]
            in_scene[y0:y1, x0:x1] = True
    rows, cols = np.nonzero(in_scene)
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)) if rows.size else (slice(0, 1), slice(0, 1))
    pictures = []
    dimmed = (mosaic * 0.25).astype(np.uint8)
    for worker in range(coverage.n_workers):
        worker_seen = coverage.seen_map(worker)[0]
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        rgba[..., :3] = np.where(worker_seen[..., None], mosaic, dimmed)
        rgba[..., 3] = np.where(in_scene, 255, 0)
        picture = rgba[crop]
        scale = COVERAGE_MAP_SIDE / max(picture.shape[:2])
        if scale < 1:
            size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))
            picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        pictures.append(picture)
    return pictures


# ---------------------------------------------------------------------------------------------- the tab
class VideoTab:
    """Clips and background runs of the demo's video tab (HTTP-free; `DemoApp.video`).

    What it shares with the image tab (`DemoApp` passes its own):

    Args:
        lock: the model lock (one model call at a time).
        parse_settings: request body -> the split settings (ApiError for bad ones).
        predictor: settings -> the cached `DistributedSamPredictor` for them.
        parse_prompts: request body -> its points, labels and box (ApiError for bad ones).
        api_error: an exception from an encode -> the page's ApiError.
    """

    def __init__(self, lock: threading.Lock, parse_settings: Callable[[dict[str, Any]], Any],
                 predictor: Callable[[Any], DistributedSamPredictor], parse_prompts: Callable[[dict[str, Any]], Prompts],
                 api_error: Callable[[Exception], ApiError]) -> None:
        self.lock = lock
        self.parse_settings, self.predictor, self.parse_prompts, self.api_error = parse_settings, predictor, parse_prompts, api_error
        self.clips: OrderedDict[str, StoredClip] = OrderedDict()
        self.jobs: OrderedDict[str, VideoJob] = OrderedDict()
        self._state_lock = threading.Lock()  # clips and jobs (the model lock is held for whole frames)

    # ------------------------------------------------------------------------------------ clips
    def _store(self, clip: StoredClip) -> dict[str, Any]:
        clip_id = uuid.uuid4().hex
        with self._state_lock:
            self.clips[clip_id] = clip
            while len(self.clips) > MAX_CLIPS:
                self.clips.popitem(last=False)  # a running job keeps its own reference to the frames
        return clip.info(clip_id)

    def add_upload(self, data: bytes) -> dict[str, Any]:
        frames, fps = decode_clip(data)
        return self._store(StoredClip(frames, "upload", fps))

    def add_sample(self, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or name not in SAMPLE_CLIPS:
            raise ApiError(404, f"unknown sample clip {name!r}; choose one of {', '.join(SAMPLE_CLIPS)}")
        return self._store(sample_clip(name))

    def clip(self, clip_id: str) -> StoredClip:
        try:
            return self.clips[clip_id]
        except KeyError:
            raise ApiError(404, "unknown clip (the demo keeps only the last few in memory): upload it again") from None

    def frame_jpeg(self, clip_id: str, index: str) -> bytes:
        frames = self.clip(clip_id).frames
        if not index.isdigit() or not int(index) < len(frames):
            raise ApiError(404, f"no frame {index!r} in this clip of {len(frames)} frames")
        return jpeg_bytes(frames[int(index)])

    # ------------------------------------------------------------------------------------ runs
    @staticmethod
    def _temporal(body: dict[str, Any]) -> tuple[str, float | None, bool]:
        temporal = body.get("temporal") or DEFAULT_TEMPORAL
        if temporal not in TEMPORAL_POLICIES:
            raise ApiError(400, f"temporal must be one of {', '.join(TEMPORAL_POLICIES)}, got {temporal!r}")
        cap = body.get("coverage_cap")
        if cap in ("", None):
            cap = None
        else:
            try:
                cap = float(cap)
            except (TypeError, ValueError):
                raise ApiError(400, f"coverage_cap must be a number in (0, 1], got {cap!r}") from None
            if not 0 < cap <= 1:
                raise ApiError(400, f"coverage_cap must be in (0, 1], got {cap}")
            if temporal != "sticky":
                raise ApiError(400, "a coverage cap needs the sticky temporal policy")
        return temporal, cap, bool(body.get("reuse", True))

    @staticmethod
    def _check_inside(points: np.ndarray | None, box: np.ndarray | None, width: int, height: int) -> None:
        corners = [box.reshape(2, 2)] if box is not None else []
        for x, y in np.concatenate(corners + ([points] if points is not None else [])):
            if not (np.isfinite([x, y]).all() and 0 <= x <= width and 0 <= y <= height):
                raise ApiError(400, f"prompt point ({x:g}, {y:g}) lies outside the {width} x {height} first frame")

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a run over a clip (``{"clip_id", "points" | "box", split settings, "temporal", "coverage_cap",
        "reuse"}``); its job id. One run at a time (409 while another runs)."""
        clip_id = body.get("clip_id")
        if not isinstance(clip_id, str):
            raise ApiError(400, "clip_id missing: upload or pick a clip first")
        clip = self.clip(clip_id)
        settings = self.parse_settings(body)
        temporal, cap, reuse = self._temporal(body)
        points, labels, box = self.parse_prompts(body)
        height, width = clip.frames.shape[1:3]
        self._check_inside(points, box, width, height)
        with self._state_lock:
            running = [j for j in self.jobs.values() if not j.finished]
            if running:
                raise ApiError(409, f"a video run is in progress ({len(running[0].frames)} of {running[0].total} frames): "
                                    "wait for it or cancel it")
            job = VideoJob(uuid.uuid4().hex, clip_id, len(clip.frames),
                           {**settings.__dict__, "temporal": temporal, "coverage_cap": cap, "reuse": reuse})
            self.jobs[job.job_id] = job
            while len(self.jobs) > MAX_JOBS and next(iter(self.jobs.values())).finished:
                self.jobs.popitem(last=False)
        prompt = {"points": points, "labels": labels, "box": box}
        job.thread = threading.Thread(target=self._run, args=(job, clip.frames, settings, prompt), name=f"pedvit-video-{job.job_id[:8]}",
                                      daemon=True)
        job.thread.start()
        return {"job_id": job.job_id, "total": job.total}

    def job(self, job_id: str, since: str | None = None) -> dict[str, Any]:
        """A job's progress and its frames from ``since`` on (the page passes how many it already has)."""
        try:
            job = self.jobs[job_id]
        except KeyError:
            raise ApiError(404, "unknown video job (the demo keeps only the last few)") from None
        try:
            start = int(since or 0)
        except ValueError:
            raise ApiError(400, f"since must be a frame count, got {since!r}") from None
        return job.snapshot(max(0, start))

    def cancel(self, job_id: str) -> dict[str, Any]:
        snapshot = self.job(job_id, str(10**9))  # no frames, just the state
        self.jobs[job_id].cancel.set()
        return {"job_id": job_id, "state": snapshot["state"], "cancelling": not self.jobs[job_id].finished}

    def _run(self, job: VideoJob, frames: np.ndarray, settings: Any, prompt: dict[str, Any]) -> None:
        """The background thread: one `VideoSession` frame at a time behind the model lock."""
        started = time.perf_counter()
        job.state = "running"
        try:
            with self.lock:
                predictor = self.predictor(settings)
            session = VideoSession(predictor, points=prompt["points"], labels=prompt["labels"], box=prompt["box"],
                                   temporal=job.settings["temporal"], coverage_cap=job.settings["coverage_cap"],
                                   reuse=job.settings["reuse"])
            job.workers = [{"name": name, "colour": worker_colour(i)} for i, name in enumerate(session.worker_names)]
            for frame in frames:
                if job.cancel.is_set():
                    job.state = "cancelled"
                    return
                with self.lock:
                    try:
                        mask, record = session.add_frame(frame)
                    except Exception as error:  # noqa: BLE001 - mapped to the page's message, as the image tab does
                        raise self.api_error(error) from None
                    if not job.windows and predictor.engine.last_grid is not None:
                        job.windows = {wid: [x0, y0, x1, y1] for wid, (y0, x0, y1, x1)
                                       in window_frame_boxes(predictor.engine.last_grid).items()}
                    coverages = session.coverage.coverages() if session.worker_names else []
                payload = asdict(record)
                payload.update(mask=data_url(png_bytes(mask_rgba(mask, MASK_COLOUR))), coverage=coverages)
                job.frames.append(payload)
                job.max_worker_scene_coverage = session.max_worker_scene_coverage
            if session.worker_names:
                maps = coverage_maps(frames, session.records, session.coverage)
                job.coverage_maps = [{**worker, "coverage": c, "png": data_url(png_bytes(picture))}
                                     for worker, c, picture in zip(job.workers, session.coverage.coverages(), maps)]
            job.state = "done"
        except ApiError as error:
            job.error, job.state = error.message, "failed"
        except Exception as error:  # noqa: BLE001 - the page must get the message, the thread must not die silently
            log.exception("video run failed")
            job.error, job.state = f"{type(error).__name__}: {error}", "failed"
        finally:
            job.seconds = time.perf_counter() - started

    def close(self) -> None:
        """Cancel every run and wait for it (before the demo closes its predictors)."""
        for job in list(self.jobs.values()):
            job.cancel.set()
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join(timeout=120)
