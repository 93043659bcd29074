"""Resume points: `caviar train --resume DIR` continues a killed run bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import caviar
from caviar.train import EarlyStopping, LambdaCallback
from caviar.train.resume import ResumeError, ResumePoints, load_point

ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}
RUN = ["--data", "digits", "--keep-prob", "0.8", "--decay", "inverse-time:0.1", "--batchnorm", "--quiet", "--json"]


def caviar_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=600)


def arrays(model_dir):
    with np.load(os.path.join(model_dir, "arrays.npz")) as data:
        return {k: data[k] for k in data.files}


def kill_after_point(cmd, run_dir, epoch):
    """Start ``cmd``, SIGKILL it once its resume point has reached ``epoch``; return that point's epoch."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    pointer = os.path.join(run_dir, "resume", "resume.json")
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            time.sleep(0.02)
            try:
                with open(pointer) as f:
                    reached = json.load(f)["epoch"]
            except (OSError, ValueError):
                continue
            if reached >= epoch:
                return reached
        raise AssertionError("the run wrote no resume point in time")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("epochs,patience,kill_at", [(40, "25", 6), (60, "3", 4)],
                         ids=["to-the-last-epoch", "early-stopping-ends-it"])
def test_sigkill_then_resume_matches_the_uninterrupted_run_exactly(tmp_path, epochs, patience, kill_at):
    """Dropout, batch norm, a decaying learning rate and early stopping: every random stream and
    every counter continues as if the run had not been killed."""
    options = [*RUN, "--epochs", epochs, "--early-stopping", patience]
    whole = caviar_cli("train", *options, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed_at = kill_after_point([sys.executable, "-m", "caviar", "train", *map(str, options), "--out",
                                  str(tmp_path / "killed")], tmp_path / "killed", kill_at)
    assert not os.path.exists(tmp_path / "killed" / "model")  # killed before the end
    (tmp_path / "killed" / ".tmp-live.json").write_text("{")  # as a write cut short by the kill leaves it
    resumed = caviar_cli("train", "--resume", tmp_path / "killed", "--json")
    assert resumed.returncode == 0, resumed.stderr
    a, b = json.loads(whole.stdout), json.loads(resumed.stdout)
    assert b["resumed_from_epoch"] == killed_at and a["resumed_from_epoch"] is None
    assert a["epochs"] == b["epochs"] and a["dev"] == b["dev"] and a["test"] == b["test"]
    final, again = arrays(tmp_path / "whole" / "model"), arrays(tmp_path / "killed" / "model")
    assert final.keys() == again.keys()
    for k in final:
        np.testing.assert_array_equal(final[k], again[k], err_msg=k)
    assert not [n for n in os.listdir(tmp_path / "killed") if n.startswith(".tmp-")]
    history = [line.split(",")[:4] for line in (tmp_path / "whole" / "history.csv").read_text().splitlines()]
    assert history == [line.split(",")[:4] for line in (tmp_path / "killed" / "history.csv").read_text().splitlines()]


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_model(tmp_path):
    r = caviar_cli("train", *RUN, "--epochs", 6, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    before = arrays(tmp_path / "run" / "model")
    again = caviar_cli("train", "--resume", tmp_path / "run", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["epochs"] == 6 and json.loads(again.stdout)["resumed_from_epoch"] == 6
    after = arrays(tmp_path / "run" / "model")
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_resume_refusals_are_one_line(tmp_path):
    r = caviar_cli("train", "--resume", tmp_path / "nothing")
    assert r.returncode == 2 and "holds no resume point" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert caviar_cli("train", *RUN, "--epochs", 3, "--out", tmp_path / "run").returncode == 0
    r = caviar_cli("train", "--resume", tmp_path / "run", "--lr", "0.1")
    assert r.returncode == 2 and "continues a run with its own settings; drop --lr" in r.stderr


def test_points_are_written_every_n_epochs_and_at_the_end_atomically(tmp_path):
    X, y = np.random.default_rng(0).standard_normal((64, 4)), np.arange(64) % 2
    net = caviar.Network([4, 6, 2], seed=0)
    stopper = EarlyStopping(patience=100)
    points = ResumePoints(tmp_path / "points", every=4, cheap=0.0, callbacks=[stopper])
    seen = []

    def look(run, epoch, logs):  # after the point's own on_epoch_end
        with open(tmp_path / "points" / "resume.json") as f:
            seen.append(json.load(f)["epoch"])

    os.makedirs(tmp_path / "points" / ".tmp-left-by-a-kill")
    caviar.fit(net, X, y, epochs=10, batch_size=16, validation_data=(X, y), verbose=False,
               callbacks=[stopper, points, LambdaCallback(on_epoch_end=look)])
    assert seen == [1, 1, 1, 4, 4, 4, 4, 8, 8, 10]  # the first, every 4th, and the last
    assert sorted(os.listdir(tmp_path / "points")) == ["epoch-000010", "resume.json"]  # older points and debris gone
    loaded, point = load_point(tmp_path / "points")
    assert point["epoch"] == 10 and point["finished"] and caviar.train.state_of(loaded).epochs_trained == 10
    with pytest.raises(ResumeError, match="holds no resume point"):
        load_point(tmp_path)


def test_a_population_member_s_point_goes_on_alone_exactly(tmp_path):
    """A member's point is its network alone's (``MemberPoints``): continued alone, it ends
    with the weights the uninterrupted population gives that member, bit for bit."""
    import shutil

    from caviar.train import hyperparameters as H
    from caviar.train.population import Population
    from caviar.train.resume import MemberPoints

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((96, 5)), rng.integers(0, 3, 96)
    members = [{"seed": 1, "lr": 0.01, "keep_prob": 0.8, "decay_rate": 0.1}, {"seed": 2, "lr": 0.003, "l2": 0.1}]

    def population():
        return Population([5, 7, 3], members, optimizer="adam", batchnorm=True)

    whole = population()
    whole.fit(X, y, epochs=8, batch_size=16, validation_data=(X, y), shuffle_seed=3)
    dirs = {i: tmp_path / f"m{i}" for i in range(2)}

    def keep_epoch_4(run, epoch, logs):
        if epoch == 4:
            for i, d in dirs.items():
                shutil.copytree(d, tmp_path / f"at4-{i}")

    part = population()
    part.fit(X, y, epochs=8, batch_size=16, validation_data=(X, y), shuffle_seed=3,
             callbacks=[MemberPoints(dirs, every=2, cheap=0.0), LambdaCallback(on_epoch_end=keep_epoch_4)])
    for i, member in enumerate(members):
        net, point = load_point(tmp_path / f"at4-{i}")
        assert point["epoch"] == 4 and not point["finished"]
        schedule = H.schedule(member)
        schedule = schedule.with_lr0(point["schedule"]["lr0"]) if schedule is not None else None
        caviar.fit(net, X, y, epochs=4, batch_size=16, validation_data=(X, y), schedule=schedule, verbose=False)
        expected = whole.results[i][1]
        for name, p in expected.params.items():
            np.testing.assert_array_equal(net.params[name].data, p.data, err_msg=f"member {i} {name}")
        for name, b in expected.buffers.items():
            np.testing.assert_array_equal(net.buffers[name], b, err_msg=f"member {i} {name}")
