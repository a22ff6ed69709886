"""The recorder alone: the run record built from a plan and from what the round runner reports, its ledger
line, its round timings, and the performance benchmark reading those timings from a real request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine_fakes import IMAGE_SIZE, OffsetExecutor
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.estimates import PerfTable
from pedvit.edge.executors import ExecutorFailure
from pedvit.edge.ledger import Ledger, check_record, read_ledger
from pedvit.edge.planner import Planner
from pedvit.edge.recorder import RunIdentity, RunRecorder
from pedvit.eval.perf_bench import CodecSpeed, measure_split
from pedvit.partition import Constraints, WindowGrid
from pedvit.plans.plans import make_plan
from pedvit.plans.stages import TINYVIT_TRUNK

IDENTITY = RunIdentity("mobile_sam", "tinyvit-isolated", "interleaved", "float16", 0, 14)


def recorder(keep_local: frozenset[int] = frozenset()) -> RunRecorder:
    grid = WindowGrid(IMAGE_SIZE)
    plan = Planner(make_plan("tinyvit-isolated"), scheme="interleaved", base_constraints=Constraints(keep_local=keep_local),
                   keep_local_classes=None, scheduling="static", allow_local=True, seed=None, perf=PerfTable(),
                   hide_positions=True).plan_request(np.zeros((*IMAGE_SIZE, 3), np.uint8), grid,
                                                     {n: OffsetExecutor(n, 0.0) for n in ("a", "b")})
    return RunRecorder(IDENTITY, plan, grid, IMAGE_SIZE, 0.25)


def test_record_starts_from_the_plan() -> None:
    rec = recorder(keep_local=frozenset({12}))
    record = rec.record
    assert (record.model, record.plan, record.scheme, record.wire_dtype) == ("mobile_sam", "tinyvit-isolated", "interleaved", "float16")
    assert record.image_size == IMAGE_SIZE and record.keep_local == [12] and record.local_windows == {12}
    assert sorted(w for ids in record.assignment.values() for w in ids) == [w for w in range(25) if w != 12]
    assert record.max_windows_per_worker == 12 and set(record.workers) == {"a", "b"}
    assert record.timings == {"assign_s": 0.25} and record.scheduling == "static" and record.rounds == 0
    assert len(record.request_id) == 16 and record.request_id != recorder().record.request_id


def test_reports_build_a_clean_ledger_line(tmp_path: Path) -> None:
    rec = recorder()
    a_windows = rec.record.assignment["a"]
    with rec.round(TINYVIT_TRUNK, positions_hidden=True):
        rec.sent("a", [list(reversed(a_windows))])
        rec.call_cost("a", wall_s=0.5, compute_s=0.25, bytes_sent=100, bytes_received=40)
        rec.sent("b", [rec.record.assignment["b"]])
        rec.worker_failed("b", ExecutorFailure("gone"))
        for wid in rec.record.assignment["b"]:
            rec.failover(wid, TINYVIT_TRUNK, "b", "edge", "ExecutorFailure", to_edge=True)
        row = {"window": a_windows[0], "stage": TINYVIT_TRUNK, "original": "a", "hedge": "edge", "winner": None,
               "after_s": 0.1}
        rec.hedge(row)
        rec.hedge_won(row, "edge")
    rec.finish(1.5, lambda: {"epsilon": 4.0})
    ledger = Ledger(tmp_path / "ledger.jsonl")
    rec.append_to(ledger)
    [line] = list(read_ledger(tmp_path / "ledger.jsonl"))
    assert line.pop("chain") == {"seq": 0, "prev": "0" * 64}  # the first line of a hash-chained ledger
    assert line == json.loads(json.dumps(rec.record.to_dict(rec.grid)))
    assert check_record(line) == []
    a, b = line["workers"]["a"], line["workers"]["b"]
    assert a["sent_order"] == [list(reversed(a_windows))] and a["windows"] == sorted(a_windows)
    assert (a["calls"], a["wall_s"], a["compute_s"], a["bytes_sent"], a["bytes_received"]) == (1, 0.5, 0.25, 100, 40)
    assert b["failed"] and b["errors"] == ["ExecutorFailure: gone"]
    assert line["local_windows"] == sorted(rec.record.assignment["b"]) and len(line["failovers"]) == len(b["windows"])
    assert line["hedges"][0]["winner"] == "edge" and line["rounds"] == 1
    assert line["positions_hidden"] == {TINYVIT_TRUNK: True} and line["timings"]["encode_s"] == 1.5
    assert line["extra"]["dp"] == {"a": {"epsilon": 4.0, "windows": sorted(a_windows)},
                                   "b": {"epsilon": 4.0, "windows": sorted(b["windows"])}}
    assert len(rec.round_seconds) == 1 and rec.round_seconds[0] >= 0.0
    assert "round_seconds" not in line  # round timings are the benchmark's, not the audit record's


def test_benchmark_reads_round_timings_from_the_recorder(mobile_sam: Any, astronaut: np.ndarray) -> None:
    with DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 2), fusion="off") as predictor:
        sample = measure_split(predictor, astronaut, CodecSpeed(0.0))
        recorder = predictor.engine.last_recorder
        assert recorder is not None and recorder.record is predictor.last_run
        assert len(recorder.round_seconds) == recorder.record.rounds >= 1
        assert sample.dispatch_s == sum(recorder.round_seconds) > 0.0
        assert sample.bytes_sent == sum(w.bytes_sent for w in recorder.record.workers.values()) > 0
        assert "_dispatch" not in vars(predictor.engine)  # nothing patched on the engine
