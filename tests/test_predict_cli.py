"""`digitsum predict RUN_DIR --input NAME=VALUE ...`: per head, the prediction and the top classes."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image, ImageDraw


@pytest.fixture(scope="module")
def seven(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "seven.png"
    paper = Image.new("L", (200, 240), color=235)  # dark ink on light paper, not MNIST's size
    ImageDraw.Draw(paper).line([(40, 40), (160, 40), (90, 210)], fill=20, width=22)
    paper.save(path)
    return path


def test_predict_prints_every_head_with_its_top_classes(cli, tiny_run, seven):
    result = cli("predict", tiny_run.run_dir, "--input", f"image={seven}", "--input", "number=3")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"image={seven} number=3"
    assert lines[1].split()[0] == "digit" and lines[2].split()[0] == "sum"
    assert lines[1].count("%") == 3  # top 3 by default


def test_predict_json_matches_the_api(cli, tiny_run, seven):
    result = cli("predict", tiny_run.run_dir, "-i", f"image={seven}", "-i", f"image={seven}", "-i", "number=4", "--json", "--top", "2")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert len(data["samples"]) == 2 and data["inputs"][1] == f"image={seven} number=4"
    expected = tiny_run.predict(image=str(seven), number=4, top=2).sample(0)
    for head in ("digit", "sum"):
        got = data["samples"][0][head]
        assert got["prediction"] == expected[head]["prediction"] and len(got["top"]) == 2
        assert got["top"][0]["probability"] == pytest.approx(expected[head]["top"][0]["probability"], abs=1e-6)


@pytest.mark.parametrize(
    "inputs, message",
    [
        (["imag={seven}", "number=1"], "no input 'imag' — did you mean 'image'"),
        (["image={seven}"], "missing --input number=... (an integer from 0 to 9)"),
        (["image={seven}", "number=x"], "'number' takes a whole number"),
        (["image={seven}", "number=12"], "out of range"),
        (["image={missing}", "number=1"], "input 'image': {missing}: no such file (an image is given as a file path"),
        (["image=3", "number=1"], "input 'image': 3: no such file"),  # was: "3: no such file", the input unnamed
        (["image={folder}", "number=1"], "is a directory"),
        (["image={text}", "number=1"], "is not an image"),
        (["image"], "expected NAME=VALUE"),
        (["image={seven}", f"number={10**20}"], f"'number' = {10**20} is out of range"),
        (["image={seven}", "image={seven}", "number=1", "number=2", "number=3"], "image 2 times, number 3 times"),
        (["image={fifo}", "number=1"], "is not a regular file"),
    ],
)
def test_bad_inputs_exit_2_with_the_reason(cli, tiny_run, seven, tmp_path, inputs, message):
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo.png")  # reading it would wait for a writer forever
    paths = {"seven": seven, "missing": tmp_path / "missing.png", "folder": tmp_path / "folder", "text": tmp_path / "text.png",
             "fifo": tmp_path / "fifo.png"}  # fmt: skip
    args = [w for item in inputs for w in ("--input", item.format(**paths))]
    result = cli("predict", tiny_run.run_dir, *args)
    assert result.code == 2 and message.format(**paths) in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("device", ["meta", "xla", "bogus"])
def test_a_device_digitsum_does_not_run_on_exits_2_with_the_choices(cli, tiny_run, seven, device):
    result = cli("predict", tiny_run.run_dir, "--input", f"image={seven}", "--input", "number=1", "--device", device)
    assert result.code == 2 and "Traceback" not in result.err and "use auto, cpu, cuda, cuda:N or mps" in result.err


def test_predict_on_something_that_is_not_a_run(cli, tmp_path, seven):
    result = cli("predict", tmp_path, "--input", "number=1")
    assert result.code == 2 and "not a run directory" in result.err
    image = cli("predict", seven, "--input", f"image={seven}", "--input", "number=1")  # was: "run directory not found"
    assert image.code == 2 and f"{seven} is a file, not a run directory" in image.err


@pytest.mark.parametrize("summary", ['{"metrics": {"test": 5}, "epochs": "x", "position": []}', "[1, 2]", "{"])
def test_a_damaged_summary_does_not_stop_eval_or_predict(cli, tiny_run, seven, tmp_path, summary, tiny_data):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, copy)
    (copy / "summary.json").write_text(summary)
    evaluated = cli("eval", copy, "--json")
    assert evaluated.code == 0, evaluated.err
    assert json.loads(evaluated.out)["heads"] == tiny_run.evaluate("test")
    assert cli("predict", copy, "-i", f"image={seven}", "-i", "number=1").code == 0


def test_a_digit_by_digit_prediction_is_printed_as_one_number(cli, seven):
    """docs/api.md: a head that predicts digit by digit gives a list; the printed form joins them."""
    result = cli("predict", "add-1", "-i", f"a={seven}", "-i", f"b={seven}")
    assert result.code == 0, result.err
    shown = {line.split()[0]: line.split()[1] for line in result.out.splitlines()[1:]}
    assert shown["sum"].isdigit() and len(shown["sum"]) == 2  # N + 1 digits, e.g. "14", not "[1, 4]"
    assert shown["digits"].isdigit() and len(shown["digits"]) == 2


def test_json_output_of_a_model_whose_outputs_overflow_is_valid_json(cli, tiny_run, seven, tmp_path):
    import shutil

    import torch

    run = tmp_path / "overflow-run"
    shutil.copytree(tiny_run.run_dir, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    # finite weights (NaN ones are refused as no run's) whose products overflow: inf and NaN outputs and metrics
    state["model"] = {k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, run / "checkpoint.pt")

    def strict(constant):  # json.loads takes NaN by default; JSON itself has no such number
        raise AssertionError(f"{constant} in --json output")

    for args in (["eval", run, "--json"], ["predict", run, "--input", f"image={seven}", "--input", "number=3", "--json"]):
        result = cli(*args)
        assert result.code == 0, result.err
        json.loads(result.out, parse_constant=strict)
