"""`pedvit segment --spot-check P`: a worker answering plausible but wrong features (those of another window,
with the norms the model produces) passes the cheap checks and is caught only by recomputing a window on the
edge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from pedvit.cli import build_parser, main
from pedvit.cloud.worker import WorkerServer, serve
from pedvit.plans.stages import build_worker_stages

pytestmark = pytest.mark.slow


class RotatedWindowStage:
    """TEST ONLY: answers the features of each window rotated by 180 degrees: another window of the same photo,
    so every norm is plausible, but the content is wrong."""

    def __init__(self, honest: Any) -> None:
        self.honest, self.spec = honest, honest.spec

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        return self.honest.run(np.ascontiguousarray(batch[:, ::-1, ::-1]), meta)


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[WorkerServer, WorkerServer]]:
    """(a worker answering rotated windows, an honest worker), on loopback in this process."""
    stages = build_worker_stages("mobile_sam", None)
    hostile = serve(0, {name: RotatedWindowStage(stage) for name, stage in stages.items()}, model_name="mobile_sam")
    honest = serve(0, stages, model_name="mobile_sam")
    try:
        yield hostile, honest
    finally:
        hostile.stop(grace=None)
        honest.stop(grace=None)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("spot") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.mark.parametrize("spot_check", ["1.0", "0"])
def test_spot_check_catches_another_windows_features(workers: tuple[WorkerServer, WorkerServer], photo: Path,
                                                     tmp_path: Path, spot_check: str) -> None:
    hostile, honest = workers
    out = tmp_path / "result.json"
    code = main(["segment", str(photo), "--workers", f"{hostile.address},{honest.address}", "--point", "250,200",
                 "--spot-check", spot_check, "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    caught = result["workers"][hostile.address]
    if spot_check == "1.0":
        assert caught["failed"] and any("spot check" in e for e in caught["errors"]), caught
        assert {f["from"] for f in result["failovers"]} == {hostile.address}
        assert not result["workers"][honest.address]["failed"]
    else:
        assert not caught["failed"] and caught["windows"], caught  # the cheap checks cannot see it


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "nan", "often"])
def test_spot_check_must_be_a_probability(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["segment", "x.png"], ["demo"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*command, "--spot-check", bad])
        assert exit_info.value.code == 2
        assert "must be a probability between 0 and 1" in capsys.readouterr().err
