"""Seam padding: a window run alone pads its seam sides with its own edge instead of zeros (and keeps zero
padding on the canvas border); the worker stage and the in-process stitching agree on which sides are seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pedvit.models.tiny_vit import TinyViT, seam_pad
from pedvit.plans.window_adapter import WindowAdapter, adaptable_parameters, adapted_encoder

REPLICATE = WindowAdapter({}, "replicate")


def test_seam_pad_replicates_seam_sides_and_zeroes_the_others() -> None:
    x = torch.randn(3, 2, 5, 6)
    seams = torch.tensor([[True] * 4, [False] * 4, [True, False, False, True]])
    out = seam_pad(x, 1, seams)
    torch.testing.assert_close(out[0], F.pad(x[:1], (1, 1, 1, 1), mode="replicate")[0])
    torch.testing.assert_close(out[1], F.pad(x[1], (1, 1, 1, 1)))
    # top and right are seams: the top row repeats the crop's first row, the right column its last column
    torch.testing.assert_close(out[2, :, 0, 1:-1], x[2, :, 0])
    torch.testing.assert_close(out[2, :, 1:-1, -1], x[2, :, :, -1])
    torch.testing.assert_close(out[2, :, 0, -1], x[2, :, 0, -1])  # corner between two seams
    assert not out[2, :, -1].any() and not out[2, :, :, 0].any()  # bottom row, left column: zeros
    assert not out[2, :, 0, 0].any()  # corner next to a canvas side: zero


def test_crop_seams_marks_only_sides_inside_the_canvas() -> None:
    seams = TinyViT.crop_seams([(0, 0, 224, 224), (224, 448, 224, 224), (896, 896, 128, 128)], 1024)
    assert seams.tolist() == [[False, True, False, True], [True, True, True, True], [True, False, True, False]]


def test_trunk_pads_seams_only_when_asked(mobile_sam) -> None:
    plain = mobile_sam.image_encoder
    padded = adapted_encoder(plain, REPLICATE)
    assert padded.seam_padding == "replicate" and plain.seam_padding == "zeros"
    x = torch.randn(2, 3, 224, 224)
    seams = torch.tensor([[True, True, False, True], [True] * 4])
    with torch.inference_mode():
        reference = plain.run_trunk(x)
        torch.testing.assert_close(plain.run_trunk(x, seams=seams), reference, rtol=0, atol=0)  # zeros: ignored
        torch.testing.assert_close(padded.run_trunk(x, seams=torch.zeros(2, 4, dtype=torch.bool)), reference, rtol=0, atol=0)
        torch.testing.assert_close(padded.run_trunk(x), reference, rtol=0, atol=0)  # no seam sides given
        with_seams = padded.run_trunk(x, seams=seams)
        assert float((with_seams - reference).abs().max()) > 1e-2
        torch.testing.assert_close(plain.run_trunk(x), reference, rtol=0, atol=0)  # nothing leaks to later forwards
        with pytest.raises(ValueError, match="B x 4"):
            padded.run_trunk(x, seams=torch.ones(3, 4, dtype=torch.bool))


def test_seam_padding_is_part_of_the_adapter_and_its_file(tmp_path, mobile_sam) -> None:
    from pedvit.plans.fusion import SeamFusion, load_default_fusion, load_window_adapter, save_fusion

    params = {n: p.detach() + 0.01 for n, p in list(adaptable_parameters(mobile_sam.image_encoder).items())[:3]}
    zeros, replicate = WindowAdapter(params), WindowAdapter(params, "replicate")
    assert zeros.adapter_id != replicate.adapter_id != REPLICATE.adapter_id
    with pytest.raises(ValueError, match="seam_padding"):
        WindowAdapter(params, "reflect")
    module = SeamFusion(hidden=16, depth=1)
    module.window_adapter = replicate
    save_fusion(module, tmp_path / "f.pt")
    loaded = load_window_adapter(tmp_path / "f.pt")
    assert loaded.seam_padding == "replicate" and loaded.adapter_id == replicate.adapter_id
    assert load_default_fusion(tmp_path / "f.pt").window_adapter.adapter_id == replicate.adapter_id
    module.window_adapter = REPLICATE  # padding only, no parameter changed
    save_fusion(module, tmp_path / "g.pt")
    assert load_window_adapter(tmp_path / "g.pt").adapter_id == REPLICATE.adapter_id
    trained = WindowAdapter.from_encoder(adapted_encoder(mobile_sam.image_encoder, replicate), mobile_sam.image_encoder)
    assert trained.adapter_id == replicate.adapter_id


def test_worker_stage_and_in_process_stitching_agree_on_seams(mobile_sam) -> None:
    """What a worker's stage returns for a window equals that window's tokens in `stitch_isolated` (the fast
    path the fusion is trained and scored on), for a corner window and an interior one."""
    from pedvit.plans.fusion import canvas_input
    from pedvit.training.features import stitch_isolated
    from pedvit.plans.stages import stages_for_model

    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    stage = stages_for_model(mobile_sam, [REPLICATE])[REPLICATE.stage_name]
    x = canvas_input(mobile_sam, torch.from_numpy(canvas).permute(2, 0, 1)[None].float(), [(1024, 1024)])
    with torch.inference_mode():
        stitched = stitch_isolated(adapted_encoder(mobile_sam.image_encoder, REPLICATE), x)
    for y0, x0 in [(0, 0), (224, 448)]:
        meta = np.array([[y0, x0, 224, 224]], dtype=np.int32)
        got = stage.run(canvas[None, y0:y0 + 224, x0:x0 + 224], meta)[0]
        expected = stitched[0, :, y0 // 16:y0 // 16 + 14, x0 // 16:x0 // 16 + 14].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_seam_padding_brings_isolated_windows_closer_to_the_whole_image(mobile_sam) -> None:
    """Real weights, a real photo, no training: with seam padding the stitched windows' trunk tokens are
    closer to the monolithic trunk's, at the seams and at the window centres."""
    from pedvit.data import real_photos
    from pedvit.models.transforms import ResizeLongestSide
    from pedvit.training.features import monolithic_trunk, stitched_fast

    image = real_photos(min_count=0, names=["coffee"])[0].image
    resized = ResizeLongestSide(mobile_sam.img_size).apply_image(image)
    mono = monolithic_trunk(mobile_sam, resized)[0]
    h, w = (-(-s // 16) for s in resized.shape[:2])
    t = torch.arange(64) % 14
    border = ((t == 0) | (t == 13))[:h, None] | ((t == 0) | (t == 13))[None, :w]
    errors = {}
    for label, adapter in (("zeros", None), ("replicate", REPLICATE)):
        diff = ((stitched_fast(mobile_sam, resized, adapter=adapter)[0] - mono) ** 2).mean(dim=0)[:h, :w]
        errors[label] = (float(diff[border].mean()), float(diff[~border].mean()))
    assert errors["replicate"][0] < 0.8 * errors["zeros"][0], errors
    assert errors["replicate"][1] < errors["zeros"][1], errors


def test_plan_dispatches_the_seam_padded_stage_and_says_so() -> None:
    from pedvit.plans.fusion import SeamFusion
    from pedvit.plans.plans import TinyViTIsolated

    module = SeamFusion(hidden=16, depth=1)
    module.window_adapter = REPLICATE
    plan = TinyViTIsolated(fusion=module)
    assert plan.trunk_stage == REPLICATE.stage_name
    assert "replicate seam padding" in plan.info().worker_receives


def test_stitch_windows_places_pieces_in_numpy_and_torch_maps() -> None:
    """The one stitcher: a piece without a batch axis fills every image of the batch; float16 casts in place."""
    from pedvit.plans.stitch import own_tokens, stitch_windows

    tokens = np.zeros((2, 4, 4, 3), dtype=np.float32)
    piece = np.full((2, 2, 3), 1.5, dtype=np.float16)
    assert stitch_windows(tokens, [((0, 2, 2, 4), piece)]) is tokens
    assert (tokens[:, :2, 2:] == 1.5).all() and tokens.sum() == 2 * 4 * 3 * 1.5
    batched = torch.zeros(2, 4, 4, 3)
    per_image = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 2, 4, 3)
    stitch_windows(batched, [((2, 0, 4, 4), per_image)])
    assert batched[1, 2:].eq(1).all() and batched[0].eq(0).all() and batched[:, :2].eq(0).all()
    # A crop with a 1-token halo starting at token (3, 5): the window's own 2 x 2 tokens sit at (1, 1).
    crop = np.arange(4 * 4).reshape(4, 4, 1)
    np.testing.assert_array_equal(own_tokens(crop, (4, 6, 6, 8), (3, 5)), crop[1:3, 1:3])
