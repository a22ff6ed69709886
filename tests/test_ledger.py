"""`check_ledger` / `pedvit ledger check` on real engine records, clean and tampered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pedvit.cli import main
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.ledger import check_ledger, read_ledger


@pytest.fixture(scope="module")
def clean_ledger(mobile_sam, coffee, tmp_path_factory) -> Path:
    """A ledger with one real request over 4 in-process workers."""
    path = tmp_path_factory.mktemp("ledger") / "ledger.jsonl"
    with DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 4), ledger=path) as p:
        p.set_image(coffee)
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    records = list(read_ledger(src))
    for record in records:
        edit(record)
    dst.write_text("".join(json.dumps(r) + "\n" for r in records))
    return dst


def test_clean_ledger_passes(clean_ledger, capsys):
    assert check_ledger(clean_ledger) == (1, [])
    assert main(["ledger", "check", str(clean_ledger)]) == 0
    assert "1 request(s) checked, 0 violation(s)" in capsys.readouterr().out


def test_worker_with_every_window_is_reported(clean_ledger, tmp_path, capsys):
    def edit(record):
        first = next(iter(record["workers"].values()))
        first["windows"] = list(record["content_windows"])

    bad = _rewrite(clean_ledger, tmp_path / "all.jsonl", edit)
    _, problems = check_ledger(bad)
    assert any("every content window" in p for p in problems)
    assert main(["ledger", "check", str(bad)]) == 1
    assert "VIOLATION" in capsys.readouterr().out


def test_too_many_windows_is_reported(clean_ledger, tmp_path):
    def edit(record):
        name, worker = next(iter(record["workers"].items()))
        others = [w for w in record["content_windows"] if w not in worker["windows"]]
        need = record["max_windows_per_worker"] + 1 - len(worker["windows"])
        worker["windows"] = sorted(worker["windows"] + others[:need])

    _, problems = check_ledger(_rewrite(clean_ledger, tmp_path / "many.jsonl", edit))
    assert any("above the maximum" in p for p in problems)


def test_keep_local_window_sent_is_reported(clean_ledger, tmp_path):
    def edit(record):
        worker = next(iter(record["workers"].values()))
        record["keep_local"] = [worker["windows"][0]]

    _, problems = check_ledger(_rewrite(clean_ledger, tmp_path / "keep.jsonl", edit))
    assert any("keep-local" in p for p in problems)


def test_hidden_positions_map_is_recorded_and_checked(clean_ledger, tmp_path):
    (record,) = read_ledger(clean_ledger)
    assert any(record["positions_hidden"].values()), "tinyvit-isolated hides positions by default"
    for worker in record["workers"].values():
        assert sorted(w for call in worker["sent_order"] for w in call) == worker["windows"]

    def edit(record):
        worker = next(w for w in record["workers"].values() if len(w["sent_order"][0]) > 1)
        worker["sent_order"][0] = worker["sent_order"][0][1:]  # a window whose answer cannot be placed

    _, problems = check_ledger(_rewrite(clean_ledger, tmp_path / "map.jsonl", edit))
    assert any("window map" in p for p in problems)


def test_unreadable_ledger_exit_2(tmp_path, capsys):
    assert main(["ledger", "check", str(tmp_path / "missing.jsonl")]) == 2
    (tmp_path / "junk.jsonl").write_text("not json\n")
    assert main(["ledger", "check", str(tmp_path / "junk.jsonl")]) == 2
    assert "malformed" in capsys.readouterr().err
