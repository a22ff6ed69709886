"""Edge fusion for tinyvit-isolated (`pedvit.plans.fusion`)."""

from __future__ import annotations

import copy

import pytest
import torch

from pedvit.plans.fusion import DEFAULT_WEIGHTS, SeamFusion, fusion_flops, load_default_fusion, save_fusion


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


def test_receptive_field_crosses_window_borders() -> None:
    torch.manual_seed(0)
    module = SeamFusion(depth=1).eval()
    torch.nn.init.normal_(module.blocks[0].up.weight, std=0.1)
    x = torch.zeros(1, 320, 64, 64, requires_grad=True)
    y = module(x)
    y[0, :, 13, 13].sum().backward()  # last token of window (0, 0)
    reach = x.grad.abs().sum(dim=(0, 1)) > 0
    assert reach[13, 14 + 10] and reach[14 + 10, 13]  # 11 tokens into the neighbouring windows


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
    """Fusion costs < 20 % of the image encoder's FLOPs.

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
    share = fusion_flops(module) / encoder_lower_bound
    assert 0 < share < 0.20


@pytest.mark.slow
def test_default_fusion_improves_held_out_photo(mobile_sam, coffee) -> None:
    """Shipped weights load (strict, weights_only) and bring the embedding of a held-out photo closer."""
    from pedvit.models.transforms import ResizeLongestSide
    from pedvit.plans.fusion import monolithic_trunk, stitched_fast

    assert DEFAULT_WEIGHTS.is_file(), "the trained fusion weights must ship with the package"
    fusion = load_default_fusion()
    assert fusion is not None
    resized = ResizeLongestSide(mobile_sam.img_size).apply_image(coffee)  # coffee is held out of training
    neck = mobile_sam.image_encoder.run_neck
    with torch.inference_mode():
        stitched = stitched_fast(mobile_sam, resized)
        target = neck(monolithic_trunk(mobile_sam, resized))
        err_off = (neck(stitched) - target).pow(2).mean()
        err_on = (neck(fusion(stitched)) - target).pow(2).mean()
    assert err_on < err_off
