"""`pedvit demo`: a small web page to segment photos with the distributed predictor and see what each worker got.

Standard library HTTP server (`ThreadingHTTPServer`, no web framework): the demo serves one user on loopback,
and every model call is serialised behind one lock anyway. Nothing a client sends is written to disk: uploaded
images live in a small in-memory LRU and are decoded with Pillow under a pixel limit.

JSON API (errors are always ``{"error": message}`` with a 4xx/5xx status):

* ``GET  /api/config`` -> model, available workers, plans, schemes, halos, DP support, sample photos.
* ``POST /api/images`` (body: the raw image file, <= 20 MB) -> ``{"image_id", "width", "height"}``.
* ``POST /api/images/sample`` (``{"name": "astronaut"}``) -> same.
* ``GET  /api/images/<id>.png`` -> the decoded image (PNG), for display.
* ``POST /api/segment`` (``{"image_id", "points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | null, "plan",
  "scheme", "workers", "halo", "dp_epsilon", "allow_local", "fusion", "compare"}``) -> mask (PNG data URL), score, one
  tile per worker showing exactly the original pixels it received, the run record, timings, and (with
  ``compare``) the monolithic mask and its IoU with the distributed one.

The video tab (`pedvit.web.video`; clips are decoded from a transient private temporary file, see there):

* ``POST /api/clips`` (body: the raw video file, <= 20 MB, <= 60 frames, <= 1080p) or ``POST /api/clips/sample``
  (``{"name": "pan" | "static"}``) -> ``{"clip_id", "frames", "width", "height", "fps", "object_box"}``.
* ``GET  /api/clips/<id>/<i>.jpg`` -> frame i (JPEG), for display.
* ``POST /api/video`` (``{"clip_id", "points", "box", the split settings as above, "temporal": "sticky" | "naive",
  "coverage_cap": F | null, "reuse"}``) -> ``{"job_id", "total"}``: a background `VideoSession` run (409 while
  another runs).
* ``GET  /api/video/<job>?since=N`` -> state, progress, and frames N.. (mask PNG data URL, windows per worker,
  kept local / held back / reused, each worker's cumulative scene coverage); when done, one scene-coverage map
  per worker. ``POST /api/video/<job>/cancel`` stops it after the current frame.

The embedding is cached per (image, settings), so new clicks only run the prompt encoder and mask decoder.
`DemoApp` (here) holds the state and answers the API; `pedvit.web.server` serves it over HTTP, and
`pedvit.web.images` decodes uploads and encodes the pictures.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.engine import PrivacyConstraintError
from pedvit.edge.mask_tools import mask_iou
from pedvit.edge.predictor import SamPredictor
from pedvit.edge.video_session import TEMPORAL_POLICIES
from pedvit.models import Sam
from pedvit.partition import ConstraintError, WindowGrid
from pedvit.partition.schemes import SCHEMES
from pedvit.plans.plans import DEFAULT_PLAN_FOR_MODEL, PLANS, make_plan
from pedvit.privacy.views import view_tile

from .images import EDGE_COLOUR, MAX_UPLOAD_BYTES, WORKER_COLOURS, ApiError, data_url, decode_image, hex_colour, mask_rgba, png_bytes
from .video import DEFAULT_TEMPORAL, MAX_CLIP_FRAMES, SAMPLE_CLIPS, VideoTab

#: faces and text stay on the edge unless the user picks another scheme
DEFAULT_SCHEME = "semantic"

log = logging.getLogger(__name__)

SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "voc", "grace_hopper", "arc2017")
HALO_CHOICES = (0, 16, 32, 48, 64)
TILE_SIDE = 320


# ---------------------------------------------------------------------------------------------- the app
@dataclass
class Settings:
    """Everything that changes the image embedding (the embedding cache key, with the image id)."""

    plan: str
    scheme: str
    workers: int
    halo: int
    dp_epsilon: float | None
    allow_local: bool
    fusion: bool = True  # the trained edge fusion (tinyvit-isolated only; ignored by other plans)

    def key(self) -> tuple[Any, ...]:
        return (self.plan, self.scheme, self.workers, self.halo, self.dp_epsilon, self.allow_local, self.fusion)


@dataclass
class Encoded:
    """A cached image embedding plus what the page shows about how it was computed."""

    features: torch.Tensor  # 1 x 256 x 64 x 64
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    encode_s: float
    run: dict[str, Any] | None = None
    tiles: list[dict[str, Any]] = field(default_factory=list)


class DemoApp:
    """The demo's state and request handlers (HTTP-free, so tests can also call them directly).

    Args:
        model: the model the edge holds (the monolithic comparison and the decoder use it too).
        executors: the workers (`RemoteExecutor`s or `InProcessExecutor`s); the page may use the first n.
        on_close: called once by `close()` (e.g. stop local worker subprocesses).
        spot_check: probability that a worker answer gets one window recomputed on the edge
            (`pedvit.edge.verify.AnswerCheck`).
    """

    def __init__(self, model: Sam, executors: Sequence[Any], *, on_close: Callable[[], None] | None = None, max_images: int = 16, max_embeddings: int = 12,
                 spot_check: float = 0.0) -> None:
        if not executors:
            raise ValueError("the demo needs at least one worker")
        self.model = model.eval()
        self.executors = list(executors)
        self.on_close = on_close
        self.spot_check = spot_check
        self.lock = threading.Lock()  # one model call at a time (the predictors hold per-image state)
        self.decoder = SamPredictor(self.model)
        self.images: OrderedDict[str, np.ndarray] = OrderedDict()
        self.embeddings: OrderedDict[tuple[Any, ...], Encoded] = OrderedDict()
        self.predictors: dict[tuple[Any, ...], DistributedSamPredictor] = {}
        self.max_images = max_images
        self.max_embeddings = max_embeddings
        self.plans = [name for name, cls in PLANS.items() if self._plan_fits(name)]
        self.default_plan = DEFAULT_PLAN_FOR_MODEL.get(self.model.name, self.plans[0] if self.plans else "")
        self.dp_supported = self._dp_supported()
        self._samples: list[str] | None = None
        self.video = VideoTab(self.lock, self.parse_settings, self._predictor, self._prompts, self.api_error)

    # ------------------------------------------------------------------------------ configuration
    def _plan_fits(self, name: str) -> bool:
        try:
            make_plan(name).check_model(self.model)
        except (ValueError, TypeError):
            return False
        return True

    @staticmethod
    def _dp_supported() -> bool:
        """Does this build's `DistributedSamPredictor` take a `dp_epsilon` (differential-privacy noise)?"""
        return "dp_epsilon" in inspect.signature(DistributedSamPredictor.__init__).parameters

    def samples(self) -> list[str]:
        if self._samples is None:
            from pedvit.data import real_photos

            available = {p.name for p in real_photos(min_count=0, grayscale=False)}
            self._samples = [n for n in SAMPLE_PHOTOS if n in available]
        return self._samples

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "workers_available": len(self.executors),
            "worker_names": [getattr(e, "name", f"worker{i}") for i, e in enumerate(self.executors)],
            "plans": self.plans,
            "default_plan": self.default_plan,
            "schemes": list(SCHEMES),
            "default_scheme": DEFAULT_SCHEME,
            "halos": list(HALO_CHOICES),
            "dp_supported": self.dp_supported,
            "samples": self.samples(),
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "video": {"sample_clips": list(SAMPLE_CLIPS), "max_frames": MAX_CLIP_FRAMES,
                      "temporal_policies": list(TEMPORAL_POLICIES), "default_temporal": DEFAULT_TEMPORAL},
        }

    # ------------------------------------------------------------------------------------ images
    def _store(self, image: np.ndarray) -> dict[str, Any]:
        image_id = uuid.uuid4().hex
        with self.lock:
            self.images[image_id] = image
            while len(self.images) > self.max_images:
                old, _ = self.images.popitem(last=False)
                for key in [k for k in self.embeddings if k[0] == old]:
                    del self.embeddings[key]
        return {"image_id": image_id, "width": int(image.shape[1]), "height": int(image.shape[0])}

    def add_upload(self, data: bytes) -> dict[str, Any]:
        return self._store(decode_image(data))

    def add_sample(self, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or name not in self.samples():
            raise ApiError(404, f"unknown sample photo {name!r}; choose one of {', '.join(self.samples())}")
        from pedvit.data import real_photos

        return self._store(real_photos(min_count=0, names=[name])[0].image)

    def image(self, image_id: str) -> np.ndarray:
        try:
            return self.images[image_id]
        except KeyError:
            raise ApiError(404, "unknown image (the demo keeps only the last few in memory): upload it again") from None

    # ------------------------------------------------------------------------------------ segment
    def parse_settings(self, body: dict[str, Any]) -> Settings:
        plan = body.get("plan") or self.default_plan
        if plan not in self.plans:
            raise ApiError(400, f"plan {plan!r} does not fit model {self.model.name}; choose one of {', '.join(self.plans)}")
        scheme = body.get("scheme") or DEFAULT_SCHEME
        if scheme not in SCHEMES:
            raise ApiError(400, f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        try:
            n = int(body.get("workers") or len(self.executors))
            halo = int(body.get("halo") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "workers and halo must be integers") from None
        if not 1 <= n <= len(self.executors):
            raise ApiError(400, f"workers must be between 1 and {len(self.executors)} (the workers available), got {n}")
        if halo not in HALO_CHOICES:
            raise ApiError(400, f"halo must be one of {HALO_CHOICES} px, got {halo}")
        if halo and plan != "tinyvit-isolated":
            raise ApiError(400, f"plan {plan!r} takes no halo")
        eps = body.get("dp_epsilon")
        if eps in ("", None):
            eps = None
        else:
            try:
                eps = float(eps)
            except (TypeError, ValueError):
                raise ApiError(400, f"dp_epsilon must be a positive number, got {eps!r}") from None
            if not eps > 0 or not np.isfinite(eps):
                raise ApiError(400, f"dp_epsilon must be a positive number, got {eps}")
            if not self.dp_supported:
                raise ApiError(400, "this build has no differential-privacy noise (DistributedSamPredictor takes no dp_epsilon)")
        return Settings(plan, scheme, n, halo, eps, bool(body.get("allow_local", True)), bool(body.get("fusion", True)))

    def _predictor(self, s: Settings) -> DistributedSamPredictor:
        key = s.key()
        if key not in self.predictors:
            options: dict[str, Any] = {"allow_local": s.allow_local, "fusion": "auto" if s.fusion else "off",
                                       "spot_check": self.spot_check}
            if s.dp_epsilon is not None:
                options["dp_epsilon"] = s.dp_epsilon
            self.predictors[key] = DistributedSamPredictor(
                self.model, self.executors[: s.workers], plan=s.plan, scheme=s.scheme, halo_px=s.halo, **options
            )
        return self.predictors[key]

    @staticmethod
    def api_error(error: Exception) -> ApiError:
        """The page's error for an exception from an encode (`set_image`, a video frame)."""
        if isinstance(error, ApiError):
            return error
        if isinstance(error, ConstraintError):
            return ApiError(422, f"impossible privacy settings: {error}")
        if isinstance(error, PrivacyConstraintError):
            return ApiError(503, f"a worker is down and its windows cannot move within the privacy constraints: {error}")
        name = type(error).__name__
        if "Constraint" in name:
            return ApiError(422, f"impossible privacy settings: {error}")
        if isinstance(error, (ValueError, TypeError)):
            return ApiError(400, f"{name}: {error}")
        log.error("encode failed", exc_info=error)
        return ApiError(503, f"the workers could not compute the embedding ({name}: {error}); is a worker down?")

    def _encode(self, image_id: str, s: Settings) -> tuple[Encoded, bool]:
        """The cached (or freshly computed) distributed embedding; second value: was it cached."""
        key = (image_id, *s.key())
        if key in self.embeddings:
            self.embeddings.move_to_end(key)
            return self.embeddings[key], True
        image = self.image(image_id)
        predictor = self._predictor(s)
        started = time.perf_counter()
        try:
            predictor.set_image(image)
        except Exception as error:  # noqa: BLE001 - worker failures the engine could not route around
            raise self.api_error(error) from None
        encoded = Encoded(predictor.features, predictor.original_size, predictor.input_size, time.perf_counter() - started)  # type: ignore[arg-type]
        engine = predictor.engine
        if engine.last_run is not None and engine.last_grid is not None:
            encoded.run = self._run_summary(engine.last_run.to_dict(engine.last_grid))
            encoded.tiles = self._tiles(image, engine.last_grid, engine.last_run, s.halo)
        self.embeddings[key] = encoded
        while len(self.embeddings) > self.max_embeddings:
            self.embeddings.popitem(last=False)
        return encoded, False

    def _monolithic(self, image_id: str) -> Encoded:
        key = (image_id, "monolithic")
        if key not in self.embeddings:
            image = self.image(image_id)
            started = time.perf_counter()
            self.decoder.set_image(image)
            self.embeddings[key] = Encoded(self.decoder.features, self.decoder.original_size, self.decoder.input_size, time.perf_counter() - started)  # type: ignore[arg-type]
        return self.embeddings[key]

    @staticmethod
    def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
        keep = ("request_id", "plan", "scheme", "image_size", "content_windows", "keep_local", "max_windows_per_worker", "adjacency",
                "assignment", "local_windows", "failovers", "timings", "edge_compute_s", "rounds", "wire_dtype", "halo_px", "notes", "adjacent_pairs")
        out = {k: run[k] for k in keep if k in run}
        out["workers"] = {
            name: {k: w[k] for k in ("windows", "calls", "bytes_sent", "bytes_received", "wall_s", "compute_s", "failed", "errors")}
            for name, w in run["workers"].items()
        }
        return out

    def _tiles(self, image: np.ndarray, grid: WindowGrid, run: Any, halo: int) -> list[dict[str, Any]]:
        local = sorted(set(run.local_windows) | set(run.keep_local))
        tiles = []
        for i, (name, worker) in enumerate(run.workers.items()):
            windows = sorted(worker.windows)
            colour = WORKER_COLOURS[i % len(WORKER_COLOURS)]
            rgba, coverage = view_tile(image, grid, windows, halo, colour, marked=local, marked_colour=EDGE_COLOUR, side=TILE_SIDE)
            tiles.append({
                "name": name, "kind": "worker", "colour": hex_colour(colour), "windows": windows, "coverage": coverage,
                "bytes_sent": worker.bytes_sent, "bytes_received": worker.bytes_received, "wall_s": worker.wall_s,
                "compute_s": worker.compute_s, "failed": worker.failed, "errors": worker.errors, "png": data_url(png_bytes(rgba)),
            })
        # The edge's own windows (sensitive keep-local windows, failovers, leftovers) never leave this machine.
        rgba, coverage = view_tile(image, grid, local, 0, EDGE_COLOUR, side=TILE_SIDE)
        tiles.append({
            "name": "edge (local)", "kind": "edge", "colour": hex_colour(EDGE_COLOUR), "windows": local, "coverage": coverage,
            "keep_local": sorted(run.keep_local), "bytes_sent": 0, "bytes_received": 0, "wall_s": run.edge_compute_s,
            "compute_s": run.edge_compute_s, "failed": False, "errors": [], "png": data_url(png_bytes(rgba)),
        })
        return tiles

    def _decode(self, encoded: Encoded, points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None) -> tuple[np.ndarray, float]:
        d = self.decoder
        d.features, d.original_size, d.input_size, d.is_image_set = encoded.features, encoded.original_size, encoded.input_size, True
        # SAM convention: one point is ambiguous (ask for 3 masks, keep the best); more prompts are not.
        multi = box is None and points is not None and len(points) == 1
        masks, scores, _ = d.predict(points, labels, box, multimask_output=multi)
        best = int(np.argmax(scores))
        return masks[best], float(scores[best])

    @staticmethod
    def _prompts(body: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        raw_points = body.get("points") or []
        try:
            pts = np.asarray(raw_points, dtype=np.float64).reshape(-1, 3) if raw_points else None
            box = np.asarray(body["box"], dtype=np.float64).reshape(4) if body.get("box") is not None else None
        except (TypeError, ValueError):
            raise ApiError(400, "points must be [[x, y, label], ...] and box [x0, y0, x1, y1]") from None
        if pts is None and box is None:
            raise ApiError(400, "give at least one point or a box")
        points = pts[:, :2] if pts is not None else None
        labels = pts[:, 2].astype(np.int64) if pts is not None else None
        return points, labels, box

    def segment(self, body: dict[str, Any]) -> dict[str, Any]:
        image_id = body.get("image_id")
        if not isinstance(image_id, str):
            raise ApiError(400, "image_id missing: upload or pick an image first")
        settings = self.parse_settings(body)
        points, labels, box = self._prompts(body)
        with self.lock:
            self.image(image_id)
            encoded, cached = self._encode(image_id, settings)
            started = time.perf_counter()
            try:
                mask, score = self._decode(encoded, points, labels, box)
            except ValueError as error:
                raise ApiError(400, str(error)) from None
            decode_s = time.perf_counter() - started
            result: dict[str, Any] = {
                "mask": data_url(png_bytes(mask_rgba(mask, (30, 144, 255)))),
                "score": score,
                "mask_area": float(mask.mean()),
                "cached": cached,
                "timings": {"encode_s": 0.0 if cached else encoded.encode_s, "first_encode_s": encoded.encode_s, "decode_s": decode_s},
                "run": encoded.run,
                "tiles": encoded.tiles,
                "settings": settings.__dict__,
            }
            if body.get("compare"):
                mono = self._monolithic(image_id)
                mono_mask, mono_score = self._decode(mono, points, labels, box)
                result["mono"] = {"mask": data_url(png_bytes(mask_rgba(mono_mask, (255, 200, 0)))), "score": mono_score, "encode_s": mono.encode_s,
                                  "iou": mask_iou(mask, mono_mask)}
        return result

    def close(self) -> None:
        self.video.close()  # its runs use the predictors
        for predictor in self.predictors.values():
            predictor.close(executors=False)  # the executors are shared between predictors: closed below, once
        self.predictors.clear()
        for executor in self.executors:
            close = getattr(executor, "close", None)
            if close is not None:
                close()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None
