"""Edge fusion for tinyvit-isolated (`pedvit.plans.fusion`)."""

from __future__ import annotations

import copy

import pytest
import torch

from pedvit.plans.flops import context_flops, fusion_flops
from pedvit.plans.fusion import DEFAULT_WEIGHTS, SeamFusion, load_default_fusion, save_fusion


def test_untrained_fusion_is_identity() -> None:
    torch.manual_seed(0)
    module = SeamFusion().eval()
    x = torch.randn(2, 320, 64, 64) * 5
    with torch.no_grad():
        assert torch.equal(module(x), x)
        # Not trivially the identity: once the zero-initialised projection is trained, features change.
        for block in module.blocks:
            torch.nn.init.normal_(block.up.weight, std=0.02)
        assert not torch.allclose(module(x), x)


def test_untrained_fusion_with_mlp_is_identity() -> None:
    module = SeamFusion(hidden=32, depth=2, mlp_ratio=2).eval()
    x = torch.randn(1, 320, 28, 28)
    with torch.no_grad():
        assert torch.equal(module(x), x)
    assert module.blocks[0].up.in_channels == 64


def _reference_forward(module: SeamFusion, x: torch.Tensor) -> torch.Tensor:
    """The blocks written as plain NCHW convolutions (what the parameters mean), for the layout test."""
    for b in module.blocks:
        h, w = x.shape[-2:]
        t = b.window_tokens
        pos = b.pos.repeat(1, 1, -(-h // t), -(-w // t))[..., :h, :w]
        y = b.act(b.dw1(b.down(b.norm(x)) + pos))
        x = x + b.up(b.mlp(b.act(b.dw2(y))))
    return x


@pytest.mark.parametrize("hw", [(64, 64), (28, 28), (31, 46)])
@pytest.mark.parametrize("mlp_ratio", [0.0, 2.0])
def test_token_layout_forward_equals_convolutions(hw: tuple[int, int], mlp_ratio: float) -> None:
    """The channel-last forward (matmuls, dilated depthwise split into sub-grids) computes exactly what the
    stored convolutions define, for map sizes that are and are not multiples of the dilation; so do the
    gradients (training uses the same forward)."""
    torch.manual_seed(2)
    module = SeamFusion(hidden=32, depth=2, mlp_ratio=mlp_ratio)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 320, *hw, requires_grad=True)
    fast, ref = module(x), _reference_forward(module, x)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(ref)
    grads_fast = torch.autograd.grad(fast, [x, *module.parameters()], g)
    grads_ref = torch.autograd.grad(ref, [x, *module.parameters()], g)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_receptive_field_crosses_window_borders() -> None:
    torch.manual_seed(0)
    module = SeamFusion(depth=1).eval()
    torch.nn.init.normal_(module.blocks[0].up.weight, std=0.1)
    x = torch.zeros(1, 320, 64, 64, requires_grad=True)
    y = module(x)
    y[0, :, 13, 13].sum().backward()  # last token of window (0, 0)
    reach = x.grad.abs().sum(dim=(0, 1)) > 0
    assert reach[13, 14 + 10] and reach[14 + 10, 13]  # 11 tokens into the neighbouring windows


def test_context_fusion_is_identity_until_trained_and_then_uses_the_context() -> None:
    """With a context pass the untrained module is still the identity; once trained, the coarse whole-image
    features reach every token (also tokens far from where a context cell is), and a missing context is a
    clear error rather than a silent no-context run."""
    torch.manual_seed(3)
    module = SeamFusion(hidden=32, depth=2, context_px=224).eval()
    x, context = torch.randn(1, 320, 64, 64), torch.randn(1, 320, 14, 14, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(module(x, context), x)
    with pytest.raises(ValueError, match="224 px context"):
        module(x)
    for block in module.blocks:
        torch.nn.init.normal_(block.up.weight, std=0.02)
    y = module(x, context)
    y[0, :, 63, 63].sum().backward()
    assert context.grad[0, :, 13, 13].abs().sum() > 0  # the corner token reads the corner context cell
    assert context.grad[0, :, 0, 0].abs().sum() == 0  # ... and, with a 25-token field, not the far corner
    with pytest.raises(ValueError, match="multiple of 16"):
        SeamFusion(context_px=100)


def test_context_fusion_roundtrip_and_flops(tmp_path) -> None:
    """context_px travels in the saved config (old configs without it load as context-free); FLOPs of the
    module and of its context pass are counted separately."""
    from pedvit.models import build_model

    module = SeamFusion(hidden=32, depth=1, context_px=224)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.02)
    save_fusion(module, tmp_path / "c.pt")
    loaded = load_default_fusion(tmp_path / "c.pt")
    assert loaded is not None and loaded.context_px == 224
    x, context = torch.randn(1, 320, 28, 28), torch.randn(1, 320, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, context), module(x, context))
    assert "context_px" not in SeamFusion().config  # files written before the option look the same as ever
    from pedvit.plans.flops import count_flops

    model = copy.deepcopy(build_model("mobile_sam")).to("meta")  # count without computing
    encoder_flops = count_flops(lambda: model.image_encoder(torch.empty(1, 3, 1024, 1024, device="meta")))
    assert context_flops(model, SeamFusion()) == 0
    assert 0.02 * encoder_flops < context_flops(model, module) < 0.05 * encoder_flops  # the documented ~4 %
    assert fusion_flops(module) > fusion_flops(SeamFusion(hidden=32, depth=1))


def test_save_load_roundtrip_strict(tmp_path) -> None:
    torch.manual_seed(1)
    module = SeamFusion(hidden=32, depth=1)
    for block in module.blocks:
        torch.nn.init.normal_(block.up.weight, std=0.02)
    path = tmp_path / "f.pt"
    save_fusion(module, path, {"seed": 1})
    loaded = load_default_fusion(path)
    assert loaded is not None and (tmp_path / "f.json").is_file()
    x = torch.randn(1, 320, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x))
    assert load_default_fusion(tmp_path / "missing.pt") is None
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["extra"] = torch.zeros(1)
    torch.save(blob, path)
    with pytest.raises(RuntimeError):
        load_default_fusion(path)


@pytest.mark.slow
def test_fusion_flops_share(mobile_sam) -> None:
    """Fusion (with its context pass, if any) costs < 20 % of the image encoder's FLOPs.

    To keep the test fast the encoder is bounded from below: 16 full 224 px windows (802,816 of the
    1,048,576 input pixels; TinyViT's per-pixel cost is uniform) through the trunk, plus the neck.
    """
    from torch.utils.flop_counter import FlopCounterMode

    encoder = copy.deepcopy(mobile_sam.image_encoder).to("meta")  # count FLOPs without computing
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        encoder.run_trunk(torch.zeros(1, 3, 224, 224, device="meta"))
        trunk_window = counter.get_total_flops()
        encoder.run_neck(torch.zeros(1, encoder.trunk_channels, 64, 64, device="meta"))
    encoder_lower_bound = 16 * trunk_window + (counter.get_total_flops() - trunk_window)
    module = load_default_fusion() or SeamFusion()
    share = (fusion_flops(module) + context_flops(mobile_sam, module)) / encoder_lower_bound
    assert 0 < share < 0.20


@pytest.mark.slow
def test_default_fusion_brings_masks_closer_to_monolithic_on_held_out_photos(mobile_sam) -> None:
    """Shipped weights load (strict, weights_only), are on by default, and on photos never used in training
    (held out in the weights' metadata) bring the embedding and the point-prompt masks closer to the
    monolithic ones."""
    import json

    import numpy as np

    from pedvit.data import real_photos
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.eval.accuracy import mask_iou
    from pedvit.models.transforms import ResizeLongestSide
    from pedvit.plans.fusion import apply_fusion
    from pedvit.training.features import monolithic_trunk, stitched_fast

    assert DEFAULT_WEIGHTS.is_file(), "the trained fusion weights must ship with the package"
    fusion = load_default_fusion()
    assert fusion is not None
    assert DistributedSamPredictor(mobile_sam, [], plan="tinyvit-isolated").plan.fusion is not None
    held_out = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())["held_out"]
    photos = real_photos(min_count=0, names=["coffee", "chelsea", "grove3"])
    assert all(p.name in held_out for p in photos)
    neck, decoder = mobile_sam.image_encoder.run_neck, mobile_sam.mask_decoder
    transform = ResizeLongestSide(mobile_sam.img_size)
    err, agree = {"off": [], "on": []}, {"off": [], "on": []}
    with torch.inference_mode():
        for photo in photos:
            resized = transform.apply_image(photo.image)
            stitched = stitched_fast(mobile_sam, resized)
            adapted = stitched_fast(mobile_sam, resized, adapter=fusion.window_adapter)  # what the workers then run
            embeddings = {"mono": neck(monolithic_trunk(mobile_sam, resized)), "off": neck(stitched),
                          "on": neck(apply_fusion(mobile_sam, fusion, adapted, resized))}
            h, w = resized.shape[:2]
            grid = torch.tensor([[(i + 0.5) * w / 4, (j + 0.5) * h / 4] for i in range(4) for j in range(4)])[:, None]
            sparse, dense = mobile_sam.prompt_encoder(points=(grid, torch.ones(16, 1, dtype=torch.int64)), boxes=None, masks=None)
            masks = {k: decoder(image_embeddings=e, image_pe=mobile_sam.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False)[0][:, 0, : h // 4, : w // 4] > 0 for k, e in embeddings.items()}
            for k in ("off", "on"):
                err[k].append(float((embeddings[k] - embeddings["mono"]).pow(2).mean()))
                agree[k] += [mask_iou(a.numpy(), b.numpy()) for a, b in zip(masks[k], masks["mono"])]
    assert np.mean(err["on"]) < np.mean(err["off"])
    assert np.mean(agree["on"]) > np.mean(agree["off"]) + 0.05, agree


@pytest.mark.slow
def test_context_fusion_through_the_engine_equals_the_fast_path(mobile_sam) -> None:
    """A fusion with a context pass, inside `tinyvit-isolated` with in-process workers (the context pass runs
    on the edge while the workers compute), gives the embedding the in-process fast path computes; the
    context pass never reaches a worker (each worker still receives only its windows)."""
    from pedvit.data import real_photos
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.models.transforms import ResizeLongestSide
    from pedvit.plans.fusion import apply_fusion
    from pedvit.training.features import stitched_fast

    torch.manual_seed(4)
    module = SeamFusion(hidden=32, depth=1, context_px=224).eval()
    for block in module.blocks:
        torch.nn.init.normal_(block.up.weight, std=0.05)
    image = real_photos(min_count=0, names=["camera"])[0].image
    resized = ResizeLongestSide(mobile_sam.img_size).apply_image(image)
    workers = in_process_workers(mobile_sam, 3, record_inputs=True)
    with DistributedSamPredictor(mobile_sam, workers, plan="tinyvit-isolated", fusion=module, wire_dtype="float32") as predictor:
        predictor.set_image(image)
        got = predictor.get_image_embedding()
        windows = {w.name: sum(len(batch) for _, batch, _ in w.received) for w in workers}
        assert "context pass" in predictor.plan.info().edge_computes
    with torch.inference_mode():
        stitched = stitched_fast(mobile_sam, resized)
        expected = mobile_sam.image_encoder.run_neck(apply_fusion(mobile_sam, module, stitched, resized))
        plain = mobile_sam.image_encoder.run_neck(stitched)
        without = mobile_sam.image_encoder.run_neck(module(stitched, torch.zeros(1, 320, 14, 14)))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)
    # The context pass carries a real part of the fusion's change (not a no-op input).
    assert float((expected - without).abs().max()) > 0.1 * float((expected - plain).abs().max()) > 0
    # camera is square: 25 content windows, each sent exactly once, none to one worker, and nothing else.
    assert sum(windows.values()) == 25 and 0 < max(windows.values()) < 25


def test_448px_windows_through_the_engine_equal_the_fast_path(mobile_sam) -> None:
    """`window_tokens=28`: each worker receives whole 448 px windows (no halo) and the engine's stitched
    embedding is the fast path's with 448 px windows; the ledger record and the plan say so."""
    from pedvit.data import real_photos
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.models.transforms import ResizeLongestSide
    from pedvit.training.features import stitched_fast

    image = real_photos(min_count=0, names=["camera"])[0].image
    resized = ResizeLongestSide(mobile_sam.img_size).apply_image(image)
    workers = in_process_workers(mobile_sam, 3, record_inputs=True)
    with DistributedSamPredictor(mobile_sam, workers, plan="tinyvit-isolated", window_tokens=28, fusion="off",
                                 wire_dtype="float32") as predictor:
        predictor.set_image(image)
        got = predictor.get_image_embedding()
        record = predictor.last_run
        assert "448 px windows" in predictor.plan.info().worker_receives
    assert record is not None and record.window_tokens == 28
    shapes = {batch.shape[1:3] for w in workers for _, batch, _ in w.received}
    # camera is square: a 3 x 3 grid, the last row and column 128 px (1024 = 2 * 448 + 128)
    assert shapes <= {(448, 448), (448, 128), (128, 448), (128, 128)} and (448, 448) in shapes
    assert sum(len(batch) for w in workers for _, batch, _ in w.received) == 9
    with torch.inference_mode():
        expected = mobile_sam.image_encoder.run_neck(stitched_fast(mobile_sam, resized, 448))
        per_224 = mobile_sam.image_encoder.run_neck(stitched_fast(mobile_sam, resized))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)
    assert float((expected - per_224).abs().max()) > 0.1  # the window size really changed the features


def test_window_tokens_must_fit_the_plan() -> None:
    from pedvit.plans.plans import make_plan

    assert make_plan("tinyvit-isolated", window_tokens=28).window_tokens == 28
    for bad in (0, 7, 20, 30):
        with pytest.raises(ValueError, match="multiple of 14"):
            make_plan("tinyvit-isolated", window_tokens=bad)
    with pytest.raises(ValueError, match="14-token windows"):
        make_plan("vit-exact", window_tokens=28)
