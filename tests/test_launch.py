"""`pedvit.cloud.launch`: the one launcher of worker processes (ready line, failures, shutdown), driven with
small Python processes that behave like a worker's start-up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pedvit.cloud.launch import (LaunchError, parse_ready_line, ready_line, spawn_worker, start_worker, stop_workers,
                                 wait_ready, worker_argv)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_ready_line_round_trip_and_other_lines() -> None:
    assert ready_line(50051) == "PEDVIT_WORKER_READY port=50051"
    assert parse_ready_line(ready_line(7)) == 7
    assert parse_ready_line("PEDVIT_WORKER_READY port=8 extra") == 8
    assert parse_ready_line("INFO worker serving on 127.0.0.1:9") is None
    assert parse_ready_line("PEDVIT_WORKER_READYport=9") is None


def test_worker_argv_runs_the_pedvit_command() -> None:
    argv = worker_argv("vit_b", host="0.0.0.0", port=5, token_file="t.txt", device="cuda", threads=3, extra_args=["--x", 1])
    assert argv[1:4] == ["-m", "pedvit", "worker"]
    assert argv[argv.index("--model") + 1] == "vit_b" and argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--token-file") + 1] == "t.txt" and argv[argv.index("--threads") + 1] == "3"
    assert argv[-2:] == ["--x", "1"] and "--tls-cert" not in argv and "--checkpoint" not in argv


def test_waits_for_every_ready_line_then_stops_the_process_groups(tmp_path: Path) -> None:
    # The first process prints some output, then its ready line late; the second at once.
    slow = python("import time; print('loading', flush=True); time.sleep(0.5); print('PEDVIT_WORKER_READY port=41', flush=True);"
                  " time.sleep(60)")
    fast = python("import time; print('PEDVIT_WORKER_READY port=42', flush=True); time.sleep(60)")
    workers = [spawn_worker(slow, tmp_path / "a.log", name="a", own_session=True),
               spawn_worker(fast, tmp_path / "b.log", name="b", env={"PEDVIT_TEST": "1"})]
    try:
        wait_ready(workers, timeout_s=60)
        assert [w.address for w in workers] == ["127.0.0.1:41", "127.0.0.1:42"]
        assert "loading" in workers[0].log_tail()
    finally:
        stop_workers(workers, timeout_s=5)
    assert all(w.process.poll() is not None for w in workers)


def test_a_process_that_exits_first_is_reported_with_its_output(tmp_path: Path) -> None:
    crash = python("import sys; print('cannot load the model', file=sys.stderr); sys.exit(3)")
    with pytest.raises(LaunchError, match=r"(?s)exited with code 3 before it was ready.*cannot load the model"):
        start_worker(crash, tmp_path / "c.log", name="c", timeout_s=60)


def test_a_process_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    never = python("import time; print('still loading', flush=True); time.sleep(60)")
    worker = spawn_worker(never, tmp_path / "n.log", name="n")
    with pytest.raises(LaunchError, match=r"(?s)1 worker\(s\) not ready after 5 s \(e.g. n\).*still loading"):
        try:
            wait_ready([worker], timeout_s=5.0)
        finally:
            stop_workers([worker], timeout_s=5)
    assert worker.process.poll() is not None
