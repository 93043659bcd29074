"""The population benchmarks that reach into caviar's step run on small settings: their
clocks and compiled twins follow the code they measure (a renamed function or a changed
kernel would otherwise break them unseen until the next measurement)."""

import importlib.util
import os
import re

import pytest

from caviar import kernels

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_population_floor_times_every_piece_and_puts_the_originals_back(capsys, monkeypatch):
    monkeypatch.setattr(kernels, "THREADS", kernels.THREADS)  # the benchmark sets one thread: back after
    floor = _load("population_floor")
    before = [owner.__dict__[name] for _, owner, name in floor.PIECES]
    floor.main(["--trials", "4", "--group-size", "2", "--epochs", "1", "--breakdown"])
    out = capsys.readouterr().out
    share = re.search(r"reach (\d+)% of the matrix-product ceiling", out)
    assert share and 0 < int(share.group(1)) <= 100
    assert out.count("us a step (all included)") == 2  # both groups of two trials trained again under the clocks
    labels = {name: label for label, _, name in floor.PIECES}
    for name in ("run", "__call__", "step", "update", "evaluate"):  # pieces every population runs
        assert labels[name] in out
    assert [owner.__dict__[name] for _, owner, name in floor.PIECES] == before


def test_the_compiled_step_is_bit_for_bit_caviar_s(capsys, monkeypatch):
    monkeypatch.setattr(kernels, "THREADS", kernels.THREADS)
    step = _load("compiled_step")
    if step.numpy_sgemm() is None:
        pytest.skip("this NumPy does not bundle scipy-openblas64")
    step.main(["--steps", "3"])  # raises SystemExit if a shape's numbers differ
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(rows) == 5 and all(" yes " in row for row in rows)
