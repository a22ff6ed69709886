"""The edge's parts in onnxruntime: the edge in pedvit's story is a phone or a headset, which runs ONNX models,
not PyTorch.

Two graphs, exported from the loaded torch modules with the TorchScript-based exporter (`onnx` package;
opset 17) and cached on disk under a hash of the weights and of the code that defines them (never
downloaded):

* **prompt decoder**: SAM's prompt encoder + mask decoder on an image embedding. Inputs
  ``image_embeddings`` 1 x 256 x 64 x 64, ``point_coords`` B x N x 2 (x, y) in the input frame,
  ``point_labels`` B x N (1 foreground, 0 background, -1 padding, 2 / 3 box corners), ``mask_input``
  M x 1 x 256 x 256 low-res logits (M = 1 or B), ``has_mask_input`` M (1: use the mask); outputs
  ``low_res_logits`` B x 4 x 256 x 256 and ``iou_predictions`` B x 4 (all four mask tokens: the caller picks
  the single-mask or the three multimask outputs, as the torch decoder does).
* **fusion + neck** (`tinyvit-isolated`): the stitched 1 x 320 x 64 x 64 trunk features (+ the edge's
  1 x 320 x s x s whole-image context features when the fusion reads them) -> the 1 x 256 x 64 x 64
  embedding: the learned fusion, when the plan has one, then the neck.

`use_edge_runtime(predictor, "onnx")` puts both in place on a predictor: its `decode_low_res` and, for
`tinyvit-isolated`, the plan's fusion + neck run in onnxruntime; `"torch"` restores the torch modules. What
stays in torch on the edge: the context pass of the fusion (the trunk on a 224 px copy), stitching, and mask
upsampling; with ``--monolithic`` the image encoder.

Set ``PEDVIT_ONNX_CACHE`` to move the cache (default ``~/.cache/pedvit/onnx``).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pedvit.models import Sam

__all__ = ["EDGE_RUNTIMES", "OnnxPromptDecoder", "OnnxFusionNeck", "use_edge_runtime", "onnx_cache_dir", "sparse_prompts"]

EDGE_RUNTIMES = ("torch", "onnx")
OPSET = 17


def onnx_cache_dir() -> Path:
    """Where exported graphs are kept: $PEDVIT_ONNX_CACHE, else ~/.cache/pedvit/onnx."""
    return Path(os.environ.get("PEDVIT_ONNX_CACHE") or Path.home() / ".cache" / "pedvit" / "onnx")


def _weights_key(kind: str, modules: dict[str, nn.Module], extra: str = "") -> str:
    """Hash of every tensor of `modules` (names, shapes, dtypes, bytes), of the source files that define them
    and this one (which defines the graphs), the torch version and `extra`: different weights or code never
    share a cached graph."""
    digest = hashlib.sha256(f"{kind}|opset{OPSET}|torch{torch.__version__}|{extra}".encode())
    sources = {inspect.getsourcefile(type(m)) for module in modules.values() for m in module.modules()} | {__file__}
    for source in sorted(s for s in sources if s):
        digest.update(Path(source).read_bytes())
    for prefix, module in sorted(modules.items()):
        for name, tensor in sorted(module.state_dict().items()):
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}.{name}|{tuple(value.shape)}|{value.dtype}".encode())
            digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:24]


def _export_cached(kind: str, key: str, module: nn.Module, example: tuple[torch.Tensor, ...], *, input_names: list[str],
                   output_names: list[str], dynamic_axes: dict[str, dict[int, str]] | None) -> bytes:
    """The ONNX bytes of `module`, read from the cache or exported there (written atomically)."""
    path = onnx_cache_dir() / f"{kind}-{key}.onnx"
    if path.is_file():
        return path.read_bytes()
    try:
        import onnx  # noqa: F401 - the TorchScript-based exporter needs it
    except ImportError as error:
        raise RuntimeError("the ONNX edge runtime needs the 'onnx' package (pip install onnx)") from error
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks that are constant per graph
        torch.onnx.export(module, example, buffer, dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)  # concurrent exporters write the same bytes; the last rename wins
    return data


def _session(data: bytes, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The same thread count as torch by default, so that the two runtimes are compared on equal terms.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: an edge device shares its cores (here: with the decoding loop
    # and the gRPC threads), and spinning threads slow everything else on a busy machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------- prompt decoder
class _PromptDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder with every prompt as labelled points (the exported graph)."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.prompt_encoder
        # The same operations as PromptEncoder._embed_points / _embed_boxes, one label per point.
        embedding = encoder.pe_layer.forward_with_coords(point_coords + 0.5, encoder.input_image_size)
        labels = point_labels[..., None]
        embedding = torch.where(labels == -1, encoder.not_a_point_embed.weight.expand_as(embedding), embedding)
        for label in range(4):
            embedding = embedding + (labels == label) * encoder.point_embeddings[label].weight
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask * encoder.mask_downscaling(mask_input) + (1 - has_mask) * no_mask  # exact 0/1 selection
        return self.mask_decoder.predict_masks(image_embeddings, encoder.get_dense_pe(), embedding, dense)


def sparse_prompts(point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                   boxes: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """Points (B x N x 2, B x N) and boxes (B x 4 (x0, y0, x1, y1)) in the input frame -> the graph's labelled
    points B x N' x 2 float32 and B x N' float32: the box corners get labels 2 and 3; without a box, one
    padding point (label -1) is appended, as SAM's prompt encoder does."""
    parts_coords, parts_labels = [], []
    if point_coords is not None:
        if point_labels is None:
            raise ValueError("point_coords and point_labels must be given together")
        parts_coords.append(point_coords.detach().cpu().float().numpy())
        parts_labels.append(point_labels.detach().cpu().float().numpy())
        if boxes is None:
            batch = point_coords.shape[0]
            parts_coords.append(np.zeros((batch, 1, 2), dtype=np.float32))
            parts_labels.append(-np.ones((batch, 1), dtype=np.float32))
    if boxes is not None:
        corners = boxes.detach().cpu().float().numpy().reshape(-1, 2, 2)
        parts_coords.append(corners)
        parts_labels.append(np.tile(np.array([[2.0, 3.0]], dtype=np.float32), (corners.shape[0], 1)))
    if not parts_coords:
        raise ValueError("the ONNX prompt decoder needs at least one point or a box")
    return (np.ascontiguousarray(np.concatenate(parts_coords, axis=1), dtype=np.float32),
            np.ascontiguousarray(np.concatenate(parts_labels, axis=1), dtype=np.float32))


class OnnxPromptDecoder:
    """SAM's prompt encoder + mask decoder in onnxruntime, with `SamPredictor.decode_low_res`'s contract.

    Args:
        model: the `Sam` whose prompt encoder and mask decoder are exported (cached by their weights' hash).
        threads: onnxruntime intra-op threads (default: torch's current count).
    """

    def __init__(self, model: Sam, threads: int | None = None) -> None:
        graph = _PromptDecoderGraph(model).eval()
        key = _weights_key("prompt_decoder", {"prompt_encoder": model.prompt_encoder, "mask_decoder": model.mask_decoder})
        side = model.prompt_encoder.image_embedding_size
        example = (
            torch.zeros(1, model.prompt_encoder.embed_dim, *side),
            torch.full((2, 2, 2), 100.0),
            torch.tensor([[1.0, -1.0], [0.0, -1.0]]),
            torch.zeros(1, 1, 4 * side[0], 4 * side[1]),
            torch.zeros(1),
        )
        data = _export_cached(
            "prompt_decoder", key, graph, example,
            input_names=["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
            output_names=["low_res_logits", "iou_predictions"],
            dynamic_axes={"point_coords": {0: "B", 1: "N"}, "point_labels": {0: "B", 1: "N"}, "mask_input": {0: "M"},
                          "has_mask_input": {0: "M"}, "low_res_logits": {0: "B"}, "iou_predictions": {0: "B"}},
        )
        self.session = _session(data, threads)
        self.mask_input_size = (4 * side[0], 4 * side[1])
        self.key = key

    def __call__(self, features: torch.Tensor, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                 boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                 multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """1 x 256 x 64 x 64 embedding + prompts in the input frame -> B x C x 256 x 256 low-res logits, B x C
        IoU predictions (C = 3 with multimask_output, else 1)."""
        coords, labels = sparse_prompts(point_coords, point_labels, boxes)
        if mask_input is not None:
            masks = np.ascontiguousarray(mask_input.detach().cpu().float().numpy())
            has_mask = np.ones(masks.shape[0], dtype=np.float32)
        else:
            masks = np.zeros((1, 1, *self.mask_input_size), dtype=np.float32)
            has_mask = np.zeros(1, dtype=np.float32)
        embedding = np.ascontiguousarray(features.detach().cpu().float().numpy())
        low_res, iou = self.session.run(None, {"image_embeddings": embedding, "point_coords": coords,
                                                "point_labels": labels, "mask_input": masks, "has_mask_input": has_mask})
        selection = slice(1, None) if multimask_output else slice(0, 1)
        return torch.from_numpy(low_res[:, selection]), torch.from_numpy(iou[:, selection])


# ---------------------------------------------------------------------------------------- fusion + neck
class _FusionNeckGraph(nn.Module):
    """(fusion +) neck, the exported graph of `OnnxFusionNeck`."""

    def __init__(self, fusion: nn.Module | None, neck: nn.Module, with_context: bool) -> None:
        super().__init__()
        self.fusion = fusion
        self.neck = neck
        self.with_context = with_context

    def forward(self, stitched: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        features = stitched
        if self.fusion is not None:
            features = self.fusion(features, context) if self.with_context else self.fusion(features)
        return self.neck(features)


class OnnxFusionNeck:
    """`tinyvit-isolated`'s edge head in onnxruntime: (fusion +) neck, ``(stitched, context) -> embedding``.

    Args:
        model: the MobileSAM `Sam` (its image encoder's neck).
        fusion: the plan's fusion module, or None (neck only).
        threads: onnxruntime intra-op threads (default: torch's current count).
    """

    def __init__(self, model: Sam, fusion: nn.Module | None, threads: int | None = None) -> None:
        encoder = model.image_encoder
        context_px = int(getattr(fusion, "context_px", 0) or 0)
        self.context_px = context_px
        channels = encoder.trunk_channels
        tokens = model.img_size // 16
        graph = _FusionNeckGraph(fusion, encoder.neck, context_px > 0).eval()
        modules: dict[str, nn.Module] = {"neck": encoder.neck}
        if fusion is not None:
            modules["fusion"] = fusion
        key = _weights_key("fusion_neck", modules, extra=f"{type(fusion).__name__}|context{context_px}|"
                                                          f"{getattr(fusion, 'config', '')}")
        example: tuple[torch.Tensor, ...] = (torch.zeros(1, channels, tokens, tokens),)
        names = ["stitched"]
        if context_px:
            example += (torch.zeros(1, channels, context_px // 16, context_px // 16),)
            names.append("context")
        data = _export_cached("fusion_neck", key, graph, example, input_names=names, output_names=["embedding"],
                              dynamic_axes=None)
        self.session = _session(data, threads)
        self.key = key

    def __call__(self, stitched: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """1 x 320 x 64 x 64 stitched trunk features (+ 1 x 320 x s x s context) -> 1 x 256 x 64 x 64."""
        feeds = {"stitched": np.ascontiguousarray(stitched.detach().cpu().float().numpy())}
        if self.context_px:
            if context is None:
                raise ValueError(f"this fusion needs the edge's {self.context_px} px context features")
            feeds["context"] = np.ascontiguousarray(context.detach().cpu().float().numpy())
        (embedding,) = self.session.run(None, feeds)
        return torch.from_numpy(embedding).to(stitched.device)


# ---------------------------------------------------------------------------------------------- wiring
def use_edge_runtime(predictor: Any, runtime: str, threads: int | None = None) -> None:
    """Run the predictor's edge parts in `runtime` ("onnx" or "torch"): the prompt encoder + mask decoder,
    and, for a `tinyvit-isolated` distributed predictor, the plan's fusion + neck."""
    if runtime not in EDGE_RUNTIMES:
        raise ValueError(f"edge runtime must be one of {', '.join(EDGE_RUNTIMES)}, got {runtime!r}")
    engine = getattr(predictor, "engine", None)
    plan = getattr(engine, "plan", None)
    has_head = plan is not None and hasattr(plan, "edge_head")
    if runtime == "torch":
        predictor.edge_decoder = None
        if has_head:
            plan.edge_head = None
        return
    predictor.edge_decoder = OnnxPromptDecoder(predictor.model, threads)
    if has_head:
        plan.edge_head = OnnxFusionNeck(predictor.model, plan.fusion, threads)
