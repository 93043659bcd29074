"""The README as a newcomer meets it: its Python examples run as written and teach good results,
its command lines are the command line's, and the workflow on your own data runs end to end."""

import ast
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}


def blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


PYTHON = blocks("python")
BASH = blocks("bash")


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_every_python_example_runs_as_written(tmp_path, index):
    code = PYTHON[index]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=ENV,
                       timeout=600)
    assert r.returncode == 0, f"README python block {index + 1}:\n{code}\n{r.stderr[-2000:]}"
    if "caviar.Network(" in code and "net.evaluate" in code:  # the network example teaches a good result
        figures = ast.literal_eval(r.stdout.splitlines()[0])
        assert figures["accuracy"] > 0.95, figures


def commands():
    for block in BASH:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("caviar "):
                yield line


def test_every_command_line_parses_as_caviar_s():
    from caviar.cli import build_parser

    parser = build_parser()
    lines = list(commands())
    assert len(lines) > 20
    for line in lines:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as exc:
            pytest.fail(f"README command does not parse: {line!r} ({exc})")


def test_the_readme_names_no_file_that_nothing_creates():
    for placeholder in ("mydata.csv", "new.csv", "study-....sqlite", "X_train, y_train, epochs", "caviar.relu"):
        assert placeholder not in README, placeholder
    assert "| pause | resume" not in README  # reads as a shell pipe


def test_the_workflow_on_your_own_data_runs_end_to_end(tmp_path):
    block = next(b for b in BASH if "cancer.csv" in b and "caviar predict" in b)
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        words = shlex.split(line)
        if words[0] == "caviar":
            words = [sys.executable, "-m", "caviar", *words[1:]]
        elif words[0] == "python":
            words[0] = sys.executable
        r = subprocess.run(words, capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"  # gradcheck: 1 would be a bug verdict
        assert "Traceback" not in r.stderr, line
    assert (tmp_path / "run" / "model").is_dir() and (tmp_path / "predictions.csv").stat().st_size > 0


@pytest.mark.exclusive  # wall time against a budget: nothing else on the cores
def test_the_quick_start_s_main_job_runs_as_written_in_under_a_minute(tmp_path):
    """The README's first command (after its install): the caviar strategy on the bundled
    penguins table, ending within its budget plus 10% with the best trial's and the ensemble's
    test scores printed."""
    import time

    first = BASH[0].splitlines()[0].split("  #")[0]
    install, _, job = first.partition(" && ")
    assert install == "pip install ." and job.startswith("caviar tune --data penguins --time ")
    budget = float(shlex.split(job)[-1])
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "caviar", *shlex.split(job)[1:]], capture_output=True, text=True,
                       cwd=tmp_path, env=ENV, timeout=120)
    wall = time.time() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert wall <= min(60, 1.1 * budget), wall
    lines = r.stdout.splitlines()
    best = lines.index(next(x for x in lines if x.startswith("best trial ")))
    ensemble = lines.index(next(x for x in lines if x.startswith("ensemble of ")))
    for at in (best, ensemble):
        test = next(x for x in lines[at:at + 3] if x.strip().startswith("test: "))
        accuracy = float(re.search(r"accuracy ([0-9.]+)", test).group(1))
        assert accuracy > 0.75, test  # sex from the measurements: chance is 0.5
    assert "dropped 11 row(s) whose target 'Sex' is missing" in r.stderr
    assert re.search(r"^Region +constant .*\(dropped\)$", r.stderr, flags=re.M)  # the roles, shown first


def test_the_gitignore_lists_the_default_output_folders():
    ignored = open(os.path.join(ROOT, ".gitignore")).read().split()
    assert "caviar-run/" in ignored and "caviar-tune/" in ignored
