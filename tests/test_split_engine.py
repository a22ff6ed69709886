"""The split engine computes what the monolithic model computes (exact plans), keeps sensitive windows on
the edge, never sends pure-padding windows, and rejects bad configurations before sending anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import reference_sam
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.engine import EDGE, PrivacyConstraintError, RunRecord
from pedvit.edge.executors import InProcessExecutor
from pedvit.edge.ledger import check_ledger
from pedvit.edge.predictor import SamPredictor
from pedvit.models import Sam
from pedvit.models.image_encoder_vit import ImageEncoderViT
from pedvit.models.registry import ENCODERS, build_sam
from pedvit.partition import SCHEMES, ConstraintError, Constraints, WindowGrid, assign
from pedvit.partition.constraints import Adjacency
from pedvit.plans.plans import TinyViTIsolated, ViTExact, make_plan


def small_vit(seed: int = 0) -> Sam:
    """A small random SAM ViT (same structure as ViT-B: window blocks, two global blocks, neck, heads)."""
    model = build_sam("vit_small_test", ImageEncoderViT(embed_dim=64, depth=6, num_heads=2, global_attn_indexes=(2, 5)))
    model.load_state_dict(reference_sam.randomize_(model, seed))
    return model.eval()


@pytest.fixture(scope="module")
def vit_small() -> Sam:
    return small_vit()


def window_ids_of(executor: InProcessExecutor, grid: WindowGrid, halo_px: int = 0, record: RunRecord | None = None) -> set[int]:
    """Window ids an executor received, from the origins in the recorded meta (crop origins with halo
    are clipped to the input, so they are matched against `crop_box` of every window). Calls of a stage that
    ran with hidden positions carry no origins: their ids come from the edge's map, `record`'s `sent_order`
    (which `test_position_hiding.py` checks against the pixels the worker received)."""
    by_origin = {grid.crop_box(w.id, halo_px)[:2]: w.id for w in grid.windows}
    token_origin = {w.token_box[:2]: w.id for w in grid.windows}
    hidden_calls = iter(record.workers[executor.name].sent_order) if record is not None else iter(())
    out = set()
    for stage, _batch, meta in executor.received:
        if record is not None and record.positions_hidden.get(stage):
            out.update(next(hidden_calls))
            continue
        table = token_origin if stage.startswith("vit.blocks") else by_origin
        for oy, ox, _, _ in meta.tolist():
            out.add(table[(oy, ox)])
    return out


PROMPTS = [
    {"point_coords": np.array([[200.0, 150.0]]), "point_labels": np.array([1])},
    {"point_coords": np.array([[400.0, 300.0], [100.0, 50.0]]), "point_labels": np.array([1, 0])},
    {"box": np.array([50.0, 60.0, 350.0, 330.0])},
]


def assert_same_as_monolithic(model: Sam, plan: str, image: np.ndarray, n_workers: int, scheme: str, mono: SamPredictor, check_masks: bool = True) -> None:
    dist = DistributedSamPredictor(model, in_process_workers(model, n_workers), plan=plan, scheme=scheme, wire_dtype="float32", seed=0)
    try:
        dist.set_image(image)
        diff = (dist.get_image_embedding() - mono.get_image_embedding()).abs().max().item()
        assert diff <= 1e-4, f"{plan} {scheme} x{n_workers}: embedding differs by {diff}"
        for prompt in PROMPTS if check_masks else []:
            assert np.array_equal(mono.predict(**prompt, multimask_output=False)[0], dist.predict(**prompt, multimask_output=False)[0])
        assert dist.last_run is not None
        sent = set().union(*(set(ids) for ids in dist.last_run.assignment.values()))
        assert sent, "nothing was sent to a worker"
    finally:
        dist.close()


@pytest.mark.parametrize("plan", ["vit-exact", "vit-isolated"])
def test_small_vit_plans_equal_monolithic_for_every_scheme_and_worker_count(vit_small: Sam, coffee: np.ndarray, plan: str) -> None:
    mono = SamPredictor(vit_small)
    mono.set_image(coffee)
    # Every scheme; worker counts 2/3 (vit-exact) and 5 (vit-isolated) keep the runtime small on 2 cores.
    counts = (3,) if plan == "vit-exact" else (5,)
    for scheme in SCHEMES:
        for n_workers in counts:
            assert_same_as_monolithic(vit_small, plan, coffee, n_workers, scheme, mono, check_masks=scheme == "interleaved")
    if plan == "vit-exact":
        assert_same_as_monolithic(vit_small, plan, coffee, 2, "random", mono, check_masks=False)


@pytest.mark.slow
def test_full_size_vit_b_plans_equal_monolithic(coffee: np.ndarray) -> None:
    """Full-size ViT-B (random weights): both exact plans reproduce the monolithic embedding and masks."""
    model = build_sam("vit_b", ENCODERS["vit_b"]())
    model.load_state_dict(reference_sam.randomize_(model, 1))
    model.eval()
    mono = SamPredictor(model)
    mono.set_image(coffee)
    assert_same_as_monolithic(model, "vit-exact", coffee, 3, "interleaved", mono)
    assert_same_as_monolithic(model, "vit-isolated", coffee, 4, "random", mono)


@pytest.mark.slow
def test_semantic_scheme_keeps_faces_on_the_edge(mobile_sam: Sam, astronaut: np.ndarray) -> None:
    workers = in_process_workers(mobile_sam, 3, record_inputs=True)
    dist = DistributedSamPredictor(mobile_sam, workers, plan="tinyvit-isolated", scheme="semantic", fusion="off", seed=0)
    dist.set_image(astronaut)
    record, grid = dist.last_run, dist.engine.last_grid
    assert record is not None and grid is not None
    assert record.keep_local, "the Haar detector found no face on astronaut"
    face_windows = set(record.keep_local)
    assert face_windows <= record.local_windows
    # The astronaut's face is around x=180..260, y=40..140 in the 512 px photo.
    assert grid.window_at_point(220, 90) in face_windows
    for worker in workers:
        got = window_ids_of(worker, grid, record=record)
        assert got, f"{worker.name} received nothing"
        assert not got & face_windows, f"{worker.name} received face windows {got & face_windows}"
    masks, scores, _ = dist.predict(point_coords=np.array([[220.0, 90.0]]), point_labels=np.array([1]))
    assert masks.shape == (3, 512, 512) and masks.any(axis=(1, 2)).all()
    dist.close()


def test_padding_windows_are_never_sent(vit_small: Sam, astronaut: np.ndarray) -> None:
    photo = np.ascontiguousarray(astronaut[:384])  # 384 x 512 (4:3) -> 768 x 1024: the bottom row is padding
    grid = WindowGrid(photo.shape[:2])
    assert len(grid.padding_ids) == 5
    for plan in ("vit-exact", "vit-isolated"):
        workers = in_process_workers(vit_small, 3, record_inputs=True)
        with DistributedSamPredictor(vit_small, workers, plan=plan, wire_dtype="float32", seed=0) as dist:
            dist.set_image(photo)
        seen = set().union(*(window_ids_of(w, grid) for w in workers))
        assert seen == set(grid.content_ids), plan
        assert not seen & set(grid.padding_ids)


@pytest.mark.slow
def test_tinyvit_padding_windows_are_never_sent(mobile_sam: Sam, astronaut: np.ndarray) -> None:
    photo = np.ascontiguousarray(astronaut[:384])
    grid = WindowGrid(photo.shape[:2])
    workers = in_process_workers(mobile_sam, 3, record_inputs=True)
    with DistributedSamPredictor(mobile_sam, workers, plan="tinyvit-isolated", halo_px=32, fusion="off", seed=0) as dist:
        dist.set_image(photo)
    seen = set().union(*(window_ids_of(w, grid, 32, dist.last_run) for w in workers))
    assert seen == set(grid.content_ids)


# ------------------------------------------------------------------------------------ failover
# A 100 x 1000 photo is one row of five content windows 0..4 (each next to its row neighbours only). With one
# of them kept local and three workers, "interleaved" gives every worker at most 2 windows, no adjacent pair.
ROW_SHAPE = (100, 1000)


@pytest.fixture(scope="module")
def row_photo() -> np.ndarray:
    return (np.random.default_rng(0).random((*ROW_SHAPE, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def row_reference(vit_small: Sam, row_photo: np.ndarray) -> torch.Tensor:
    """The embedding computed by the edge alone (no workers)."""
    with DistributedSamPredictor(vit_small, [], plan="vit-isolated") as dist:
        dist.set_image(row_photo)
        return dist.get_image_embedding().clone()


def workers_with_failure(model: Sam, failed: int) -> list[InProcessExecutor]:
    workers = in_process_workers(model, 3, record_inputs=True)
    workers[failed].fail = True
    return workers


def encode_row(model: Sam, photo: np.ndarray, workers: list[InProcessExecutor], *, keep: int, adjacency: Adjacency,
               allow_local: bool, ledger: Path | None = None) -> tuple[RunRecord, torch.Tensor]:
    constraints = Constraints(adjacency=adjacency, keep_local=frozenset({keep}), allow_local=allow_local)
    with DistributedSamPredictor(model, workers, plan="vit-isolated", scheme="interleaved", constraints=constraints,
                                 allow_local=allow_local, wire_dtype="float32", ledger=ledger) as dist:
        dist.set_image(photo)
        assert dist.last_run is not None
        return dist.last_run, dist.get_image_embedding().clone()


def moves(record: RunRecord) -> list[tuple[int, str, str]]:
    return [(f["window"], f["from"], f["to"]) for f in record.failovers]


def test_failover_relaxes_prefer_adjacency_when_local_compute_is_forbidden(
        vit_small: Sam, row_photo: np.ndarray, row_reference: torch.Tensor, tmp_path: Path) -> None:
    """Adjacency "prefer" is soft: the failed worker's window goes to the only worker with share left, although it holds
    the window's neighbour, because the edge may not compute; the relaxation is noted, the ledger is clean."""
    workers = workers_with_failure(vit_small, 1)
    ledger = tmp_path / "ledger.jsonl"
    record, embedding = encode_row(vit_small, row_photo, workers, keep=1, adjacency="prefer", allow_local=False,
                                   ledger=ledger)
    assert record.assignment == {"inproc0": [0, 2], "inproc1": [3], "inproc2": [4]}  # inproc0 is at its cap
    assert moves(record) == [(3, "inproc1", "inproc2")]
    assert window_ids_of(workers[2], WindowGrid(ROW_SHAPE)) == {3, 4}
    assert any(n.startswith("window 3 failed over to inproc2 next to its window(s) 4")
               and "adjacency 'prefer' relaxed" in n for n in record.notes), record.notes
    assert record.adjacent_pairs(WindowGrid(ROW_SHAPE)) == {"inproc2": [[3, 4]]}
    assert check_ledger(ledger) == (1, [])  # an adjacency under "prefer" is no violation
    assert (embedding - row_reference).abs().max().item() <= 1e-4


def test_failover_keeps_required_adjacency(vit_small: Sam, row_photo: np.ndarray) -> None:
    """Adjacency "require" stays hard: the same failure is refused rather than giving inproc2 window 3 next to its 4."""
    grid = WindowGrid(ROW_SHAPE)
    strict = Constraints(adjacency="require", keep_local=frozenset({1}), allow_local=False)
    assert assign(grid, 3, "interleaved", constraints=strict).worker_windows == {0: (0, 2), 1: (3,), 2: (4,)}
    workers = workers_with_failure(vit_small, 1)
    with pytest.raises(PrivacyConstraintError, match="allow_local=False"):
        encode_row(vit_small, row_photo, workers, keep=1, adjacency="require", allow_local=False)
    # (Which other calls ran before the error is a race; that none got window 3 is not.)
    assert not any(3 in window_ids_of(w, grid) for w in workers)


def test_failover_prefers_a_non_adjacent_worker(vit_small: Sam, row_photo: np.ndarray, row_reference: torch.Tensor,
                                                tmp_path: Path) -> None:
    """Window 1 goes to inproc2 (not next to it) although inproc1 (next to it) ranks first otherwise; window 3
    then has only inproc1 (next to its 2) left and takes it, relaxed."""
    workers = workers_with_failure(vit_small, 0)
    ledger = tmp_path / "ledger.jsonl"
    record, embedding = encode_row(vit_small, row_photo, workers, keep=0, adjacency="prefer", allow_local=False,
                                   ledger=ledger)
    assert record.assignment == {"inproc0": [1, 3], "inproc1": [2], "inproc2": [4]}
    assert moves(record) == [(1, "inproc0", "inproc2"), (3, "inproc0", "inproc1")]
    relaxed = [n for n in record.notes if "relaxed" in n]
    assert len(relaxed) == 1 and relaxed[0].startswith("window 3 failed over to inproc1 next to its window(s) 2")
    assert record.adjacent_pairs(WindowGrid(ROW_SHAPE)) == {"inproc1": [[2, 3]]}
    assert check_ledger(ledger) == (1, [])
    assert (embedding - row_reference).abs().max().item() <= 1e-4


def test_failover_goes_to_the_edge_before_relaxing_prefer(vit_small: Sam, row_photo: np.ndarray,
                                                         row_reference: torch.Tensor) -> None:
    """With local compute allowed the (always privacy-safe) edge takes the window instead of inproc2."""
    workers = workers_with_failure(vit_small, 1)
    record, embedding = encode_row(vit_small, row_photo, workers, keep=1, adjacency="prefer", allow_local=True)
    assert record.assignment == {"inproc0": [0, 2], "inproc1": [3], "inproc2": [4]}
    assert moves(record) == [(3, "inproc1", EDGE)]
    assert window_ids_of(workers[2], WindowGrid(ROW_SHAPE)) == {4}
    assert not any("relaxed" in n for n in record.notes)
    assert (embedding - row_reference).abs().max().item() <= 1e-4


# ------------------------------------------------------------------------------------ bad configs
def test_plan_model_mismatch_raises_before_sending(vit_small: Sam, mobile_sam: Sam) -> None:
    workers = in_process_workers(vit_small, 2, record_inputs=True)
    with pytest.raises(ValueError, match="MobileSAM"):
        DistributedSamPredictor(vit_small, workers, plan="tinyvit-isolated")
    with pytest.raises(ValueError, match="SAM ViT"):
        DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 2), plan="vit-exact")
    assert all(not w.received for w in workers)


@pytest.mark.parametrize("halo", [8, 20, -16])
def test_bad_halo_raises(halo: int) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        make_plan("tinyvit-isolated", halo_px=halo)
    with pytest.raises(ValueError, match="multiple of 16"):
        TinyViTIsolated(halo_px=halo)


def test_halo_on_vit_plan_and_unknown_plan_raise() -> None:
    with pytest.raises(ValueError, match="takes no halo"):
        make_plan("vit-exact", halo_px=32)
    with pytest.raises(ValueError, match="unknown plan"):
        make_plan("vit-magic")
    assert isinstance(make_plan("vit-exact"), ViTExact)


def test_impossible_constraints_raise_before_sending(vit_small: Sam, coffee: np.ndarray) -> None:
    workers = in_process_workers(vit_small, 2, record_inputs=True)
    # Two workers cannot hold 20 content windows without adjacent pairs when the edge may compute nothing.
    strict = Constraints(adjacency="require", allow_local=False)
    with DistributedSamPredictor(vit_small, workers, plan="vit-isolated", constraints=strict, allow_local=False) as dist:
        with pytest.raises(ConstraintError):
            dist.set_image(coffee)
    assert all(not w.received for w in workers)
    # No workers at all and no local compute.
    with DistributedSamPredictor(vit_small, [], plan="vit-isolated", allow_local=False) as dist:
        with pytest.raises(ConstraintError, match="workers"):
            dist.set_image(coffee)


def test_bad_wire_dtype_raises(vit_small: Sam) -> None:
    with pytest.raises(ValueError, match="wire_dtype"):
        DistributedSamPredictor(vit_small, in_process_workers(vit_small, 2), plan="vit-exact", wire_dtype="int8")


@pytest.mark.slow
def test_pedvit_plans_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """`pedvit plans` prints every plan, says vit-exact is NOT isolated, and gives FLOP shares."""
    import json

    from pedvit.cli import main

    assert main(["plans", "--plan", "vit-exact", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["isolated"] is False and rows[0]["exact"] is True
    # ViT-B: the edge runs 4 global blocks + the neck; the workers 8 window blocks + the patch embedding.
    assert 0.35 < rows[0]["edge_share"] < 0.5
    assert main(["plans", "--plan", "vit-isolated", "--model", "vit_b"]) == 0
    text = capsys.readouterr().out
    assert "isolated:        yes" in text and "edge share" in text


def test_build_plan_resolves_names_defaults_and_fusion() -> None:
    """The builder (`pedvit.edge.build`) behind the predictor, `pedvit segment`, `pedvit demo` and `pedvit plans`."""
    import torch

    from pedvit.edge.build import WorkerSource, build_plan, resolve_fusion
    from pedvit.plans.fusion import load_default_fusion
    from pedvit.plans.plans import TinyViTIsolated, ViTExact

    default = build_plan(None, "mobile_sam", halo_px=32)
    assert isinstance(default, TinyViTIsolated) and default.halo_px == 32
    shipped = load_default_fusion()
    assert (default.fusion is None) == (shipped is None)
    if shipped is not None:
        assert default.fusion.config == shipped.config and default.window_adapter is not None
    assert build_plan("tinyvit-isolated", "mobile_sam", fusion="off").fusion is None
    module = torch.nn.Identity()
    assert build_plan("tinyvit-isolated", "mobile_sam", fusion=module).fusion is module
    assert isinstance(build_plan(None, "vit_b"), ViTExact)
    assert build_plan(default, "vit_b") is default  # a plan object is used as it is
    assert resolve_fusion("vit-exact", "auto") is None
    with pytest.raises(ValueError, match="fusion must be"):
        resolve_fusion("tinyvit-isolated", "on")
    with pytest.raises(ValueError, match="takes no halo"):
        build_plan("vit-exact", "vit_b", halo_px=16)
    assert [WorkerSource(in_process=2).mode, WorkerSource(addresses=("h:1",)).mode, WorkerSource(cluster_file="c").mode,
            WorkerSource().mode] == ["in-process", "workers", "cluster", "local"]
