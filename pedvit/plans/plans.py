"""Split plans: what each worker receives and computes, and what the edge computes.

A plan's `encode` turns the resized image into the 1 x 256 x 64 x 64 embedding. It never talks to a worker
itself: it hands window jobs to `dispatch(stage, jobs, force_local)`, which the engine routes to workers
(or computes on the edge) according to the assignment, and gets one output per window back.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from pedvit.models import Sam
from pedvit.models.image_encoder_vit import ImageEncoderViT
from pedvit.models.tiny_vit import TinyViT
from pedvit.partition import WindowGrid

from .fusion import edge_context
from .window_adapter import WindowAdapter
from .stage import Stage
from .stitch import own_tokens, stitch_windows
from .stages import TINYVIT_TRUNK, WINDOW_PX, stages_for_model, vit_blocks_stage_name, vit_embed_stage_name, vit_window_stretches

#: window id -> (window tensor h x w x C, meta row [origin_y, origin_x, valid_h, valid_w])
Jobs = dict[int, tuple[np.ndarray, np.ndarray]]
#: (stage name, jobs, window ids the edge must compute itself) -> window id -> output h' x w' x C' float32
Dispatch = Callable[[str, Jobs, frozenset[int]], dict[int, np.ndarray]]


@dataclass
class PlanInfo:
    """What `pedvit plans` prints about a plan."""

    name: str
    models: str
    rounds: str
    worker_receives: str
    edge_computes: str
    exact: bool
    isolated: bool
    notes: str = ""


class SplitPlan:
    """Base class. Subclasses set `name` and implement `encode` and `info`."""

    name: str = ""
    exact: bool = False
    isolated: bool = True
    halo_px: int = 0
    #: window side in tokens (the ViT plans need their attention window, 14; tinyvit-isolated takes multiples)
    window_tokens: int = 14

    def __init__(self) -> None:
        # Results of pure-padding windows never depend on the image: computed once per model, reused.
        self._padding_cache: dict[tuple, np.ndarray] = {}

    def check_model(self, model: Sam) -> None:
        raise NotImplementedError

    def encode(self, model: Sam, resized: np.ndarray, grid: WindowGrid, dispatch: Dispatch) -> torch.Tensor:
        raise NotImplementedError

    def info(self, model: Sam | None = None) -> PlanInfo:
        raise NotImplementedError

    def edge_stages(self, model: Sam) -> dict[str, Stage]:
        """The stages the edge needs for the windows it computes itself (sensitive windows, padding)."""
        return stages_for_model(model)

    def position_period(self, stage: str) -> int | None:
        """The period (input pixels) modulo which `stage`'s output depends on a window's origin, or None
        when the stage needs absolute positions (a ViT's absolute position embedding, seam sides).

        A stage with a period can run with positions hidden: its workers get each window's origin modulo the
        period (the same output, bit for bit) and the windows in a random order, so a worker does not learn
        where its pieces sit in the image (`SplitEngine(hide_positions=True)`).
        """
        return None

    # ------------------------------------------------------------------------------ shared helpers
    @staticmethod
    def canvas(resized: np.ndarray, size: int) -> np.ndarray:
        """h x w x 3 uint8 resized image -> size x size x 3 uint8, zero beyond the content."""
        out = np.zeros((size, size, 3), dtype=np.uint8)
        out[: resized.shape[0], : resized.shape[1]] = resized
        return out

    @staticmethod
    def pixel_jobs(canvas: np.ndarray, grid: WindowGrid, window_ids: list[int], halo_px: int) -> Jobs:
        jobs: Jobs = {}
        for wid in window_ids:
            y0, x0, y1, x1 = grid.crop_box(wid, halo_px)
            valid_h, valid_w = grid.content_extent((y0, x0, y1, x1))
            jobs[wid] = (canvas[y0:y1, x0:x1], np.array([y0, x0, valid_h, valid_w], dtype=np.int32))
        return jobs

    def padding_outputs(self, model: Sam, stage_name: str, jobs: Jobs, key: tuple) -> dict[int, np.ndarray]:
        """Outputs of pure-padding windows (zero content), computed once and cached on the edge."""
        stage = None  # built only on a cache miss: once per model, not on every request
        out = {}
        for wid, (array, meta) in jobs.items():
            cache_key = (id(model), stage_name, key, wid, array.shape)
            if cache_key not in self._padding_cache:
                stage = stage or self.edge_stages(model)[stage_name]
                blank_meta = meta.copy()
                blank_meta[2:] = 0  # no valid content
                self._padding_cache[cache_key] = stage.run(np.zeros_like(array)[None], blank_meta[None])[0]
            out[wid] = self._padding_cache[cache_key]
        return out


class TinyViTIsolated(SplitPlan):
    """MobileSAM: one round; each worker runs the TinyViT trunk on its window crops (+ optional halo).

    Approximate: the trunk's convolutions and windowed attention lose the context beyond each crop. The edge
    stitches the token features of every window (the window's own tokens, halo dropped), optionally
    refines them with a learned fusion module (which may read a low-resolution whole-image pass that the edge
    runs on its own copy of the image, in parallel with the workers: `pedvit.plans.fusion`), and runs the neck.
    """

    name = "tinyvit-isolated"
    exact = False
    isolated = True

    def __init__(self, halo_px: int = 0, fusion: nn.Module | None = None, window_tokens: int = 14) -> None:
        """`window_tokens`: window side, 14 (224 px, default) or a multiple (28 = 448 px: fewer seams, larger
        connected regions per worker). Multiples of 14 keep every window's origin on the 224 px period of
        TinyViT's attention windows, so a window's attention grid is the whole image's."""
        super().__init__()
        if halo_px < 0 or halo_px % 16:
            raise ValueError(f"halo must be a non-negative multiple of 16 px, got {halo_px}")
        if window_tokens < 14 or window_tokens % 14:
            raise ValueError(f"tinyvit-isolated windows must be a positive multiple of 14 tokens, got {window_tokens}")
        self.halo_px = halo_px
        self.fusion = fusion
        self.window_tokens = window_tokens
        #: None: fusion + neck run as torch modules; else a callable `(stitched 1 x 320 x 64 x 64, context or None)
        #: -> 1 x 256 x 64 x 64` that replaces them (the ONNX edge runtime, `pedvit.edge.onnx_runtime`)
        self.edge_head: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None

    @property
    def window_adapter(self) -> WindowAdapter | None:
        """The adapter the workers' trunk runs with: the one the fusion was trained with (None: plain trunk)."""
        return getattr(self.fusion, "window_adapter", None)

    @property
    def trunk_stage(self) -> str:
        """Name of the worker stage this plan dispatches."""
        adapter = self.window_adapter
        return adapter.stage_name if adapter is not None else TINYVIT_TRUNK

    def edge_stages(self, model: Sam) -> dict[str, Stage]:
        # Only the trunk this plan dispatches: no adapted copy of the trunk on the edge when it runs none.
        adapter = self.window_adapter
        return stages_for_model(model, [adapter] if adapter is not None else [])

    def position_period(self, stage: str) -> int | None:
        # TinyViT has no absolute position embedding: its attention windows repeat every 224 px, and that
        # alignment is all the trunk reads from an origin. Seam padding needs the crop's seam sides (which
        # reveal the windows on the canvas border), so an adapter with seam padding keeps positions.
        adapter = self.window_adapter
        if stage != self.trunk_stage or (adapter is not None and adapter.seam_padding != "zeros"):
            return None
        return WINDOW_PX

    def check_model(self, model: Sam) -> None:
        if not isinstance(model.image_encoder, TinyViT):
            raise ValueError(f"plan {self.name!r} needs a MobileSAM (TinyViT) model, got {model.name!r}")

    def stitched_trunk(self, model: Sam, resized: np.ndarray, grid: WindowGrid, dispatch: Dispatch) -> torch.Tensor:
        """1 x 320 x 64 x 64 trunk features stitched from per-window outputs (before fusion and neck)."""
        canvas = self.canvas(resized, grid.input_size)
        jobs = self.pixel_jobs(canvas, grid, grid.content_ids, self.halo_px)
        outputs = dispatch(self.trunk_stage, jobs, frozenset())
        padding_jobs = self.pixel_jobs(np.zeros_like(canvas), grid, grid.padding_ids, self.halo_px)
        outputs.update(self.padding_outputs(model, self.trunk_stage, padding_jobs, (self.halo_px,)))
        p = grid.patch_size
        n_tokens = grid.input_size // p
        # Stitched in numpy: slice assignment casts float16 -> float32 in place, with no per-window temporary
        # tensor (per-window torch copies cost ~10-20x more on a busy CPU, see docs/performance.md).
        features = np.zeros((1, n_tokens, n_tokens, model.image_encoder.trunk_channels), dtype=np.float32)
        origins = {w.id: grid.crop_box(w.id, self.halo_px)[:2] for w in grid.windows}
        stitch_windows(features, ((w.token_box, own_tokens(outputs[w.id], w.token_box, (origins[w.id][0] // p, origins[w.id][1] // p)))
                                  for w in grid.windows))
        # Stitched on the CPU (outputs arrive as numpy), then moved to where the edge's model runs.
        return torch.from_numpy(features).permute(0, 3, 1, 2).to(model.device)

    def encode(self, model: Sam, resized: np.ndarray, grid: WindowGrid, dispatch: Dispatch) -> torch.Tensor:
        self.check_model(model)
        context_px = getattr(self.fusion, "context_px", 0)
        if not context_px:
            return self.fuse_and_neck(model, self.stitched_trunk(model, resized, grid, dispatch), None)
        # The fusion's context pass needs only the edge's own copy of the image: it runs while the workers
        # compute, so it adds no latency when the edge would otherwise wait for the network.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pedvit-context") as pool:
            context = pool.submit(edge_context, model, resized, context_px)
            features = self.stitched_trunk(model, resized, grid, dispatch)
            return self.fuse_and_neck(model, features, context.result())

    def fuse_and_neck(self, model: Sam, features: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """1 x 320 x 64 x 64 stitched trunk features (+ the context pass, when the fusion reads one) -> the
        1 x 256 x 64 x 64 embedding: the fusion (if any), then the neck; or `edge_head` when set."""
        if self.edge_head is not None:
            return self.edge_head(features, context)
        if self.fusion is not None:
            features = self.fusion(features, context) if context is not None else self.fusion(features)
        return model.image_encoder.run_neck(features)

    def info(self, model: Sam | None = None) -> PlanInfo:
        return PlanInfo(
            self.name, "mobile_sam", "1",
            f"uint8 pixels of its own {self.window_tokens * 16} px windows (halo {self.halo_px} px), "
            + ("shuffled, without their positions" if self.position_period(self.trunk_stage) else "with their positions")
            + (f"; runs the trunk with window adapter {self.window_adapter.adapter_id}"
               + (f" ({self.window_adapter.seam_padding} seam padding)" if self.window_adapter.seam_padding != "zeros" else "")
               if self.window_adapter else ""),
            "stitching" + self._fusion_label() + " + neck + prompt encoder + mask decoder",
            exact=False, isolated=True,
            notes="approximate: no context crosses window borders inside the trunk",
        )

    def _fusion_label(self) -> str:
        if self.fusion is None:
            return ""
        context_px = getattr(self.fusion, "context_px", 0)
        return f" + learned fusion (with a {context_px} px whole-image context pass)" if context_px else " + learned fusion"


class _ViTPlan(SplitPlan):
    def check_model(self, model: Sam) -> None:
        if not isinstance(model.image_encoder, ImageEncoderViT):
            raise ValueError(f"plan {self.name!r} needs a SAM ViT model (vit_b/l/h), got {model.name!r}")

    def first_round(self, model: Sam, resized: np.ndarray, grid: WindowGrid, dispatch: Dispatch) -> torch.Tensor:
        """Patch embed + window blocks before the first global block on every window -> 1 x 64 x 64 x C."""
        encoder: ImageEncoderViT = model.image_encoder  # type: ignore[assignment]
        first_global = encoder.global_attn_indexes[0]
        stage = vit_embed_stage_name(first_global)
        canvas = self.canvas(resized, grid.input_size)
        outputs = dispatch(stage, self.pixel_jobs(canvas, grid, grid.content_ids, 0), frozenset())
        padding_jobs = self.pixel_jobs(np.zeros_like(canvas), grid, grid.padding_ids, 0)
        outputs.update(self.padding_outputs(model, stage, padding_jobs, ()))
        return self.stitch(grid, outputs, encoder.pos_embed.shape[-1]).to(model.device)

    @staticmethod
    def stitch(grid: WindowGrid, outputs: Mapping[int, np.ndarray], dim: int) -> torch.Tensor:
        """Per-window h x w x dim token outputs -> 1 x 64 x 64 x dim float32 tokens (CPU)."""
        n_tokens = grid.input_size // grid.patch_size
        tokens = np.zeros((1, n_tokens, n_tokens, dim), dtype=np.float32)
        return torch.from_numpy(stitch_windows(tokens, ((w.token_box, outputs[w.id]) for w in grid.windows)))

    @staticmethod
    def token_jobs(tokens: torch.Tensor, grid: WindowGrid) -> Jobs:
        jobs: Jobs = {}
        array = tokens[0].cpu().numpy()  # no copy on CPU; one device->host copy on an accelerator
        for window in grid.windows:
            r0, c0, r1, c1 = window.token_box
            jobs[window.id] = (array[r0:r1, c0:c1], np.array([r0, c0, r1 - r0, c1 - c0], dtype=np.int32))
        return jobs


class ViTIsolated(_ViTPlan):
    """SAM ViT: one round; workers run patch embed + the window blocks before the first global block.

    Exact, and every tensor a worker receives is a function of its own windows' pixels only. The edge runs
    everything from the first global block on (most of the encoder).
    """

    name = "vit-isolated"
    exact = True
    isolated = True

    def encode(self, model: Sam, resized: np.ndarray, grid: WindowGrid, dispatch: Dispatch) -> torch.Tensor:
        self.check_model(model)
        encoder: ImageEncoderViT = model.image_encoder  # type: ignore[assignment]
        tokens = self.first_round(model, resized, grid, dispatch)
        tokens = encoder.run_blocks(tokens, encoder.global_attn_indexes[0], encoder.depth)
        return encoder.run_neck(tokens)

    def info(self, model: Sam | None = None) -> PlanInfo:
        return PlanInfo(
            self.name, "vit_b, vit_l, vit_h", "1",
            "uint8 pixels of its own 224 px windows, with their positions (absolute position embedding)",
            "every block from the first global block on + neck + prompt encoder + mask decoder",
            exact=True, isolated=True,
        )


class ViTExact(_ViTPlan):
    """SAM ViT: workers run every stretch of window blocks, the edge runs the global blocks between them.

    Exact, but **not isolated**: after the first global block, every token a worker receives carries context
    from every window of the image. One round trip per stretch of window blocks. Pure-padding windows are
    computed on the edge in every round (after a global block they carry image context too).
    """

    name = "vit-exact"
    exact = True
    isolated = False

    def encode(self, model: Sam, resized: np.ndarray, grid: WindowGrid, dispatch: Dispatch) -> torch.Tensor:
        self.check_model(model)
        encoder: ImageEncoderViT = model.image_encoder  # type: ignore[assignment]
        tokens = self.first_round(model, resized, grid, dispatch)
        stretches = vit_window_stretches(encoder)[1:]
        dim = encoder.pos_embed.shape[-1]
        position = encoder.global_attn_indexes[0]
        for start, end in stretches:
            tokens = encoder.run_blocks(tokens, position, start)  # global block(s) on the edge
            outputs = dispatch(vit_blocks_stage_name(start, end), self.token_jobs(tokens, grid), frozenset(grid.padding_ids))
            tokens = self.stitch(grid, outputs, dim).to(model.device)
            position = end
        tokens = encoder.run_blocks(tokens, position, encoder.depth)
        return encoder.run_neck(tokens)

    def info(self, model: Sam | None = None) -> PlanInfo:
        rounds = "1 + one per stretch of window blocks (4 for ViT-B/L/H)"
        return PlanInfo(
            self.name, "vit_b, vit_l, vit_h", rounds,
            "uint8 pixels of its windows, then float tokens of its windows after each global block",
            "the global-attention blocks + neck + prompt encoder + mask decoder",
            exact=True, isolated=False,
            notes="NOT isolated: after a global block a worker's tokens carry context from every window",
        )


PLANS: dict[str, type[SplitPlan]] = {
    TinyViTIsolated.name: TinyViTIsolated,
    ViTIsolated.name: ViTIsolated,
    ViTExact.name: ViTExact,
}

DEFAULT_PLAN_FOR_MODEL = {"mobile_sam": "tinyvit-isolated", "vit_b": "vit-exact", "vit_l": "vit-exact", "vit_h": "vit-exact"}


def make_plan(name: str, *, halo_px: int = 0, fusion: nn.Module | None = None, window_tokens: int = 14) -> SplitPlan:
    if name not in PLANS:
        raise ValueError(f"unknown plan {name!r}; choose one of {', '.join(PLANS)}")
    if name == TinyViTIsolated.name:
        return TinyViTIsolated(halo_px=halo_px, fusion=fusion, window_tokens=window_tokens)
    if halo_px:
        raise ValueError(f"plan {name!r} takes no halo (its window blocks are exact without one)")
    if window_tokens != 14:
        raise ValueError(f"plan {name!r} needs the ViT's 14-token windows, got {window_tokens}")
    return PLANS[name]()
