"""`pedvit video INPUT`: segment and follow one object through a video, with temporal privacy.

    pedvit video clip.mp4 --box 350,180,470,300 --local 4 --temporal sticky --coverage-cap 0.3 \\
        --out masks/ --json video.json --overlay overlay.mp4 --ledger ledger.jsonl
    pedvit video frames/ --point 410,240 --monolithic --out masks/      # a folder of frames (sorted by name)

INPUT is a video file (read with OpenCV) or a folder of frames. The prompt applies to the first frame; later
frames are prompted from the previous mask (`pedvit.edge.video_session`). Writes one mask PNG per frame to
--out (``frame_00000.png``, numbered by input frame), and with --json the per-frame records and
``max_worker_scene_coverage``. An unreadable input or one without frames exits with code 2 before anything
is computed or sent; a frame of another size than the first is reported and skipped (its mask is not
written, the ledger gets no record for it); a lost object is re-prompted and recorded (``lost``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from pedvit.edge.cluster import ClusterError
from pedvit.edge.engine import PrivacyConstraintError
from pedvit.edge.video_session import TEMPORAL_POLICIES, FrameSizeError, VideoSession
from pedvit.models import build_model
from pedvit.partition import ConstraintError
from pedvit.partition.detectors import DetectorError

from .segment_batch import IMAGE_SUFFIXES
from .segment_one import (InputError, _save_png, add_predictor_arguments, build_predictor, close_predictor, load_image,
                          parse_box, parse_point, prompt_from_args, render_overlay)

__all__ = ["open_frames", "register"]


def _video_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def _folder_frames(paths: list[Path]) -> Iterator[np.ndarray | InputError]:
    for path in paths:
        try:
            yield load_image(path)
        except InputError as error:  # one bad file mid-stream: reported and skipped by the caller
            yield error


def open_frames(source: str) -> tuple[np.ndarray, Iterator[np.ndarray | InputError], int | None]:
    """(first frame H x W x 3 uint8 RGB, iterator over all frames from the first, frame count or None when the
    container does not say) of a video file or a folder of frames. InputError: missing, unreadable, no frames."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"folder {path} holds no frames (images: {', '.join(sorted(IMAGE_SUFFIXES))})")
        return load_image(files[0]), _folder_frames(files), len(files)
    if not path.is_file():
        raise InputError(f"video {path} not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise InputError(f"cannot read video {path} (not a video OpenCV can decode)")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = _video_frames(capture)  # releases the capture when exhausted or closed
    first = next(frames, None)
    if first is None:
        raise InputError(f"video {path} has no frames")
    return first, itertools.chain([first], frames), count if count > 0 else None


def _overlay(frame: np.ndarray, mask: np.ndarray, prompt: dict[str, Any]) -> np.ndarray:
    """The frame with its mask and the prompt that produced it (a later frame's points are all positive)."""
    points = np.array(prompt["points"]) if "points" in prompt else None
    labels = np.ones(len(points), dtype=int) if points is not None else None
    return render_overlay(frame, mask, points, labels, prompt.get("box"))


def _write_overlay(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """An MP4 (OpenCV, mp4v) or GIF (Pillow) of the overlay frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        pictures = [Image.fromarray(f) for f in frames]
        pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
        return
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def _check_args(args: argparse.Namespace) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.coverage_cap is not None and not 0 < args.coverage_cap <= 1:
        raise InputError(f"--coverage-cap must be in (0, 1], got {args.coverage_cap}")
    if args.keep_local_memory < 0:
        raise InputError(f"--keep-local-memory must be >= 0, got {args.keep_local_memory}")
    if args.coverage_cap is not None and args.temporal != "sticky":
        raise InputError("--coverage-cap needs --temporal sticky")
    if args.overlay and Path(args.overlay).suffix.lower() not in (".mp4", ".gif"):
        raise InputError(f"--overlay must end in .mp4 or .gif, got {args.overlay}")


def run_video(args: argparse.Namespace) -> dict[str, Any]:
    """Run `pedvit video`; the JSON result. InputError before any work for bad input."""
    _check_args(args)
    first, frames, count = open_frames(args.input)
    if not args.point and args.box is None:
        raise InputError("the first frame needs a prompt: --point X,Y and/or --box X0,Y0,X1,Y1")
    points, labels, box = prompt_from_args(args, *first.shape[:2])
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(args.model, args.checkpoint)
    predictor, workers = build_predictor(args, model)
    session = VideoSession(predictor, points=points, labels=labels, box=box, temporal=args.temporal,
                           coverage_cap=args.coverage_cap, reuse=not args.no_reuse,
                           keep_local_memory=args.keep_local_memory)
    skipped: list[dict[str, Any]] = []
    overlays: list[np.ndarray] = []
    started = time.perf_counter()
    total = min(count, args.max_frames) if count and args.max_frames else (count or args.max_frames)
    try:
        for number, frame in enumerate(tqdm(frames, total=total, unit="frame", disable=args.quiet)):
            if args.max_frames is not None and number >= args.max_frames:
                break
            try:
                if isinstance(frame, InputError):
                    raise frame
                mask, record = session.add_frame(frame)
            except (FrameSizeError, InputError) as error:
                print(f"warning: input frame {number}: {error}", file=sys.stderr)
                skipped.append({"input_frame": number, "reason": str(error)})
                continue
            _save_png((mask * 255).astype(np.uint8), str(out_dir / f"frame_{number:05d}.png"))
            if args.overlay:
                overlays.append(_overlay(frame, mask, record.prompt))
    finally:
        close_predictor(predictor, workers)
    elapsed = time.perf_counter() - started
    if args.overlay and overlays:
        _write_overlay(Path(args.overlay), overlays, args.fps)
    records = [asdict(r) for r in session.records]
    return {
        "input": args.input, "video_id": session.video_id, "mode": "monolithic" if args.monolithic else "distributed",
        "workers": session.worker_names, "temporal": args.temporal, "coverage_cap": args.coverage_cap,
        "reuse": session.use_reuse, "frames": records, "skipped": skipped,
        "frames_segmented": len(records), "lost_frames": [r["index"] for r in records if r["lost"]],
        "max_worker_scene_coverage": session.max_worker_scene_coverage,
        "windows_sent_per_frame": (float(np.mean([sum(map(len, r["windows_per_worker"].values())) for r in records]))
                                   if records else 0.0),
        "seconds": elapsed, "frames_per_second": len(records) / elapsed if elapsed > 0 else 0.0,
    }


def _cmd_video(args: argparse.Namespace) -> int:
    try:
        result = run_video(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ClusterError, PrivacyConstraintError, ConstraintError, DetectorError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"{result['mode']}: {result['frames_segmented']} frame(s) in {result['seconds']:.1f} s "
          f"({result['frames_per_second']:.2f} fps), {len(result['skipped'])} skipped, "
          f"{len(result['lost_frames'])} lost, {result['windows_sent_per_frame']:.1f} windows sent per frame, "
          f"max worker scene coverage {result['max_worker_scene_coverage']:.3f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `pedvit video` (exit 0 done, 1 refused by workers / constraints, 2 bad input)."""
    p = subparsers.add_parser("video", help="segment and follow an object through a video (temporal privacy)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="video file (any OpenCV reads) or a folder of frames")
    p.add_argument("--point", action="append", type=parse_point, metavar="X,Y[,LABEL]",
                   help="prompt point on the first frame (repeatable)")
    p.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="prompt box on the first frame")
    p.add_argument("--temporal", default="sticky", choices=TEMPORAL_POLICIES,
                   help="window assignment over frames: naive (per frame) or sticky (workers keep scene regions)")
    p.add_argument("--coverage-cap", type=float, default=None, metavar="F",
                   help="sticky: most share of the scene one worker may see over the video")
    p.add_argument("--no-reuse", action="store_true", help="recompute (and send) unchanged windows every frame")
    p.add_argument("--keep-local-memory", type=int, default=10, metavar="K",
                   help="faces / text found in one of the last K frames stay on the edge where they now are, even "
                        "when the detector misses them (default 10; 0: each frame alone)")
    p.add_argument("--out", required=True, metavar="DIR", help="one mask PNG per frame (0/255)")
    p.add_argument("--overlay", default=None, metavar="OUT.mp4|OUT.gif", help="the frames with masks and prompts")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of --overlay (default 10)")
    p.add_argument("--json", default=None, metavar="FILE", help="per-frame records and max_worker_scene_coverage")
    p.add_argument("--max-frames", type=int, default=None, metavar="K", help="stop after K input frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_predictor_arguments(p)
    p.set_defaults(func=_cmd_video)
    return p
