"""End-to-end tests of the command line, in a subprocess, as a person runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}


def caviar(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300)


def write_csv(path, X, labels, header=("a", "b", "c", "label")):
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for x, label in zip(X, labels):
            f.write(",".join(f"{v:.6f}" for v in x) + f",{label}\n")
    return path


@pytest.fixture(scope="module")
def pets_csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    labels = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "cat", "dog")
    return write_csv(tmp_path_factory.mktemp("data") / "pets.csv", X, labels)


def test_train_with_no_arguments_trains_a_sensible_network(tmp_path):
    r = caviar("train", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["set", "cost", "accuracy"]
    test_accuracy = float(next(line for line in lines if line.startswith("test")).split()[2])
    assert test_accuracy > 0.9
    assert "diagnosis:" in r.stdout
    out = tmp_path / "caviar-run"
    for name in ("history.csv", "cost.png", "learning_curves.png", "gradient_norms.png", "model/model.json"):
        assert (out / name).exists(), name
    assert "dev vs test" in r.stderr and "Traceback" not in r.stderr


def test_train_json_on_a_csv_then_predict_class_names(tmp_path, pets_csv):
    r = caviar("train", "--data", pets_csv, "--target", "label", "--hidden", "8", "--epochs", "30",
               "--lr", "0.01", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report) >= {"train", "dev", "test", "diagnosis", "model"}
    assert set(report["train"]) == {"cost", "accuracy", "roc_auc", "f1", "balanced_accuracy"}  # two classes
    assert set(report["diagnosis"]) == {"kind", "avoidable_bias", "variance", "recommendations"}
    assert report["test"]["accuracy"] > 0.85
    assert os.path.isdir(report["model"])

    r = caviar("predict", "--model", report["model"], "--data", pets_csv, "--out", tmp_path / "pred.csv")
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0] == "prediction,p_cat,p_dog"
    predicted = [row.split(",")[0] for row in rows[1:]]
    assert len(predicted) == 300 and set(predicted) <= {"cat", "dog"}
    truth = [line.rsplit(",", 1)[1] for line in pets_csv.read_text().splitlines()[1:]]
    assert np.mean([p == t for p, t in zip(predicted, truth)]) > 0.85  # raw inputs, normalizer applied


def test_predictions_piped_into_a_reader_that_stops_early_end_quietly(tmp_path, pets_csv):
    r = caviar("train", "--data", pets_csv, "--target", "label", "--hidden", "4", "--epochs", "1", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    big = tmp_path / "big.csv"  # more rows than a pipe's buffer holds
    big.write_text(pets_csv.read_text() + "".join(pets_csv.read_text().splitlines(True)[1:]) * 40)
    predict = subprocess.Popen([sys.executable, "-m", "caviar", "predict", "--model", tmp_path / "run" / "model",
                                "--data", big], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert predict.stdout.readline().startswith(b"prediction")
    predict.stdout.close()  # as `| head -1` does
    assert predict.wait(timeout=120) == 0
    assert predict.stderr.read() == b""


def test_regression_reports_mse_rmse_mae_and_r2(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    path = write_csv(tmp_path / "reg.csv", X, [f"{v:.6f}" for v in X @ [1.0, -2.0, 0.5]], header=("a", "b", "c", "y"))
    r = caviar("train", "--data", path, "--target", "y", "--epochs", "20", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report["test"]) == {"cost", "mse", "rmse", "mae", "r2"} and report["test"]["r2"] > 0.9
    assert report["test"]["rmse"] == pytest.approx(report["test"]["mse"] ** 0.5)
    r = caviar("train", "--data", path, "--target", "y", "--epochs", "2", "--out", tmp_path / "run2")
    assert r.stdout.splitlines()[0].split() == ["set", "cost", "mse", "rmse", "mae", "r2"]


def test_train_with_every_option(tmp_path):
    r = caviar("train", "--data", "digits", "--hidden", "32,16", "--activation", "tanh", "--init", "xavier",
               "--optimizer", "adam", "--lr", "0.005", "--beta1", "0.9", "--beta2", "0.99", "--epsilon", "1e-7",
               "--batch-size", "32", "--epochs", "6", "--decay", "inverse-time:0.1", "--l2", "0.1",
               "--keep-prob", "0.9", "--batchnorm", "--early-stopping", "3", "--augment", "rotate",
               "--ensemble", "2", "--ensemble-size", "10", "--human-error", "1%", "--seed", "3", "--out", tmp_path / "run",
               "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    e = report["ensemble"]
    assert e["trained"] == 2 and set(e["members"]) <= {3, 4} and sum(e["counts"]) <= 10  # seeds 3 and 4, 10 steps
    assert (tmp_path / "run" / "model" / "ensemble.json").exists()
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", "digits")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("prediction,p_0")


def test_train_warns_when_dev_and_test_come_from_different_distributions(tmp_path):
    rng = np.random.default_rng(1)

    def part(name, shift, n):
        X = rng.standard_normal((n, 3))
        X[:, 2] += shift
        return write_csv(tmp_path / name, X, np.where(X[:, 0] > 0, "yes", "no"))

    web, dev, test = part("web.csv", 0, 400), part("app_dev.csv", 2, 150), part("app_test.csv", 0, 150)
    r = caviar("train", "--data", web, "--dev-data", dev, "--test-data", test, "--hidden", "8",
               "--epochs", "5", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    assert "dev vs test: WARNING" in r.stderr and "c (" in r.stderr
    assert json.loads(r.stdout)["mismatch"]["warning"] is True


def test_diagnose_command():
    r = caviar("diagnose", "--train-error", "15%", "--dev-error", "0.16", "--human-error", "15%", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["kind"] == "fine"
    r = caviar("diagnose", "--train-error", "0.15", "--dev-error", "0.30")
    assert "high bias and high variance" in r.stdout and "1. bigger network" in r.stdout


def test_gradcheck_command():
    r = caviar("gradcheck", "--data", "iris", "--hidden", "5,4", "--batchnorm", "--l2", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["verdict"] == "great" and result["difference"] < 1e-7
    assert set(result["params"]) == {"W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"}


def _truncated(tmp_path):
    np.savez(tmp_path / "full.npz", X=np.zeros((50, 3)), y=np.zeros(50))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.npz"


def _bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "make_args,pattern",
    [
        (lambda t: ["train", "--data", t / "missing.csv"], "no such file"),
        (lambda t: ["train", "--data", _bad(t, "a.csv", "x,y,label\n1,2,a\n3,4,b\n"), "--target", "kind"],
         "no column named 'kind'; the columns are x, y, label"),
        (lambda t: ["train", "--data", _bad(t, "b.csv", "x,y,label\n" + "1,2,a\n3,four,b\n" * 5), "--numeric", "y"],
         "--numeric column 'y' holds text such as 'four'"),
        (lambda t: ["train", "--data", _bad(t, "c.csv", "x,y,label\n" + "1,1e308,a\n3,4,b\n" * 5)],
         r"column 'y' holds 1e\+308 at line \d+, beyond what a float32 holds"),
        (lambda t: ["train", "--data", _bad(t, "d.csv", "x,y,label\n" + "1,inf,a\n3,4,b\n" * 5)],
         r"column 'y' holds inf at line \d+"),
        (lambda t: ["train", "--data", _bad(t, "g.csv", "a,b,a,label\n1,2,3,x\n")], "duplicate column names 'a'"),
        (lambda t: ["train", "--data", _bad(t, "e.csv", "x,label\n" + "1,a\n2,a\n3,a\n4,b\n5,b\n6,b\n7,c\n")],
         "class 'c' has a single example"),
        (lambda t: ["train", "--data", _bad(t, "f.csv", "x,label\n1,a\n2,b\n")], "too few"),
        (lambda t: ["train", "--data", "moons", "--out", "/proc/caviar-cannot-write"], "cannot write to --out"),
        (lambda t: ["train", "--data", "moons", "--keep-prob", "1.5"], r"keep_prob must be in \(0, 1\], got 1.5"),
        (lambda t: ["train", "--data", "moons", "--lr", "-1"], "--lr: expected a positive finite number, got .-1."),
        (lambda t: ["train", "--data", "moons", "--decay", "cosine:1"], "unknown schedule 'cosine'"),
        (lambda t: ["train", "--data", "moons", "--augment", "flip"], "--augment needs images"),
        (lambda t: ["predict", "--model", t / "nomodel", "--data", "moons"], "no model directory"),
        (lambda t: ["gradcheck", "--data", "moons", "--keep-prob", "0.5"], "dropout with keep_prob=0.5"),
        (lambda t: ["train", "--port", "99999"], "a port is 0 to 65535"),
        (lambda t: ["train", "--lr", "inf"], "--lr: expected a positive finite number, got 'inf'"),
        (lambda t: ["train", "--lr", "0"], "--lr: expected a positive finite number, got '0'"),
        (lambda t: ["train", "--hidden", ""], "expected at least one hidden layer size"),
        (lambda t: ["train", "--data", _bad(t, "h.csv", "x,y\n" + "1,a\n2,b\n" * 5), "--dev", "5000"],
         "10 examples are too few for a split with 5000 dev"),
        (lambda t: ["train", "--data", _truncated(t)], "cut.npz: not a readable .npz file"),
        (lambda t: ["tune", "--data", _bad(t, "i.csv", "x,y\n" + "".join(f"{i},a\n" for i in range(10))), "--trials", "2",
                    "--out", t / "tune"],
         "the target has a single class"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, make_args, pattern):
    import re

    r = caviar(*make_args(tmp_path), cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("caviar: error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), r.stderr


def test_usage_errors_exit_2():
    r = caviar("train", "--epochs", "zero")
    assert r.returncode == 2 and "expected a positive integer" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "(see caviar train --help)" in r.stderr  # no usage block
    r = caviar("diagnose", "--train-error", "150%", "--dev-error", "0.1")
    assert r.returncode == 2 and "between 0 and 1" in r.stderr


def test_an_unknown_or_missing_backend_is_one_line_and_exit_code_2():
    import importlib.util

    env = {**ENV, "CAVIAR_BACKEND": "tpu"}
    r = subprocess.run([sys.executable, "-m", "caviar", "train", "--data", "moons", "--epochs", "1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "caviar: error: unknown backend 'tpu'; expected one of numpy, cupy" in r.stderr
    r = caviar("train", "--backend", "gpu")
    assert r.returncode == 2 and "invalid choice: 'gpu'" in r.stderr
    if importlib.util.find_spec("cupy") is None:
        r = caviar("tune", "--backend", "cupy", "--trials", "1")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "caviar: error: backend 'cupy' is not available: CuPy is not installed" in r.stderr
