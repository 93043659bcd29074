"""Panda mode: babysitting a live run from the command line and over HTTP, and refusals."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

import caviar
import pytest

from caviar.watch import Dashboard, WatchError, send

ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}


def caviar(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def read(path):
    with open(path) as f:
        return json.load(f)


def wait_for(predicate, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if predicate():
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.fixture
def live_run(tmp_path):
    """A long training run in a subprocess, stopped at the end of the test."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "caviar", "train", "--data", "digits", "--epochs", "5000", "--no-early-stopping",
                             "--quiet", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    wait_for(lambda: read(out / "state.json")["iteration"] > 30)
    yield out, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def iteration(out):
    return read(out / "state.json")["iteration"]


def test_caviar_control_babysits_a_live_run(live_run):
    out, proc = live_run
    # set the learning rate: the next mini-batch uses it, and the history says where
    r = caviar("control", out, "set-lr", "0.0003")
    assert r.returncode == 0, r.stderr
    assert "learning rate 0.0003" in r.stdout
    # pause: iterations stop advancing; the history shows the learning rates used
    assert caviar("control", out, "pause").returncode == 0
    stopped_at = iteration(out)
    time.sleep(1.0)
    assert iteration(out) == stopped_at
    assert read(out / "state.json")["status"] == "paused"
    live = read(out / "live.json")
    event = next(e for e in live["events"] if e["event"] == "set-lr")
    k = event["iteration"]  # applied after iteration k: iteration k + 1 is the first at 0.0003
    assert live["lrs"][k - 1] == pytest.approx(0.001) and live["lrs"][k] == pytest.approx(0.0003)
    assert all(lr == pytest.approx(0.0003) for lr in live["lrs"][k:])
    # resume: they advance again
    assert caviar("control", out, "resume").returncode == 0
    wait_for(lambda: iteration(out) > stopped_at + 5)
    # checkpoint, train on, pause, roll back with a new learning rate, checkpoint: the same weights
    r = caviar("control", out, "checkpoint")
    assert r.returncode == 0, r.stderr
    first = int(r.stdout.split("iteration ")[1].split(":")[0])
    wait_for(lambda: iteration(out) > first + 20)
    assert caviar("control", out, "pause").returncode == 0  # commands apply while paused, between batches
    assert caviar("control", out, "rollback", first, "--lr", "0.0001").returncode == 0
    r = caviar("control", out, "checkpoint")
    second = int(r.stdout.split("iteration ")[1].split(":")[0])
    a = np.load(out / "checkpoints" / f"iter-{first:06d}" / "arrays.npz")
    b = np.load(out / "checkpoints" / f"iter-{second:06d}" / "arrays.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # restored exactly, optimizer state too
    assert read(out / "state.json")["lr"] == pytest.approx(0.0001)
    assert caviar("control", out, "resume").returncode == 0
    # stop: training ends and the model is written; every action is in the model's history
    assert caviar("control", out, "stop").returncode == 0
    assert proc.wait(60) == 0
    assert read(out / "state.json")["status"] == "stopped"
    events = [e["event"] for e in read(out / "model" / "model.json")["history"]["events"]]
    for action in ("set-lr", "pause", "resume", "checkpoint", "rollback", "stop"):
        assert action in events


def test_control_refusals(tmp_path, live_run):
    out, _ = live_run
    r = caviar("control", tmp_path / "nowhere", "pause")
    assert r.returncode == 2 and "no caviar run" in r.stderr and "Traceback" not in r.stderr
    r = caviar("control", out, "set-lr", "fast")
    assert r.returncode == 2 and "set-lr needs a number" in r.stderr
    r = caviar("control", out, "rollback", "999999")
    assert r.returncode == 2 and "no checkpoint at iteration 999999" in r.stdout
    r = caviar("control", out, "set-lr", "-1")
    assert r.returncode == 2 and "non-negative" in r.stderr


def test_control_of_a_finished_run_is_refused(tmp_path):
    r = caviar("train", "--data", "iris", "--epochs", "2", "--quiet", "--out", tmp_path / "done")
    assert r.returncode == 0, r.stderr
    assert read(tmp_path / "done" / "state.json")["status"] == "finished"
    r = caviar("control", tmp_path / "done", "pause")
    assert r.returncode == 2 and "is finished" in r.stderr


def http(url, data=None, token=None, raw=None, headers=None):
    """(status, body) of a GET, or a POST of ``data`` as JSON (or of the bytes ``raw``)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        headers["X-Caviar-Token"] = token
    body = raw if raw is not None else json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_dashboard_requires_the_token_for_controls_and_names_unknown_targets(live_run):
    out, _ = live_run
    dashboard = Dashboard([out], port=0, token="s3cret")
    base = dashboard.start().split("?")[0]
    try:
        code, body = http(base + "api/run/run/control", {"action": "set-lr", "value": 0.5})
        assert code == 403 and "token" in body
        code, body = http(base + "api/run/run/control", {"action": "set-lr", "value": 0.5}, token="wrong")
        assert code == 403
        time.sleep(0.3)
        assert not os.listdir(out / "control" / "pending")  # nothing was queued
        assert read(out / "state.json")["lr"] != 0.5
        code, body = http(base + "api/run/run/control", {"action": "set-lr", "value": 0.002}, token="s3cret")
        assert code == 200 and json.loads(body)["ok"]
        code, body = http(base + "api/run/run")
        assert code == 200 and json.loads(body)["state"]["lr"] == pytest.approx(0.002)
        code, body = http(base + "api/run/nosuch")
        assert code == 404 and "no run named 'nosuch'" in body
        code, body = http(base + "run/nosuch")
        assert code == 404 and "nothing is watched under the name" in body
        code, body = http(base + "static/app.js")
        assert code == 200 and "http" not in body.split("fetch")[0].lower().replace("https://", "")  # no remote scripts
    finally:
        dashboard.stop()


def test_dashboard_binds_locally_unless_remote_is_allowed(tmp_path):
    with pytest.raises(WatchError, match="--allow-remote"):
        Dashboard([], host="0.0.0.0")
    remote = Dashboard([], host="0.0.0.0", allow_remote=True, port=0)
    assert remote.token  # a token is made, and required
    r = caviar("watch", tmp_path / "missing")
    assert r.returncode == 2 and "neither a caviar run directory" in r.stderr
    r = caviar("watch", "--host", "0.0.0.0", tmp_path)
    assert r.returncode == 2 and "--allow-remote" in r.stderr


def test_send_checks_its_arguments(tmp_path):
    (tmp_path / "state.json").write_text('{"status": "running"}')
    with pytest.raises(ValueError, match="unknown action 'faster'"):
        send(tmp_path, "faster")
    with pytest.raises(ValueError, match="rollback needs a checkpoint's iteration"):
        send(tmp_path, "rollback", "latest")


def test_train_and_tune_with_watch_print_the_dashboards_address(tmp_path):
    r = caviar("train", "--data", "iris", "--epochs", "2", "--quiet", "--watch", "--port", "0", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "caviar watch: http://127.0.0.1:" in r.stderr and "/run/run" in r.stderr
    r = caviar("tune", "--data", "iris", "--trials", "2", "--epochs", "2", "--watch", "--port", "0",
               "--out", tmp_path / "tune", "--json")
    assert r.returncode == 0, r.stderr
    assert "caviar watch: http://127.0.0.1:" in r.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_fork_waits_for_the_dashboard_s_study_read_to_end(tmp_path):
    """caviar tune --watch forks its workers beside the dashboard's threads: a fork during a
    study read would hand the worker SQLite's locks held. A read in progress holds the fork
    back until it ends, and a study read in the child works."""
    import threading

    from caviar.tune import tune
    from caviar.watch import server

    study = tune(data="iris", trials=2, epochs=1, workers=1, study=tmp_path / "s.sqlite", log=lambda line: None)
    reading, release = threading.Event(), threading.Event()

    def slow_read():
        with server._READING:  # as study_payload holds it
            reading.set()
            release.wait(10)

    thread = threading.Thread(target=slow_read)
    thread.start()
    reading.wait(10)
    threading.Timer(0.5, release.set).start()
    t0 = time.time()
    pid = os.fork()
    if pid == 0:  # the child reads the study as a worker does, then leaves at once
        try:
            os._exit(0 if len(server.study_payload(study.path)["trials"]) == 2 else 1)
        finally:
            os._exit(2)
    waited = time.time() - t0
    deadline = time.time() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.time() < deadline:
        time.sleep(0.05)
    if done[0] == 0:  # the child hangs on a lock it inherited held
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    thread.join()
    assert done[0] == pid, "the forked child hung on the dashboard's read lock"
    assert waited >= 0.4 and os.WEXITSTATUS(done[1]) == 0


def test_the_dashboard_serves_a_study_while_it_is_being_written(tmp_path):
    from caviar.tune import tune

    study = tune(data="iris", trials=3, epochs=2, workers=1, study=tmp_path / "s.sqlite", log=lambda line: None)
    dashboard = Dashboard([study.path], port=0)
    base = dashboard.start().split("?")[0]
    try:
        code, body = http(base + "api/study/s")
        data = json.loads(body)
        assert code == 200 and len(data["trials"]) == 3 and data["metric"] == "dev_accuracy"
        assert all(len(t["curve"]) == 2 for t in data["trials"]) and len(data["leaderboard"]) == 3
        code, body = http(base + "study/s")
        assert code == 200 and "app.js" in body
    finally:
        dashboard.stop()


def test_stop_keeps_the_weights_of_the_best_dev_epoch(tmp_path):
    """In-process: a run that overfits is stopped from another thread; the weights it keeps are
    those of its lowest dev cost."""
    import threading

    import caviar
    from caviar.train import LambdaCallback
    from caviar.watch import Controller

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 8)), rng.integers(0, 2, 60)  # noise: dev cost soon rises
    Xd, yd = rng.standard_normal((200, 8)), rng.integers(0, 2, 200)
    net = caviar.Network([8, 64, 64, 2], seed=0)
    seen = {}
    record = LambdaCallback(on_epoch_end=lambda run, epoch, logs: seen.__setitem__(epoch, run.net.params["W2"].data.copy()))
    done = {}

    def train():
        done["history"] = caviar.fit(net, X, y, lr=0.01, epochs=100000, batch_size=20, validation_data=(Xd, yd),
                                  callbacks=[record, Controller(tmp_path / "run")], verbose=False)

    thread = threading.Thread(target=train)
    thread.start()
    wait_for(lambda: len(seen) > 60)
    assert send(tmp_path / "run", "stop")["ok"]
    thread.join(60)
    history = done["history"]
    best = int(np.argmin(history["dev_cost"])) + 1
    assert best < len(history)  # it overfitted after the best epoch
    np.testing.assert_array_equal(net.params["W2"].data, seen[best])
    assert history.events[-1]["event"] == "restored_best_weights" and history.events[-1]["best_epoch"] == best


def test_a_population_s_run_takes_the_controls_that_fit_it(tmp_path):
    """An ensemble's population: multiply-lr scales each member's own rate from the next epoch,
    a checkpoint is refused (it is for a single network's run), stop ends every member."""
    from caviar import data as D
    from caviar.train import LambdaCallback
    from caviar.train.controls import Controller
    from caviar.train.population import Population

    iris = D.load("iris")
    X = D.Normalizer().fit_transform(iris.X)
    run_dir = tmp_path / "run"
    answers = {}

    def nudge(run, epoch, logs):
        if epoch == 1:
            answers["multiply"] = send(run_dir, "multiply-lr", 0.5, wait=0)
            answers["checkpoint"] = send(run_dir, "checkpoint", wait=0)
        if epoch == 3:
            send(run_dir, "stop", wait=0)

    pop = Population([4, 6, 3], [{"seed": 0, "lr": 0.02}, {"seed": 1, "lr": 0.004}])
    histories = pop.fit(X, iris.y, epochs=50, batch_size=30, shuffle_seed=0,
                        callbacks=[Controller(run_dir), LambdaCallback(on_epoch_end=nudge)])
    for history, lr in zip(histories, (0.02, 0.004)):
        assert history["lr"][:2] == [pytest.approx(lr), pytest.approx(lr / 2)]
        assert len(history) == 3  # stopped after epoch 3's commands were read
    done = {r["action"]: r for r in map(read, (run_dir / "control" / "done").glob("*.json"))}
    assert done["multiply-lr"]["ok"] and not done["checkpoint"]["ok"]
    assert "single network" in done["checkpoint"]["message"]
    assert read(run_dir / "state.json")["status"] == "stopped"


def _post(url, body, headers=None):
    """A POST as a form or another site's script can send it: text/plain, any headers."""
    return http(url, raw=body, headers={"Content-Type": "text/plain", **(headers or {})})


def test_the_dashboard_refuses_cross_site_posts_and_bodies_that_are_not_objects(live_run):
    out, proc = live_run
    dashboard = Dashboard([out], port=0)
    base = dashboard.start().split("?")[0]
    url = base + "api/run/run/control"
    try:
        code, body = _post(url, b'{"action": "checkpoint"}', {"Origin": "http://evil.example",
                                                              "X-Caviar-Token": dashboard.token})
        assert code == 403 and "own page" in body  # even a stolen token is no use from another site
        code, body = _post(url, b'{"action": "multiply-lr", "value": 2}', {"Host": "evil.example"})
        assert code == 403
        for bad in (b"[1]", b'"x"', b"null"):
            code, body = _post(url, bad, {"X-Caviar-Token": dashboard.token})
            assert code == 400 and "a control is a JSON object" in body
        time.sleep(0.3)
        assert not os.listdir(out / "control" / "pending") and not os.path.isdir(out / "checkpoints")
        code, body = _post(url, b'{"action": "checkpoint"}', {"Origin": base.rstrip("/")})
        assert code == 403 and "token" in body  # bound locally, the token is still required
        with urllib.request.urlopen(base, timeout=30) as page:  # the page hands its own requests the token
            cookie = page.headers["Set-Cookie"]
        assert "SameSite=Strict" in cookie and "HttpOnly" in cookie
        code, body = _post(url, b'{"action": "checkpoint"}', {"Origin": base.rstrip("/"), "Cookie": cookie.split(";")[0]})
        assert code == 200 and json.loads(body)["ok"]
        assert proc.poll() is None  # the run went on through all of it
    finally:
        dashboard.stop()


def test_a_control_for_a_dead_run_is_refused_and_a_new_run_drops_stale_commands(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "caviar", "train", "--data", "digits", "--epochs", "5000",
                             "--no-early-stopping", "--quiet", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    wait_for(lambda: read(out / "state.json")["iteration"] > 10)
    proc.kill()
    proc.wait()
    state = read(out / "state.json")
    assert state["pid"] == proc.pid and state["started"] <= time.time()  # the run's owner, recorded
    r = caviar("control", out, "pause")
    assert r.returncode == 2 and "is not running" in r.stderr
    os.makedirs(out / "control" / "pending", exist_ok=True)
    (out / "control" / "pending" / "0-stale.json").write_text(json.dumps({"id": "0-stale", "action": "stop"}))
    r = caviar("train", "--data", "digits", "--epochs", "2", "--no-early-stopping", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert "dropped 1 control command(s) left by an earlier run" in r.stderr
    report = json.loads(r.stdout)
    assert report["test"]["accuracy"] > 0.5  # it trained (a stale stop ended it at iteration 0: about 0.1)
    assert read(out / "state.json")["status"] == "finished"


def test_a_rollback_that_cannot_be_applied_is_answered_and_the_run_goes_on(tmp_path):
    import caviar  # the package (the module's caviar() runs the command line)
    from caviar.train import LambdaCallback
    from caviar.watch import Controller

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 4)), rng.integers(0, 2, 200)
    net = caviar.Network([4, 8, 2], seed=0)
    run_dir = tmp_path / "run"
    os.makedirs(run_dir / "checkpoints" / "iter-000003")  # an empty checkpoint folder
    answers = {}

    def ask(run, epoch, logs):
        if epoch == 2:
            answers["rollback"] = send(run_dir, "rollback", {"iteration": 3}, wait=0)

    history = caviar.fit(net, X, y, epochs=6, batch_size=50, callbacks=[Controller(run_dir), LambdaCallback(on_epoch_end=ask)],
                         verbose=False)
    assert len(history) == 6 and read(run_dir / "state.json")["status"] == "finished"
    done = [read(p) for p in (run_dir / "control" / "done").glob("*.json")]
    assert len(done) == 1 and done[0]["action"] == "rollback" and not done[0]["ok"]
    assert "no model.json" in done[0]["message"]


def test_a_port_in_use_is_one_line_with_a_hint(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(WatchError, match=r"cannot serve the dashboard on 127.0.0.1:\d+: .*choose another with --port"):
            Dashboard([], port=taken.getsockname()[1]).start()
    finally:
        taken.close()


def test_a_command_still_being_written_is_left_alone(tmp_path):
    """A sender writes a command under a temporary name and renames it into place; the run reads
    only whole commands (it once applied the half-written file, then failed to remove it once
    renamed, and died)."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "caviar", "train", "--data", "digits", "--epochs", "5000",
                             "--no-early-stopping", "--quiet", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    try:
        wait_for(lambda: read(out / "state.json")["iteration"] > 10)
        (out / "control" / "pending" / ".tmp-abc123-1-x.json").write_text(json.dumps({"id": "1-x", "action": "pause"}))
        before = read(out / "state.json")["iteration"]
        wait_for(lambda: read(out / "state.json")["iteration"] > before + 50)  # not paused by it
        assert proc.poll() is None and read(out / "state.json")["status"] == "running"
        r = caviar("control", out, "stop")
        assert r.returncode == 0, r.stderr
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
