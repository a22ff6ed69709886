"""Window adapter: which trunk parameters it may replace, its version id, the adapted worker stage, and the
plan dispatching that stage (workers still receive only their own windows)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pedvit.plans.window_adapter import ADAPTED_STAGE_PREFIX, WindowAdapter, adaptable_parameters, adapted_encoder


def _perturbed_adapter(encoder: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> WindowAdapter:
    gen = torch.Generator().manual_seed(seed)
    params = {n: p.detach() + scale * torch.randn(p.shape, generator=gen) for n, p in adaptable_parameters(encoder).items()}
    return WindowAdapter(params)


def test_only_biases_norms_and_attention_biases_are_adaptable(mobile_sam) -> None:
    params = adaptable_parameters(mobile_sam.image_encoder)
    names = set(params)
    assert not any(n.startswith(("neck.", "head.", "norm_head.")) for n in names)
    # Every kernel and weight matrix stays: an adapter cannot replace what the trunk computes, only shift it.
    for name, p in mobile_sam.image_encoder.named_parameters():
        if p.ndim >= 2 and not name.endswith("attention_biases"):
            assert name not in names, name
    assert any(n.endswith(".bn.weight") for n in names) and any(n.endswith("attention_biases") for n in names)
    total = sum(p.numel() for n, p in mobile_sam.image_encoder.named_parameters() if not n.startswith(("neck.", "head.", "norm_head.")))
    assert 0 < sum(p.numel() for p in params.values()) < 0.02 * total


def test_adapter_validation_and_version_id(mobile_sam) -> None:
    encoder = mobile_sam.image_encoder
    adapter = _perturbed_adapter(encoder)
    assert adapter.stage_name == ADAPTED_STAGE_PREFIX + adapter.adapter_id and len(adapter.adapter_id) == 12
    assert _perturbed_adapter(encoder).adapter_id == adapter.adapter_id  # same values, same id
    assert _perturbed_adapter(encoder, seed=1).adapter_id != adapter.adapter_id
    with pytest.raises(ValueError, match="not an adaptable"):
        WindowAdapter({"neck.0.weight": torch.zeros(256, 320, 1, 1)})
    with pytest.raises(ValueError, match="not an adaptable"):
        WindowAdapter({"layers.1.blocks.0.attn.qkv.weight": torch.zeros(3, 3)})
    name = next(iter(adapter.params))
    with pytest.raises(ValueError, match="non-finite"):
        WindowAdapter({name: torch.full_like(adapter.params[name], float("nan"))})
    with pytest.raises(ValueError, match="shape"):
        WindowAdapter({name: torch.zeros(3)}).apply_(adapted_encoder(encoder, adapter))
    with pytest.raises(ValueError, match="at least one"):
        WindowAdapter({})


def test_adapted_encoder_is_a_cached_copy_and_leaves_the_model_alone(mobile_sam) -> None:
    encoder = mobile_sam.image_encoder
    before = {n: p.clone() for n, p in encoder.named_parameters()}
    adapter = _perturbed_adapter(encoder)
    copy = adapted_encoder(encoder, adapter)
    assert copy is adapted_encoder(encoder, adapter) and copy is not encoder
    for name, p in encoder.named_parameters():
        assert torch.equal(p, before[name]), name
        q = dict(copy.named_parameters())[name]
        assert torch.equal(q, adapter.params[name]) if name in adapter.params else torch.equal(q, p)
    assert WindowAdapter.from_encoder(copy, encoder).adapter_id == adapter.adapter_id


def test_adapted_stage_runs_the_adapted_trunk(mobile_sam) -> None:
    from pedvit.plans.stages import TINYVIT_TRUNK, stages_for_model

    adapter = _perturbed_adapter(mobile_sam.image_encoder)
    stages = stages_for_model(mobile_sam, [adapter])
    assert {TINYVIT_TRUNK, adapter.stage_name} <= set(stages)
    assert adapter.stage_name not in stages_for_model(mobile_sam, [])
    crop = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    meta = np.array([[224, 448, 224, 224]], dtype=np.int32)
    got = stages[adapter.stage_name].run(crop, meta)
    plain = stages[TINYVIT_TRUNK].run(crop, meta)
    x = (torch.from_numpy(crop.astype(np.float32)).permute(0, 3, 1, 2) - mobile_sam.pixel_mean) / mobile_sam.pixel_std
    with torch.inference_mode():
        expected = adapted_encoder(mobile_sam.image_encoder, adapter).run_trunk(x, (224, 448)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.shape == plain.shape == (1, 14, 14, 320) and np.abs(got - plain).max() > 1e-3


def test_fusion_file_carries_its_adapter(tmp_path, mobile_sam) -> None:
    from pedvit.plans.fusion import SeamFusion, load_default_fusion, load_window_adapter, save_fusion

    module = SeamFusion(hidden=16, depth=1)
    assert load_window_adapter(tmp_path / "missing.pt") is None
    save_fusion(module, tmp_path / "plain.pt")
    assert load_default_fusion(tmp_path / "plain.pt").window_adapter is None
    assert load_window_adapter(tmp_path / "plain.pt") is None
    module.window_adapter = _perturbed_adapter(mobile_sam.image_encoder)
    save_fusion(module, tmp_path / "adapted.pt")
    loaded = load_default_fusion(tmp_path / "adapted.pt")
    assert loaded.window_adapter.adapter_id == module.window_adapter.adapter_id
    assert load_window_adapter(tmp_path / "adapted.pt").adapter_id == module.window_adapter.adapter_id


@pytest.mark.slow
def test_plan_with_adapter_through_the_engine_equals_the_fast_path(mobile_sam) -> None:
    """`tinyvit-isolated` with a fusion that carries an adapter dispatches the adapted stage: the embedding
    equals the in-process fast path on the adapted trunk, each worker receives only its own windows, and a
    worker that lacks the adapter fails with a message that names the missing stage."""
    from pedvit.data import real_photos
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.models.transforms import ResizeLongestSide
    from pedvit.plans.fusion import SeamFusion
    from pedvit.training.features import stitched_fast

    torch.manual_seed(5)
    module = SeamFusion(hidden=32, depth=1).eval()
    torch.nn.init.normal_(module.blocks[0].up.weight, std=0.05)
    module.window_adapter = _perturbed_adapter(mobile_sam.image_encoder, seed=3)
    image = real_photos(min_count=0, names=["camera"])[0].image
    resized = ResizeLongestSide(mobile_sam.img_size).apply_image(image)
    workers = in_process_workers(mobile_sam, 3, record_inputs=True, window_adapters=[module.window_adapter])
    with DistributedSamPredictor(mobile_sam, workers, plan="tinyvit-isolated", fusion=module, wire_dtype="float32") as predictor:
        predictor.set_image(image)
        got = predictor.get_image_embedding()
        assert module.window_adapter.adapter_id in predictor.plan.info().worker_receives
    stages = {stage for w in workers for stage, _, _ in w.received}
    assert stages == {module.window_adapter.stage_name}
    assert sum(len(batch) for w in workers for _, batch, _ in w.received) == 25
    with torch.inference_mode():
        expected = mobile_sam.image_encoder.run_neck(module(stitched_fast(mobile_sam, resized, adapter=module.window_adapter)))
        plain = mobile_sam.image_encoder.run_neck(module(stitched_fast(mobile_sam, resized)))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)
    assert float((expected - plain).abs().max()) > 0.01
    lacking = in_process_workers(mobile_sam, 2, window_adapters=[])
    with DistributedSamPredictor(mobile_sam, lacking, plan="tinyvit-isolated", fusion=module, allow_local=False) as predictor:
        with pytest.raises(Exception, match=re.escape(f"does not serve stage '{module.window_adapter.stage_name}'")):
            predictor.set_image(image)


def test_worker_stages_serve_the_given_adapters(tmp_path, mobile_sam) -> None:
    """A worker serves the plain trunk plus one adapted trunk per adapter (`pedvit worker --window-adapter F`);
    a file without an adapter is refused with a clear message."""
    from pedvit.cli.worker import _window_adapters
    from pedvit.plans.fusion import SeamFusion, load_window_adapter, save_fusion
    from pedvit.plans.stages import TINYVIT_TRUNK, build_worker_stages

    module = SeamFusion(hidden=16, depth=1)
    module.window_adapter = _perturbed_adapter(mobile_sam.image_encoder, seed=7)
    save_fusion(module, tmp_path / "custom.pt")
    adapters = _window_adapters([str(tmp_path / "custom.pt")])
    assert adapters[-1].adapter_id == module.window_adapter.adapter_id
    shipped = load_window_adapter()
    assert len(adapters) == 1 + (shipped is not None)
    stages = build_worker_stages("mobile_sam", None, window_adapters=adapters)
    assert set(stages) == {TINYVIT_TRUNK} | {a.stage_name for a in adapters}
    save_fusion(SeamFusion(hidden=16, depth=1), tmp_path / "plain.pt")
    with pytest.raises(SystemExit, match="holds no window adapter"):
        _window_adapters([str(tmp_path / "plain.pt")])
