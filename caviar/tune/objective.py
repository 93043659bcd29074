"""One trial: build a network from a parameter set, train it on the study's fixed train/dev
split, report the dev metric after every epoch. The test set is never touched here."""

from __future__ import annotations

import math
import time
import traceback

from .. import schedules
from ..errors import DivergedError
from ..nn import Network
from ..train import LambdaCallback

_DATA_CACHE = {}


def metric_for(settings):
    """('dev_accuracy', True) for classes (higher is better), ('dev_mse', False) for numbers."""
    return (settings["metric"], settings["metric"] != "dev_mse")


def study_data(settings):
    """The study's (normalized) train and dev sets, loaded once per process."""
    from ..workflow import TrainConfig, prepare_data

    key = (settings["data"], settings.get("target"), settings["split_seed"], settings.get("dev"), settings.get("test"))
    if key not in _DATA_CACHE:
        cfg = TrainConfig(data=settings["data"], target=settings.get("target"), seed=settings["split_seed"],
                          dev=settings.get("dev"), test=settings.get("test"))
        ds, parts, normalizer, sets = prepare_data(cfg)
        _DATA_CACHE[key] = (ds, normalizer, sets)
    return _DATA_CACHE[key]


def network_and_options(params, ds, seed, dtype="float32"):
    """The Network and ``fit`` options a parameter set describes (defaults where it is silent)."""
    classification = ds.class_names is not None
    output = "softmax" if classification else "linear"
    n_y = ds.n_classes if classification else 1
    hidden = [int(params.get("hidden_units", 64))] * int(params.get("layers", 1))
    net = Network([ds.X.shape[1], *hidden, n_y], activation=params.get("activation", "relu"), output=output,
                  init_scale=params.get("init_scale"), batchnorm=bool(params.get("batchnorm", False)),
                  keep_prob=float(params.get("keep_prob", 1.0)), l2=float(params.get("l2", 0.0)), seed=seed, dtype=dtype)
    optimizer = params.get("optimizer", "adam")
    options = {}
    if optimizer == "adam":
        options.update({k: float(params[k]) for k in ("beta1", "beta2", "epsilon") if k in params})
    elif optimizer == "rmsprop":
        options.update({k: float(params[k]) for k in ("beta2", "epsilon") if k in params})
    elif optimizer == "momentum" and "beta1" in params:
        options["beta"] = float(params["beta1"])
    fit = {"optimizer": optimizer, "lr": float(params.get("lr", 1e-3)), "batch_size": int(params.get("batch_size", 64)),
           **options}
    if params.get("decay_rate"):
        fit["schedule"] = schedules.InverseTime(decay_rate=float(params["decay_rate"]))
    return net, fit


def train_trial(settings, trial, on_epoch=None):
    """Train one trial; return (status, value, last_value, best_epoch, error, epochs)."""
    metric, higher = metric_for(settings)
    ds, normalizer, sets = study_data(settings)
    epochs = []

    def record(run, epoch, logs):
        row = {"epoch": epoch, "train_cost": logs["train_cost"], "dev_cost": logs["dev_cost"], "dev_metric": logs[metric]}
        epochs.append(row)
        if on_epoch is not None:
            on_epoch(row)

    def best():
        finite = [e for e in epochs if e["dev_metric"] is not None and math.isfinite(e["dev_metric"])]
        if not finite:
            return None, None
        top = (max if higher else min)(finite, key=lambda e: e["dev_metric"])
        return top["dev_metric"], top["epoch"]

    try:
        net, fit = network_and_options(trial["params"], ds, trial["seed"])
        net.fit(*sets["train"], epochs=int(trial["budget"]), validation_data=sets["dev"], verbose=False,
                seed=trial["seed"], callbacks=[LambdaCallback(on_epoch_end=record)], **fit)
    except DivergedError as exc:
        value, best_epoch = best()
        return "diverged", value, epochs[-1]["dev_metric"] if epochs else None, best_epoch, str(exc), epochs
    except Exception as exc:  # a failed trial is recorded and the study goes on
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        value, best_epoch = best()
        return "failed", value, None, best_epoch, detail, epochs
    value, best_epoch = best()
    if value is None:
        return "diverged", None, None, None, "the dev metric was never finite", epochs
    return "complete", value, epochs[-1]["dev_metric"], best_epoch, None, epochs


def run_trial(study_path, number, token):
    """Worker entry point: train trial ``number`` and write its epochs and outcome to the study."""
    from .study import Study

    study = Study.open(study_path)
    try:
        settings, trial = study.settings, study.trial(number)
        started = time.time()
        status, value, last, best_epoch, error, _ = train_trial(
            settings, trial, lambda row: study.report_epoch(number, token, **row))
        seconds = time.time() - started
        study.finish(number, token, status, value, last, best_epoch, error, duration=seconds)
        return {"number": number, "status": status, "value": value, "seconds": seconds}
    finally:
        study.close()


def run_trial_detached(settings, trial):
    """Worker entry point where the study file is not reachable (a cluster): return everything
    and let the driver write it."""
    started = time.time()
    status, value, last, best_epoch, error, epochs = train_trial(settings, trial)
    return {"number": trial["number"], "status": status, "value": value, "last_value": last,
            "best_epoch": best_epoch, "error": error, "epochs": epochs, "seconds": time.time() - started}
