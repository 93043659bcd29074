"""What a newcomer meets on the command line: one folder per study, the same flags on every
command, examples in --help, outputs that say what they mean, files with the usual mode."""

import json
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest

from caviar.cli import EXAMPLES, build_parser

ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}


def caviar(*args, cwd=None, env=ENV):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_each_study_writes_into_its_own_folder_and_tune_is_quiet_on_request(tmp_path):
    for name in ("a", "b"):
        r = caviar("tune", "--data", "iris", "--trials", "2", "--epochs", "2", "--workers", "1", "--study",
                   f"{name}.sqlite", "--quiet", "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "trial" not in r.stderr  # --quiet: no progress lines
        assert json.loads(r.stdout)["best"]["model"] == os.path.join(name, "best-model")
    assert (tmp_path / "a" / "best-model").is_dir() and (tmp_path / "b" / "ensemble-model").is_dir()
    r = caviar("report", "a.sqlite", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert len(report["leaderboard"]) == 2 and report["ensemble"]["members"]
    assert all(p.startswith("a" + os.sep) for p in report["plots"])


def test_the_same_flag_means_the_same_thing_on_every_command():
    parser = build_parser()
    flags = {name: {o: a for a in sub._actions for o in a.option_strings}
             for name, sub in parser._caviar_commands.items()}
    for flag in ("--quiet", "--json", "--seed", "--backend"):
        kinds = {(type(a).__name__, a.default, tuple(a.choices or ())) for f in flags.values() for o, a in f.items()
                 if o == flag}
        assert len(kinds) == 1, (flag, kinds)
    assert "--quiet" in flags["tune"] and "--json" in flags["report"] and "--backend" in flags["gradcheck"]


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_command_s_help_ends_with_an_example(command):
    r = caviar(command, "--help")
    assert r.returncode == 0 and "examples:\n  caviar " + command in r.stdout


def test_a_negative_variance_says_what_it_means():
    r = caviar("diagnose", "--train-error", "12%", "--dev-error", "3%")
    assert r.returncode == 0 and "variance -" not in r.stdout
    assert "dev error 9.0 points below the training error: no variance problem" in r.stdout


def test_dev_and_test_sets_too_small_to_compare_are_not_compared(tmp_path):
    r = caviar("train", "--data", "iris", "--epochs", "2", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    assert "dev vs test: not compared (30 and 30 examples" in r.stderr and "AUC" not in r.stderr
    assert json.loads(r.stdout).get("mismatch") is None


def test_the_auc_interval_covers_chance_for_sets_from_one_distribution():
    from sklearn.metrics import roc_auc_score

    from caviar.data.mismatch import auc_interval

    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        a, b = rng.standard_normal(60), rng.standard_normal(60)
        auc = roc_auc_score(np.r_[np.zeros(60), np.ones(60)], np.r_[a, b])
        low, high = auc_interval(auc, 60, 60)
        covered += low <= 0.5 <= high
    assert 0.92 <= covered / 400 <= 0.99  # a 95% interval


def test_an_auc_below_chance_says_it_is_no_difference():
    from caviar.data.mismatch import MismatchReport, check_same_distribution

    below = str(MismatchReport(0.37, 0.05, 0.6, [], low=0.28, high=0.46))
    assert below.startswith("same distribution") and "below chance is no difference either" in below
    assert "below chance" not in str(MismatchReport(0.48, 0.05, 0.6, [], low=0.38, high=0.58))
    # sets of 60 from one distribution: the cross-validated AUC scatters on both sides of 0.5
    aucs = [check_same_distribution(np.random.default_rng(s).standard_normal((60, 3)),
                                    np.random.default_rng(s + 1000).standard_normal((60, 3)), seed=0).auc
            for s in range(40)]
    assert min(aucs) < 0.35 and max(aucs) > 0.6 and abs(np.mean(aucs) - 0.5) < 0.03


def test_the_gradient_check_table_says_how_it_is_sorted():
    import caviar as C

    W = C.Variable(np.ones((2, 2)))
    text = str(C.gradient_check(lambda: (W * W).sum(), {"W": W}))
    assert "per parameter, largest difference first" in text


def test_coarse_to_fine_plots_name_their_rounds_and_warn_nothing(tmp_path):
    import matplotlib.pyplot as plt

    from caviar.tune import plot_study, tune

    study = tune(data="iris", strategy="coarse-to-fine", trials=4, rounds=2, epochs=2, workers=1,
                 study=tmp_path / "s.sqlite", log=lambda line: None)
    labels = []
    real_savefig = plt.Figure.savefig

    def keep_labels(fig, *args, **kwargs):
        labels.extend(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
        fig.canvas.draw()
        _inside(fig)  # the study's plots' fixed margins hold their labels too
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep_labels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a legend with nothing to show warned before
            plot_study(study, tmp_path / "plots")
    finally:
        plt.Figure.savefig = real_savefig
    assert "round 0 trials" in labels and "round 1 trials" in labels


def test_learning_curves_mark_the_controls_applied():
    import matplotlib.pyplot as plt

    from caviar.diagnose.plots import _mark_controls
    from caviar.train import History

    history = History()
    history.events += [{"epoch": 3, "event": "set-lr", "value": "0.01"}, {"epoch": 5, "event": "pause"},
                       {"epoch": 6, "event": "set-lr", "value": "0.001"}, {"epoch": 4, "event": "early_stopping"}]
    fig, ax = plt.subplots()
    _mark_controls(ax, history)
    lines = [line for line in ax.get_lines()]
    assert [line.get_xdata()[0] for line in lines] == [3, 5, 6]  # controls only, each at its epoch
    assert [line.get_label() for line in lines if not line.get_label().startswith("_")] == ["set-lr 0.01", "pause"]
    plt.close(fig)


def test_the_plots_fixed_margins_keep_every_label_inside_the_figure(tmp_path, monkeypatch):
    """Plots use fixed margins (tight_layout took 40% of their time): the widest labels, log
    ticks like 3 x 10^0 beside an axis title, must still fit."""
    from caviar.diagnose import plots
    from caviar.train import History

    from matplotlib.figure import Figure

    seen = []
    savefig = Figure.savefig

    def checked(fig, *args, **kwargs):  # as the figure is written, margins set
        fig.canvas.draw()
        _inside(fig)
        seen.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", checked)
    history = History()
    history.iterations += [3.0 * 0.97 ** i for i in range(200)]
    history.epochs += [{"epoch": e, "train_cost": 2.5 / e, "dev_cost": 2.6 / e, "train_accuracy": 0.5,
                        "dev_accuracy": 0.5, "lr": 0.001} for e in range(1, 11)]
    plots.plot_cost(history, tmp_path / "cost.png")
    plots.plot_learning_curves(history, tmp_path / "curves.png")
    plots.plot_gradient_norms([{"iteration": i, "W1": 3.0 * 0.99 ** i, "W2": 0.3} for i in range(1, 101)],
                              tmp_path / "norms.png")
    assert len(seen) == 3


def _inside(fig):
    """Everything drawn of each axes (tick labels, axis labels, title: what tight_layout would
    measure) lies within the figure."""
    width, height = fig.canvas.get_width_height()
    for ax in fig.axes:
        box = ax.get_tightbbox(fig.canvas.get_renderer())
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (ax.get_title(), box)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_files_caviar_writes_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        r = caviar("train", "--data", "moons", "--epochs", "2", "--out", tmp_path / "run")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    for path in ("model/model.json", "model/arrays.npz", "live.json", "state.json", "resume/resume.json",
                 "history.csv", "cost.png"):
        mode = stat.S_IMODE(os.stat(tmp_path / "run" / path).st_mode)
        assert mode == 0o644, (path, oct(mode))


def test_an_unavailable_backend_in_the_environment_is_one_line():
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    r = caviar("train", "--data", "moons", "--epochs", "1", env={**ENV, "CAVIAR_BACKEND": "cupy"})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("caviar: error: backend 'cupy' is not available")
