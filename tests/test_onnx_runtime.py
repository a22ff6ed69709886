"""The ONNX edge runtime: exported prompt encoder + mask decoder and tinyvit-isolated's fusion + neck against
torch, on the real MobileSAM weights; the cache; selecting the runtime on predictors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pedvit.edge.onnx_runtime import OnnxFusionNeck, OnnxPromptDecoder, onnx_cache_dir, sparse_prompts, use_edge_runtime
from pedvit.edge.predictor import SamPredictor

#: The exported graphs compute the same float32 operations in another order (fused kernels): logits agree to
#: about 1e-4; masks cut at 0 are compared pixel for pixel.
LOGIT_TOLERANCE = 2e-3


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PEDVIT_ONNX_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))


@pytest.fixture(scope="module")
def chelsea_predictor(mobile_sam):
    from pedvit.data.photos import photo

    predictor = SamPredictor(mobile_sam)
    predictor.set_image(photo("chelsea").image)
    return predictor


PROMPTS = {
    "points": (torch.tensor([[[200.0, 150.0], [100.0, 100.0]]]), torch.tensor([[1, 0]]), None, None),
    "box": (None, None, torch.tensor([[50.0, 40.0, 300.0, 250.0]]), None),
    "points+box": (torch.tensor([[[200.0, 150.0]]]), torch.tensor([[1]]), torch.tensor([[50.0, 40.0, 300.0, 250.0]]), None),
    "points+mask": (torch.tensor([[[200.0, 150.0]]]), torch.tensor([[1]]), None, "previous"),
    "batch of 9": (torch.rand(9, 1, 2, generator=torch.Generator().manual_seed(0)) * 600, torch.ones(9, 1, dtype=torch.int64), None, None),
}


@pytest.mark.parametrize("name", list(PROMPTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_prompt_decoder_matches_torch(chelsea_predictor, name, multimask) -> None:
    predictor = chelsea_predictor
    coords, labels, boxes, mask = PROMPTS[name]
    if mask == "previous":
        mask = predictor.decode_low_res(coords, labels, multimask_output=False)[0]
    decoder = OnnxPromptDecoder(predictor.model)
    theirs_logits, theirs_iou = predictor.decode_low_res(coords, labels, boxes, mask, multimask)
    ours_logits, ours_iou = decoder(predictor.features, coords, labels, boxes, mask, multimask)
    assert ours_logits.shape == theirs_logits.shape == (theirs_logits.shape[0], 3 if multimask else 1, 256, 256)
    assert (ours_logits - theirs_logits).abs().max().item() < LOGIT_TOLERANCE
    assert (ours_iou - theirs_iou).abs().max().item() < 1e-4
    assert theirs_logits.abs().max().item() > 1.0  # the comparison is between real, non-trivial logits


def test_sparse_prompts_layout() -> None:
    coords, labels = sparse_prompts(torch.tensor([[[1.0, 2.0]]]), torch.tensor([[1]]), None)
    assert coords.tolist() == [[[1.0, 2.0], [0.0, 0.0]]] and labels.tolist() == [[1.0, -1.0]]  # padding point
    coords, labels = sparse_prompts(torch.tensor([[[1.0, 2.0]]]), torch.tensor([[0]]), torch.tensor([[3.0, 4.0, 5.0, 6.0]]))
    assert coords.tolist() == [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]] and labels.tolist() == [[0.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="at least one point or a box"):
        sparse_prompts(None, None, None)
    with pytest.raises(ValueError, match="together"):
        sparse_prompts(torch.zeros(1, 1, 2), None, None)


def test_graphs_are_cached_by_weights(mobile_sam, monkeypatch) -> None:
    first = OnnxPromptDecoder(mobile_sam)
    files = sorted(onnx_cache_dir().glob("prompt_decoder-*.onnx"))
    assert [f.name for f in files] == [f"prompt_decoder-{first.key}.onnx"]

    def no_export(*_args, **_kwargs):
        raise AssertionError("exported again instead of reading the cache")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    assert OnnxPromptDecoder(mobile_sam).key == first.key  # read from the cache
    other = build_other_decoder_weights(mobile_sam)
    with pytest.raises(AssertionError, match="exported again"):
        OnnxPromptDecoder(other)  # other weights: another key, so it must export


def build_other_decoder_weights(model):
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.mask_decoder.iou_token.weight.add_(1.0)
    return other


def test_fusion_neck_matches_torch(mobile_sam) -> None:
    from pedvit.plans.fusion import load_default_fusion

    fusion = load_default_fusion()
    generator = torch.Generator().manual_seed(1)
    stitched = torch.randn(1, 320, 64, 64, generator=generator)
    side = fusion.context_px // 16
    context = torch.randn(1, 320, side, side, generator=generator)
    with torch.inference_mode():
        theirs = mobile_sam.image_encoder.run_neck(fusion(stitched, context))
        neck_only = mobile_sam.image_encoder.run_neck(stitched)
    assert (OnnxFusionNeck(mobile_sam, fusion)(stitched, context) - theirs).abs().max().item() < 1e-4
    assert (OnnxFusionNeck(mobile_sam, None)(stitched, None) - neck_only).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="context"):
        OnnxFusionNeck(mobile_sam, fusion)(stitched, None)


def test_use_edge_runtime_switches_and_validates(mobile_sam) -> None:
    predictor = SamPredictor(mobile_sam)
    use_edge_runtime(predictor, "onnx")
    assert isinstance(predictor.edge_decoder, OnnxPromptDecoder)
    use_edge_runtime(predictor, "torch")
    assert predictor.edge_decoder is None
    with pytest.raises(ValueError, match="edge runtime must be one of"):
        use_edge_runtime(predictor, "tflite")


@pytest.mark.slow
@pytest.mark.parametrize("photo_name", ["astronaut", "coffee", "chelsea"])
def test_split_predictor_masks_identical_with_onnx_edge(mobile_sam, photo_name) -> None:
    """The whole edge (fusion + neck, prompt encoder + mask decoder) in onnxruntime gives the same masks as
    torch on real photos (a pixel may flip only where its logit is within float32 rounding of 0); embedding
    and logits agree to float32 rounding."""
    from pedvit.data.photos import photo
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor

    image = photo(photo_name).image
    h, w = image.shape[:2]
    prompts = [dict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1])),
               dict(point_coords=np.array([[w / 4, h / 3], [3 * w / 4, h / 2]]), point_labels=np.array([1, 0])),
               dict(box=np.array([w / 5, h / 5, 4 * w / 5, 4 * h / 5]))]
    results = {}
    for runtime in ("torch", "onnx"):
        predictor = DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 2), seed=0)
        use_edge_runtime(predictor, runtime)
        predictor.set_image(image)
        results[runtime] = (predictor.get_image_embedding().clone(),
                            [predictor.predict(**p, multimask_output=True, return_logits=True) for p in prompts])
        if runtime == "onnx":
            assert predictor.plan.edge_head is not None and predictor.edge_decoder is not None
        predictor.close()
    assert (results["onnx"][0] - results["torch"][0]).abs().max().item() < 1e-4
    for (logits_t, iou_t, _), (logits_o, iou_o, _) in zip(results["torch"][1], results["onnx"][1]):
        assert np.abs(logits_o - logits_t).max() < 5e-3 and np.abs(iou_o - iou_t).max() < 1e-3
        # Same masks, except where a logit lies within float32 rounding of the threshold (either side is right).
        flipped = (logits_o > 0) != (logits_t > 0)
        assert np.abs(logits_t[flipped]).max(initial=0.0) < 1e-4, f"{flipped.sum()} mask pixels differ"
