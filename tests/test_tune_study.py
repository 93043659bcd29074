"""Studies with real trials: statuses, resuming after SIGKILL, concurrent writers, Ray, the CLI."""

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from caviar.tune import Space, Study, StudyError, choice, evaluate_best, tune

ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}
QUIET = dict(log=lambda line: None)


def test_diverged_and_failed_trials_are_recorded_and_the_study_goes_on(tmp_path):
    space = Space({"lr": choice([1e4, 0.01]), "optimizer": "gd", "keep_prob": choice([1.0, 1.5])})
    study = tune(data="iris", space=space, strategy="grid", trials=4, epochs=20, workers=1,
                 study=tmp_path / "s.sqlite", **QUIET)
    by = {(t["params"]["lr"], t["params"]["keep_prob"]): t for t in study.trials()}
    assert by[(1e4, 1.0)]["status"] == "diverged" and "diverged at iteration" in by[(1e4, 1.0)]["error"]
    assert by[(0.01, 1.0)]["status"] == "complete" and by[(0.01, 1.0)]["value"] > 0.5
    for lr in (1e4, 0.01):
        failed = by[(lr, 1.5)]
        assert failed["status"] == "failed" and "keep_prob must be in (0, 1], got 1.5" in failed["error"]
    assert len(study.epochs(by[(0.01, 1.0)]["number"])) == 20


def test_a_diverged_trial_keeps_its_last_finite_metric(tmp_path):
    space = Space({"lr": choice([3.0]), "optimizer": "gd"})
    study = tune(data="moons", space=space, strategy="grid", trials=1, epochs=40, workers=1,
                 study=tmp_path / "s.sqlite", **QUIET)
    t = study.trials()[0]
    if t["status"] == "diverged" and study.epochs(t["number"]):
        assert t["value"] == max(e["dev_metric"] for e in study.epochs(t["number"]))
    else:  # it must at least not have been lost
        assert t["status"] in ("complete", "diverged")


@pytest.mark.parametrize("strategy", ["random", "grid", "coarse-to-fine", "halving"])
def test_the_saved_best_model_has_the_leaderboard_s_best_dev_metric(tmp_path, strategy):
    """The best model is its trial's own run (seed and the study's batch order), stopped at the
    trial's best epoch: its dev metric is the leaderboard's, to the last digit."""
    import caviar
    from caviar.tune import leaderboard
    from caviar.tune.objective import study_data

    study = tune(data="digits", strategy=strategy, trials=9, rounds=3, epochs=9, group_size=3, workers=1,
                 study=tmp_path / "s.sqlite", **QUIET)
    top = leaderboard(study, top=1)[0]
    best = evaluate_best(study, tmp_path)
    assert best["trial"] == top["number"] and best["dev"]["accuracy"] == top["value"]
    _, _, sets = study_data(study.settings)
    assert caviar.load(best["model"]).evaluate(*sets["dev"])["accuracy"] == top["value"]
    assert "test" in best and os.path.isdir(best["model"])


def _writer(path, worker, n):
    study = Study.open(path)
    for i in range(n):
        number = worker * n + i + 1
        token = study.claim(number)
        for epoch in range(1, 4):
            study.report_epoch(number, token, epoch, 1.0 / epoch, 1.0, 0.5 + epoch / 10)
        study.finish(number, token, "complete", value=float(number))
    study.close()


def test_two_workers_writing_to_one_study_file_lose_nothing(tmp_path):
    path = tmp_path / "s.sqlite"
    study = Study.create(path, {"metric": "dev_accuracy"})
    study.add_trials([{"key": f"t{i}", "params": {"i": i}, "seed": i, "budget": 3} for i in range(100)])
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 50)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    trials = study.trials()
    assert [t["status"] for t in trials] == ["complete"] * 100
    assert [t["value"] for t in trials] == [float(t["number"]) for t in trials]
    assert sum(len(study.epochs(t["number"])) for t in trials) == 300


def test_a_stale_claim_cannot_overwrite_a_rerun(tmp_path):
    study = Study.create(tmp_path / "s.sqlite", {"metric": "dev_accuracy"})
    study.add_trials([{"key": "t0", "params": {}, "seed": 0, "budget": 1}])
    old = study.claim(1)
    assert study.reset_interrupted() == [1]  # the driver died; the trial runs again
    new = study.claim(1)
    assert not study.finish(1, old, "complete", value=0.1)  # the orphan's result is refused
    assert study.finish(1, new, "complete", value=0.9)
    assert study.trial(1)["value"] == 0.9 and study.trial(1)["runs"] == 2


def _snapshot(path):
    conn = sqlite3.connect(path, timeout=30)
    rows = conn.execute("SELECT number, status, value, finished, runs FROM trials ORDER BY number").fetchall()
    conn.close()
    return rows


@pytest.mark.parametrize("workers,group_size,epochs", [(1, 1, 25), (2, 1, 25), (1, 4, 120)],
                         ids=["one-worker", "two-workers", "populations"])
def test_resume_after_sigkill_keeps_finished_trials_and_runs_none_twice(tmp_path, workers, group_size, epochs):
    path = str(tmp_path / "study.sqlite")
    cmd = [sys.executable, "-m", "caviar", "tune", "--data", "digits", "--trials", "8", "--epochs", str(epochs),
           "--workers", str(workers), "--group-size", str(group_size), "--study", path, "--out", str(tmp_path / "out"),
           "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.1)
        if os.path.exists(path):
            try:
                done = [r for r in _snapshot(path) if r[1] == "complete"]
            except sqlite3.OperationalError:
                continue
            if len(done) >= 2:
                break
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must die with it
    proc.wait()
    time.sleep(1.5)
    before = _snapshot(path)
    time.sleep(1.5)
    assert _snapshot(path) == before  # no orphaned worker is still writing
    finished_before = {r[0]: r for r in before if r[1] == "complete"}
    assert 2 <= len(finished_before) < 8

    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming study" in r.stderr
    after = {row[0]: row for row in _snapshot(path)}
    assert len(after) == 8 and all(row[1] == "complete" for row in after.values())
    for number, row in finished_before.items():
        assert after[number] == row  # kept as it was, not run again
    assert all(row[4] <= 2 for row in after.values())  # an interrupted trial ran at most twice
    assert json.loads(r.stdout)["trials"] == 8


def test_ray_executor_runs_the_same_study_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    import ray

    try:
        study = tune(data="iris", trials=3, epochs=3, executor="ray", workers=2, study=tmp_path / "s.sqlite", **QUIET)
    finally:
        ray.shutdown()
    trials = study.trials()
    assert [t["status"] for t in trials] == ["complete"] * 3
    assert all(len(study.epochs(t["number"])) == 3 for t in trials)
    local = tune(data="iris", trials=3, epochs=3, workers=1, study=tmp_path / "l.sqlite", **QUIET)
    assert [t["value"] for t in local.trials()] == [t["value"] for t in trials]  # same trials, same results


def test_ray_trials_are_claimed_when_sent_not_all_at_once(tmp_path):
    pytest.importorskip("ray")
    import ray

    try:
        study = tune(data="iris", trials=3, epochs=2, executor="ray", workers=1, population=False,
                     study=tmp_path / "s.sqlite", **QUIET)
    finally:
        ray.shutdown()
    trials = sorted(study.trials(), key=lambda t: t["started"])
    assert [t["status"] for t in trials] == ["complete"] * 3 and all(t["runs"] == 1 for t in trials)
    for before, after in zip(trials, trials[1:]):  # one slot: the next is claimed once the last is recorded
        assert after["started"] >= before["finished"]


def caviar(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300)


def test_tune_and_report_commands(tmp_path):
    r = caviar("tune", "--data", "iris", "--trials", "4", "--epochs", "3", "--workers", "2", "--strategy",
               "coarse-to-fine", "--rounds", "2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"best", "trials", "study"} and out["trials"] == 4
    assert set(out["best"]) >= {"params", "dev_accuracy", "test_accuracy"}
    assert "[4/4]" in r.stderr  # progress while it runs
    folder = os.path.splitext(out["study"])[0]  # each study its own folder, named after it
    assert os.path.dirname(folder) == str(tmp_path / "caviar-tune")
    assert os.path.exists(os.path.join(folder, "dev_accuracy_vs_lr.png")) and os.path.isdir(os.path.join(folder, "best-model"))
    r = caviar("report", out["study"], "--out", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[:3] == ["trial", "status", "dev_accuracy"]
    assert len(r.stdout.splitlines()) == 6 and r.stdout.splitlines()[-1].split()[:2] == ["ens.", "ensemble"]
    assert os.path.exists(tmp_path / "rep" / "dev_accuracy_vs_keep_prob.png")


def test_tune_bad_input(tmp_path):
    (tmp_path / "bad.yaml").write_text("momentum: {uniform: [0.1, 0.9]}\n")
    r = caviar("tune", "--space", tmp_path / "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "unknown hyperparameter 'momentum'" in r.stderr and "Traceback" not in r.stderr
    r = caviar("report", tmp_path / "nothing.sqlite")
    assert r.returncode == 2 and "no study" in r.stderr
    r = caviar("tune", "--strategy", "coarse-to-fine", "--trials", "2", "--rounds", "3", cwd=tmp_path)
    assert r.returncode == 2 and "rounds must be between 1 and the number of trials" in r.stderr


@pytest.mark.parametrize("higher", [True, False])
def test_progress_lines_count_trials_and_keep_the_study_s_best(tmp_path, higher):
    from caviar.tune.runner import _Progress
    from caviar.tune.strategies import ranked

    study = Study.create(tmp_path / "s.sqlite", {"metric": "dev_accuracy"})
    study.add_trials([{"key": f"t{i}", "params": {}, "seed": i, "budget": 1} for i in range(5)])
    study.finish(1, study.claim(1), "complete", value=0.5)  # finished before this run (resumed)
    lines = []
    progress = _Progress(study, "dev_metric", higher, lines.append)
    progress.refresh()
    results = [(3, "complete", 0.7), (2, "failed", None), (4, "diverged", 0.3), (5, "complete", 0.7)]
    for number, status, value in results:
        study.finish(number, study.claim(number), status, value=value)
        progress({"number": number, "status": status, "value": value})
    best = ranked(study.trials(), higher)[0]
    assert [line.split("]")[0] for line in lines] == ["[2/5", "[3/5", "[4/5", "[5/5"]
    assert lines[-1].endswith(f"best {best['value']:.4f} (trial {best['number']})")
    assert best["number"] == (3 if higher else 4)  # a tie keeps the lower trial number
    assert "trial 2 failed: dev_metric -;" in lines[1]


def test_resuming_with_other_settings_is_refused_and_more_random_trials_extend(tmp_path):
    path = tmp_path / "s.sqlite"
    lines = []
    tune(data="iris", trials=3, epochs=2, workers=1, study=path, log=lines.append)
    assert f"new study {path}" in lines
    with pytest.raises(StudyError, match=r"--data was 'iris', now 'wine'; --epochs was 2, now 3"):
        tune(data="wine", epochs=3, workers=1, study=path, given={"data", "epochs"}, **QUIET)
    lines.clear()
    study = tune(data="iris", trials=5, epochs=2, workers=1, study=path, given={"trials", "data"}, log=lines.append)
    assert any("from 3 to 5 trials" in line for line in lines) and len(study.trials()) == 5
    assert len(tune(study=path, workers=1, trials=40, **QUIET).trials()) == 5  # not given: the stored settings


def test_a_second_driver_is_refused_while_the_first_runs(tmp_path):
    path = tmp_path / "s.sqlite"
    tune(data="iris", trials=2, epochs=1, workers=1, study=path, **QUIET).close()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        study = Study.open(path)
        study.set_setting("driver", {"pid": other.pid, "host": __import__("socket").gethostname(), "started": 0})
        study.close()
        with pytest.raises(StudyError, match=f"being run by process {other.pid}"):
            tune(study=path, workers=1, **QUIET)
    finally:
        other.kill()
        other.wait()
    assert len(tune(study=path, workers=1, **QUIET).trials()) == 2  # its driver gone, the study runs again


def test_trials_are_claimed_when_a_worker_starts_them_not_when_queued(tmp_path):
    path = tmp_path / "s.sqlite"
    stop = tmp_path / "stop"
    # what the dashboard reads: at most one trial per worker is running. The watcher is its own
    # process: a thread of this one could be inside SQLite when the study forks its workers,
    # and a forked worker would inherit SQLite's lock held and wait forever (it hung once so)
    watcher = subprocess.Popen([sys.executable, "-c", WATCH_RUNNING, str(path), str(stop)], stdout=subprocess.PIPE,
                               text=True)
    try:
        study = tune(data="digits", trials=10, epochs=2, workers=2, population=False, study=path, **QUIET)
    finally:
        stop.touch()
        out, _ = watcher.communicate(timeout=60)
    most = [int(out)]
    assert 1 <= most[0] <= 2
    trials = study.trials()
    assert all(t["status"] == "complete" for t in trials)
    assert [t["runs"] for t in trials] == [1] * 10


def _threads_here(_):
    """A worker's threads (as the kernel lists them) and its BLAS libraries' thread counts."""
    from threadpoolctl import threadpool_info

    tasks = len(os.listdir("/proc/self/task"))
    return tasks, sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux")
def test_forked_workers_inherit_one_blas_thread_and_start_no_thread():
    """Workers keep BLAS to one thread without starting OpenBLAS's threads (a worker that set
    the limit itself restarted them: they spun for work beside the other worker's first job);
    after the pool, the driver has its own limits back."""
    from threadpoolctl import threadpool_info

    from caviar.tune.executors import LocalExecutor

    before = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
    with LocalExecutor(2) as ex:
        seen = [f.result() for f in [ex.pool.submit(_threads_here, i) for i in range(4)]]
    assert seen == [(1, [1])] * 4
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info()}  # and libraries loaded since
    assert {path: after[path] for path in before} == before


WATCH_RUNNING = """
import os, sqlite3, sys, time
path, stop = sys.argv[1], sys.argv[2]
most = 0
while not os.path.exists(stop):
    if os.path.exists(path):
        try:
            conn = sqlite3.connect(path, timeout=5)
            most = max(most, conn.execute("SELECT COUNT(*) FROM trials WHERE status = 'running'").fetchone()[0])
            conn.close()
        except sqlite3.Error:  # the file being created
            pass
    time.sleep(0.01)
print(most)
"""


def _trials_of(path):
    conn = sqlite3.connect(path, timeout=30)
    rows = conn.execute("SELECT number, status, value, best_epoch FROM trials ORDER BY number").fetchall()
    conn.close()
    return rows


@pytest.mark.parametrize("group_size", [1, 3], ids=["alone", "populations"])
def test_sigkill_during_a_study_resumes_trials_from_their_points_with_equal_values(tmp_path, group_size):
    """Trials interrupted mid-training go on from their last resume point (a population's
    members too, each alone), not from epoch 0, and end with the values an uninterrupted
    study gets."""
    from caviar.train.resume import point_epoch
    from caviar.tune.objective import points_dir

    common = ["--data", "digits", "--trials", "6", "--epochs", "40", "--patience", "6", "--workers", "1",
              "--group-size", str(group_size), "--json"]
    whole = str(tmp_path / "whole.sqlite")
    r = subprocess.run([sys.executable, "-m", "caviar", "tune", *common, "--study", whole, "--out",
                        str(tmp_path / "w")], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    whole_ensemble = json.loads(r.stdout)["ensemble"]
    path = str(tmp_path / "killed.sqlite")
    cmd = [sys.executable, "-m", "caviar", "tune", *common, "--study", path, "--out", str(tmp_path / "k")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            start_new_session=True)
    reached = {}
    deadline = time.time() + 300
    while time.time() < deadline and not reached:
        time.sleep(0.02)
        if os.path.exists(path):
            try:
                running = [row[0] for row in _trials_of(path) if row[1] == "running"]
            except sqlite3.OperationalError:
                continue
            reached = {n: e for n in running if (e := point_epoch(points_dir(path, n))) is not None and e >= 2}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert reached, "no trial wrote a resume point in time"
    time.sleep(1.0)
    conn = sqlite3.connect(path, timeout=30)  # mark epoch 1 of the interrupted trials: a trial run
    conn.executemany("UPDATE epochs SET train_cost = -1 WHERE trial = ? AND epoch = 1", [(n,) for n in reached])
    conn.commit()  # again from epoch 0 would write it afresh; one that goes on keeps it
    conn.close()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "from their resume points: trial" in r.stderr
    assert _trials_of(path) == _trials_of(whole)  # the same values and best epochs, trial by trial
    killed_ensemble = json.loads(r.stdout)["ensemble"]  # the killed study's ensemble is the uninterrupted one's
    for key in ("members", "counts", "weights", "dev", "test"):
        assert killed_ensemble[key] == whole_ensemble[key], key
    killed, uninterrupted = Study.open(path), Study.open(whole)
    try:
        for n in reached:
            assert killed.trial(n)["runs"] == 2
            rows, expected = killed.epochs(n), uninterrupted.epochs(n)
            assert rows[0]["train_cost"] == -1  # not trained again
            rows[0]["train_cost"] = expected[0]["train_cost"]
            assert rows == expected  # the kept epochs and the new ones
        for n, p in uninterrupted.dev_predictions().items():
            np.testing.assert_array_equal(killed.dev_predictions()[n], p)
    finally:
        killed.close()
        uninterrupted.close()
    assert not os.path.exists(path + ".points")  # resume points go once their trials are recorded


def test_a_study_from_before_kept_networks_opens_and_gains_the_table(tmp_path):
    path = tmp_path / "old.sqlite"
    Study.create(path, {"metric": "dev_accuracy"}).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE models")  # as a study written before trials kept their networks
    conn.commit()
    conn.close()
    study = Study.open(path)
    try:
        assert study.kept_trials() == [] and study.dev_predictions() == {}
    finally:
        study.close()
