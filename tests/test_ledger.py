"""`check_ledger` / `pedvit ledger check` on real engine records, clean and tampered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pedvit.cli import main
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.ledger import Ledger, LedgerPolicy, check_ledger, ledger_head, read_ledger


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


KEY = b"edge-held secret"


@pytest.fixture()
def chained(clean_ledger, tmp_path) -> Path:
    """Three real engine records appended through a keyed ledger (distinct request ids)."""
    (record,) = read_ledger(clean_ledger)
    record.pop("chain")
    path = tmp_path / "chained.jsonl"
    ledger = Ledger(path, key=KEY)
    for i in range(3):
        ledger.append({**record, "request_id": f"r{i}"})
    return path


def _lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records))
    return path


def test_chained_ledger_verifies_with_and_without_key(chained, capsys):
    assert check_ledger(chained, key=KEY) == (3, [])
    assert check_ledger(chained) == (3, [])
    assert [r["chain"]["seq"] for r in read_ledger(chained)] == [0, 1, 2]
    assert main(["ledger", "check", str(chained)]) == 0
    assert "head" in capsys.readouterr().out


def test_two_writers_keep_one_chain(clean_ledger, tmp_path):
    (record,) = read_ledger(clean_ledger)
    path = tmp_path / "two.jsonl"
    a, b = Ledger(path, key=KEY), Ledger(path, key=KEY)
    for i in range(4):
        (a if i % 2 else b).append({**record, "request_id": f"r{i}"})
    assert check_ledger(path, key=KEY) == (4, [])


@pytest.mark.parametrize("tamper", ["edit_id", "edit_size", "delete", "reorder", "move_window", "whole_image",
                                    "edit_last"])
def test_every_tampering_is_caught(chained, tmp_path, tamper, capsys):
    records = _lines_of(chained)
    if tamper == "edit_id":
        records[1]["request_id"] = "forged"
    elif tamper == "edit_size":
        records[0]["image_size"] = [1, 1]
    elif tamper == "delete":
        del records[1]
    elif tamper == "reorder":
        records[0], records[1] = records[1], records[0]
    elif tamper == "move_window":  # consistently, in the worker list and the assignment
        (a, wa), (b, wb) = list(records[0]["workers"].items())[:2]
        moved = wa["windows"].pop()
        wb["windows"] = sorted(wb["windows"] + [moved])
        records[0]["assignment"][a].remove(moved)
        records[0]["assignment"][b] = sorted(records[0]["assignment"][b] + [moved])
    elif tamper == "whole_image":  # and the record's own limit raised to match
        worker = next(iter(records[0]["workers"].values()))
        worker["windows"] = list(records[0]["content_windows"])
        records[0]["max_windows_per_worker"] = len(worker["windows"])
    elif tamper == "edit_last":  # no later record: only the MAC catches it
        records[-1]["request_id"] = "forged"
    bad = _write(tmp_path / f"{tamper}.jsonl", records)
    _, problems = check_ledger(bad, key=KEY)
    assert problems, tamper
    assert main(["ledger", "check", "--key-file", str(_key_file(tmp_path)), str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.count("VIOLATION") == len(problems)


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.key"
    path.write_bytes(KEY)
    return path


def test_cut_end_caught_against_a_kept_head(chained, tmp_path):
    count, head = ledger_head(chained)
    assert count == 3
    records = _lines_of(chained)
    cut = _write(tmp_path / "cut.jsonl", records[:2])
    assert check_ledger(cut, key=KEY) == (2, [])  # a shorter chain is still a valid chain ...
    _, problems = check_ledger(cut, key=KEY, head=head)  # ... but no longer reaches the head kept elsewhere
    assert any("never reaches the head" in p for p in problems)


def test_policy_comes_from_the_auditor(chained, tmp_path):
    (record, *_) = _lines_of(chained)
    biggest = max(len(w["windows"]) for w in record["workers"].values())
    _, problems = check_ledger(chained, LedgerPolicy(max_windows_per_worker=biggest - 1), key=KEY)
    assert any("above the maximum" in p for p in problems)
    _, problems = check_ledger(chained, LedgerPolicy(max_share=0.1), key=KEY)
    assert any("maximum share" in p for p in problems)
    _, problems = check_ledger(chained, LedgerPolicy(keep_local_classes=("faces", "people")), key=KEY)
    assert any("people did not run" in p for p in problems)
    assert check_ledger(chained, LedgerPolicy(max_windows_per_worker=biggest, max_share=0.5), key=KEY)[1] == []
    record.pop("chain")
    record.setdefault("extra", {})["sensitive"] = {"keep_local_classes": ["faces", "text"]}
    Ledger(tmp_path / "semantic.jsonl", key=KEY).append(record)
    assert check_ledger(tmp_path / "semantic.jsonl", LedgerPolicy(keep_local_classes=("faces", "text")), key=KEY)[1] == []


def test_wrong_key_and_unchained_records_are_violations(chained, clean_ledger, tmp_path):
    _, problems = check_ledger(chained, key=b"another key")
    assert len(problems) == 3 and all("MAC" in p for p in problems)
    records = _lines_of(chained)
    for r in records:
        r.pop("chain")
    _, problems = check_ledger(_write(tmp_path / "plain.jsonl", records))
    assert len(problems) == 3 and all("no chain" in p for p in problems)
