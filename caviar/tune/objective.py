"""One trial: build a network from a parameter set, train it on the study's fixed train/dev
split, report the dev metric after every epoch. The test set is never touched here."""

from __future__ import annotations

import math
import os
import shutil
import time
import traceback

from .. import backend
from .. import data as D
from ..errors import DivergedError
from ..nn import Network, heads
from ..train import EarlyStopping, LambdaCallback, TimeLimit, fit
from ..train import hyperparameters as H
from ..train.modelfile import weights_bytes
from ..train.resume import MemberPoints, ResumePoints, load_point, point_epoch, resume_fit

_DATA_CACHE = {}


def metric_for(settings):
    """('dev_accuracy', True) for classes (higher is better), ('dev_mse', False) for numbers."""
    return (settings["metric"], settings["metric"] != "dev_mse")


def study_data(settings):
    """The study's (normalized) train and dev sets, loaded once per process."""
    options = {k: settings.get(k) for k in D.TABLE_OPTIONS}
    key = (settings["data"], settings["split_seed"], settings.get("dev"), settings.get("test"), repr(options))
    if key not in _DATA_CACHE:
        options = {k: v for k, v in options.items() if v is not None}
        ds, parts, normalizer, sets = D.prepare(settings["data"], seed=settings["split_seed"], dev=settings.get("dev"),
                                                test=settings.get("test"), **options)
        _DATA_CACHE[key] = (ds, normalizer, sets)
    return _DATA_CACHE[key]


def shape_of(params, ds):
    """(layer sizes, output) that a parameter set describes for a dataset (defaults where silent)."""
    output = H.output_for(ds.n_classes)
    return [ds.n_x, *H.hidden_layers(params), heads.get(output).n_y(ds.n_classes)], output


def network_and_options(params, ds, seed, dtype="float32"):
    """The Network and ``fit`` options a parameter set describes: the schema's translation
    (``caviar.train.hyperparameters``), the same as ``caviar train``'s and a population's."""
    sizes, output = shape_of(params, ds)
    net = Network(sizes, output=output, seed=seed, dtype=dtype, class_weight=ds.class_weight,
                  **H.network_options(params))
    return net, {"optimizer": H.optimizer(params), "batch_size": H.value(params, "batch_size"),
                 "schedule": H.schedule(params)}


def _epoch_row(epoch, logs, metric):
    return {"epoch": epoch, "train_cost": logs["train_cost"], "dev_cost": logs["dev_cost"], "dev_metric": logs[metric]}


def _outcome(status, epochs, higher, error=None, net=None, dev_X=None):
    """A trial's outcome: status, value (the best epoch's dev metric), last_value, best_epoch,
    error, epochs (one row each) and model: for a complete trial, ``net`` (at its best epoch)
    and its dev predictions, for the study to keep (``Study.finish``)."""
    finite = [e for e in epochs if e["dev_metric"] is not None and math.isfinite(e["dev_metric"])]
    out = {"status": status, "value": None, "last_value": None, "best_epoch": None, "error": error, "epochs": epochs,
           "model": None}
    if not finite:
        if status == "complete":
            out.update(status="diverged", error="the dev metric was never finite")
        return out
    top = (max if higher else min)(finite, key=lambda e: e["dev_metric"])
    out.update(value=top["dev_metric"], best_epoch=top["epoch"],
               last_value=epochs[-1]["dev_metric"] if status != "failed" else None)
    if status == "complete" and net is not None:
        out["model"] = {"epoch": top["epoch"], "config": net.config, "weights": weights_bytes(net),
                        "dev": backend.to_numpy(net.predict_proba(dev_X))}
    return out


def callbacks_for(settings, trial, metric, deadline=None):
    """What every trial trains with, alone or in a population: early stopping on the dev
    metric with the study's ``patience`` (none: the whole budget), which restores each
    member's best epoch, and the time budget's ``deadline``."""
    patience = settings.get("patience")
    stops = [EarlyStopping(patience=int(patience if patience is not None else trial["budget"]), monitor=metric)]
    return stops + ([TimeLimit(deadline)] if deadline is not None else [])


def points_dir(study_path, number):
    """Where trial ``number`` of a study keeps its resume point while it trains."""
    return f"{os.fspath(study_path)}.points/trial-{number}"


def train_trial(settings, trial, on_epoch=None, deadline=None, points=None, earlier=()):
    """Train one trial; return its outcome (``_outcome``).

    Every trial of a study shares the study's mini-batch order (``shuffle_seed``), as the members
    of a population do, so a trial gives the same result alone or inside a population. With
    ``points`` (a directory), it writes resume points there (``caviar.train.resume``) and, if
    one is there already (an interrupted trial, alone or a population's member), goes on from
    it exactly; ``earlier`` are the epoch rows up to that point.
    """
    metric, higher = metric_for(settings)
    ds, normalizer, sets = study_data(settings)
    epochs = []

    def record(run, epoch, logs):
        epochs.append(_epoch_row(epoch, logs, metric))
        if on_epoch is not None:
            on_epoch(epochs[-1])

    callbacks = callbacks_for(settings, trial, metric, deadline)
    if points is not None:
        # a trial is recorded as soon as it ends: points only on the way (every 10 epochs, or
        # every epoch where a write costs at most 5% of it)
        callbacks.append(ResumePoints(points, meta={"trial": trial["number"]}, callbacks=callbacks, first=False,
                                      at_end=False))
    try:
        callbacks = [LambdaCallback(on_epoch_end=record), *callbacks]
        if points is None or point_epoch(points) is None:
            net, options = network_and_options(trial["params"], ds, trial["seed"])
            fit(net, *sets["train"], epochs=int(trial["budget"]), validation_data=sets["dev"], verbose=False,
                seed=trial["seed"], shuffle_seed=settings["seed"], callbacks=callbacks, **options)
        else:
            net, point = load_point(points)
            epochs += [dict(e) for e in earlier if e["epoch"] <= point["epoch"]]
            resume_fit(net, point, *sets["train"], trial["budget"], H.schedule(trial["params"]), callbacks,
                       batch_size=H.value(trial["params"], "batch_size"), validation_data=sets["dev"], verbose=False)
    except DivergedError as exc:
        return _outcome("diverged", epochs, higher, str(exc))
    except Exception as exc:  # a failed trial is recorded and the study goes on
        return _outcome("failed", epochs, higher, traceback.format_exception_only(type(exc), exc)[-1].strip())
    return _outcome("complete", epochs, higher, net=net, dev_X=sets["dev"][0])


def population_for(trials, ds):
    """The Population that trains these trials (which share their shape) together."""
    from ..train.population import Population

    params = trials[0]["params"]
    sizes, output = shape_of(params, ds)
    members = [H.member(t["params"], t["seed"]) for t in trials]
    if H.value(params, "l1"):
        raise ValueError("a population has no per-member L1 term")
    return Population(sizes, members, activation=H.value(params, "activation"), output=output,
                      init=H.value(params, "init"), batchnorm=H.value(params, "batchnorm"),
                      optimizer=H.value(params, "optimizer"), class_weight=ds.class_weight)


def train_population(settings, trials, on_epoch=None, deadline=None, points=None):
    """Train trials of one shape as one population; return {trial number: outcome} like
    ``train_trial``, or None if the population cannot be built (each trial then runs alone and
    records its own error). ``points`` (trial number -> directory) receives each member's
    resume points, as its network alone's: an interrupted member goes on alone."""
    metric, higher = metric_for(settings)
    ds, normalizer, sets = study_data(settings)
    try:
        pop = population_for(trials, ds)
    except Exception:
        return None
    epochs = {i: [] for i in range(len(trials))}

    def record(epoch, rows):
        batch = []
        for i, logs in rows.items():
            epochs[i].append(_epoch_row(epoch, logs, metric))
            batch.append((trials[i]["number"], epochs[i][-1]))
        if on_epoch is not None:
            on_epoch(batch)

    params = trials[0]["params"]
    callbacks = callbacks_for(settings, trials[0], metric, deadline)
    if points is not None:
        callbacks.append(MemberPoints({i: points[t["number"]] for i, t in enumerate(trials)}, callbacks=callbacks,
                                      first=False, at_end=False))
    try:
        pop.fit(*sets["train"], epochs=int(trials[0]["budget"]), batch_size=H.value(params, "batch_size"),
                validation_data=sets["dev"], shuffle_seed=settings["seed"], on_epoch=record, callbacks=callbacks)
    except Exception as exc:
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return {t["number"]: _outcome("failed", epochs[i], higher, detail) for i, t in enumerate(trials)}
    outcomes = {}
    for i, t in enumerate(trials):
        status, net, history = pop.results[i]
        error = None
        if status == "diverged":
            event = history.events[-1]
            error = str(DivergedError(event["iteration"], event["cost"], float(H.optimizer(t["params"]).lr)))
        outcomes[t["number"]] = _outcome(status, epochs[i], higher, error, net=net, dev_X=sets["dev"][0])
    return outcomes


def _finish(study, number, token, outcome, seconds):
    if study.finish(number, token, outcome["status"], outcome["value"], outcome["last_value"], outcome["best_epoch"],
                    outcome["error"], duration=seconds, model=outcome["model"]):
        shutil.rmtree(points_dir(study.path, number), ignore_errors=True)  # the study holds its outcome now
    return {"number": number, "status": outcome["status"], "value": outcome["value"], "seconds": seconds}


def run_trial(study_path, number, token, deadline=None):
    """Worker entry point: train trial ``number`` (from its resume point, if an interruption
    left one) and write its epochs and outcome to the study."""
    from .study import Study

    study = Study.open(study_path)
    try:
        settings, trial = study.settings, study.trial(number)
        started = time.time()
        outcome = train_trial(settings, trial, lambda row: study.report_epoch(number, token, **row), deadline,
                              points=points_dir(study_path, number), earlier=study.epochs(number))
        return _finish(study, number, token, outcome, time.time() - started)
    finally:
        study.close()


def run_population(study_path, numbers, tokens, deadline=None):
    """Worker entry point for trials that share a shape: one population, every member's epochs
    written in one transaction per epoch, each outcome recorded on its own trial. Trials an
    interruption left with a resume point go on from it alone (a member trains exactly as its
    network alone)."""
    from .study import Study

    token = dict(zip(numbers, tokens))
    resumed = [n for n in numbers if point_epoch(points_dir(study_path, n)) is not None]
    fresh = [n for n in numbers if n not in resumed]
    results = [run_trial(study_path, n, token[n], deadline) for n in resumed]
    if not fresh:
        return results
    if len(fresh) == 1:
        return results + [run_trial(study_path, fresh[0], token[fresh[0]], deadline)]
    study = Study.open(study_path)
    try:
        settings = study.settings
        trials = [study.trial(n) for n in fresh]
        started = time.time()
        outcomes = train_population(settings, trials,
                                    lambda batch: study.report_epochs([(n, token[n], row) for n, row in batch]),
                                    deadline, points={n: points_dir(study_path, n) for n in fresh})
        if outcomes is None:  # not buildable as a population: one by one, each with its own error
            study.close()
            return results + [run_trial(study_path, n, token[n], deadline) for n in fresh]
        seconds = (time.time() - started) / len(fresh)
        return results + [_finish(study, n, token[n], outcomes[n], seconds) for n in fresh]
    finally:
        study.close()


def run_population_detached(settings, trials, deadline=None):
    """``run_population`` for workers that cannot reach the study file (a cluster)."""
    started = time.time()
    outcomes = train_population(settings, trials, deadline=deadline)
    if outcomes is None:
        return [run_trial_detached(settings, t, deadline) for t in trials]
    seconds = (time.time() - started) / len(trials)
    return [{"number": n, **o, "seconds": seconds} for n, o in outcomes.items()]


def run_trial_detached(settings, trial, deadline=None):
    """Worker entry point where the study file is not reachable (a cluster): return everything
    and let the driver write it."""
    started = time.time()
    outcome = train_trial(settings, trial, deadline=deadline)
    return {"number": trial["number"], **outcome, "seconds": time.time() - started}
