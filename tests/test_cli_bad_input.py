"""`pedvit segment` refuses bad images and prompts with one line and exit 2, before any model or worker."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pedvit.cli.segment_one
import pedvit.models
from pedvit.cli import main


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if the command gets as far as loading a model (or sending a window)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the input was bad")

    monkeypatch.setattr(pedvit.models, "build_model", refuse)
    monkeypatch.setattr(pedvit.cli.segment_one, "build_model", refuse)


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(path)
    return path


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_decompression_bomb_is_one_line(tmp_path, capsys, no_model) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # a few kB on disk, 400 Mpx decoded
    assert bomb.stat().st_size < 1_000_000
    code, err = _run(["segment", str(bomb), "--local", "2"], capsys)
    assert code == 2 and "too large to decode safely" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("prompt,message", [
    (["--point", "-5,10"], "outside the 80 x 64 image"),
    (["--point", "500,10"], "outside the 80 x 64 image"),
    (["--box", "10,10,5,20"], "X0 < X1"),
    (["--box", "-50,-50,-10,-10"], "outside"),
    (["--point", "nan,3"], "not a finite"),
])
def test_bad_prompts_fail_before_the_model_loads(photo, capsys, no_model, prompt, message) -> None:
    code, err = _run(["segment", str(photo), "--local", "2", *prompt], capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_negative_coordinates_parse() -> None:
    from pedvit.cli import _join_signed_values

    assert _join_signed_values(["segment", "x.png", "--point", "-5,10", "--box", "-1,-2,3,4", "--local", "2"]) == [
        "segment", "x.png", "--point=-5,10", "--box=-1,-2,3,4", "--local", "2"]
