"""The practitioner's workflow of the notes, as functions the command line calls:
load -> split -> check dev/test mismatch -> normalize -> train -> evaluate -> diagnose -> write.
How the results are printed lives with the command line (``caviar.cli``).
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import asdict, dataclass, field

import numpy

from . import data as D
from . import backend
from .diagnose import GradientNorms, check_network, diagnose
from .errors import CaviarError
from .nn import Network, heads
from .train import Controller, EarlyStopping, Ensemble, fit, load_model, save, state_of
from .train import hyperparameters as H
from .data.mismatch import MIN_EXAMPLES
from .train.ensemble import DEFAULT_SIZE
from .train.resume import ResumePoints, resume_fit


class UsageError(CaviarError, ValueError):
    """A bad option or an unusable output place."""


@dataclass
class TrainConfig:
    data: str = "digits"
    target: str | None = None
    hidden: list = field(default_factory=lambda: [64, 32])
    activation: str = "relu"
    output: str | None = None  # None: softmax for classes, linear for numeric targets
    init: str = "auto"
    init_scale: float | None = None
    optimizer: str = "adam"
    lr: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    epsilon: float | None = None
    batch_size: int = 64
    epochs: int = 40
    decay: str | None = None
    l2: float = 0.0
    l1: float = 0.0
    keep_prob: float = 1.0
    batchnorm: bool = False
    early_stopping: int | None = 10  # patience on the dev cost; None: every epoch, the last weights kept
    augment: list | None = None
    image_shape: tuple | None = None
    ensemble: int = 1
    ensemble_size: int | None = None  # steps of greedy selection among the ensemble's members (None: 50)
    human_error: float = 0.0
    seed: int = 0
    out: str = "caviar-run"
    dev: float | None = None
    test: float | None = None
    dev_data: str | None = None
    test_data: str | None = None
    task: str | None = None  # classification or regression; None: guessed from the target
    na_values: list | None = None
    categorical: list = field(default_factory=list)
    numeric: list = field(default_factory=list)
    drop: list = field(default_factory=list)
    class_weight: str | None = None  # 'balanced': every class weighs as much in the training cost
    checkpoint_every: int = 10  # resume points: every N epochs, and every epoch where writing one is cheap


def hyperparameters(cfg):
    """The run's settings by the schema's names (``caviar.train.hyperparameters``): the same
    translation a search trial goes through, so a trial trains as ``caviar train`` does."""
    params = {k: getattr(cfg, k) for k in H.SCHEMA if hasattr(cfg, k)}
    if cfg.decay:
        params["schedule"] = cfg.decay
    return params


def prepare_out(out):
    """Create ``out`` and prove it is writable before any training time is spent."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".caviar-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out!r}: {exc.strerror or exc}") from None
    return out


def prepare_data(cfg):
    """Load, split (stratified, seeded), and preprocess with training statistics only."""
    return D.prepare(cfg.data, seed=cfg.seed, dev=cfg.dev, test=cfg.test, image_shape=cfg.image_shape,
                     **{k: getattr(cfg, k) for k in D.TABLE_OPTIONS})


def network_shape(cfg, ds):
    """(layer sizes, output) for the data; an output that cannot fit the target is refused."""
    try:
        output = H.output_for(ds.n_classes, cfg.output)
    except ValueError as exc:
        raise UsageError(f"--output: {exc}") from None
    return [ds.n_x, *cfg.hidden, heads.get(output).n_y(ds.n_classes)], output


def build_network(cfg, ds, seed, dtype="float32"):
    sizes, output = network_shape(cfg, ds)
    return Network(sizes, output=output, seed=seed, dtype=dtype, class_weight=ds.class_weight,
                   **H.network_options(hyperparameters(cfg)))


def _augmenter(cfg, ds, normalizer):
    if not cfg.augment:
        return None
    shape = cfg.image_shape or ds.image_shape
    if shape is None:
        raise UsageError("--augment needs images: give --image-shape HxW (the digits dataset is 8x8)")
    if shape[0] * shape[1] != ds.n_x:
        raise UsageError(f"--image-shape {shape[0]}x{shape[1]} has {shape[0] * shape[1]} pixels but the data has {ds.n_x} features")
    return D.Augmenter(shape, cfg.augment, normalizer=normalizer)


def _error_rate(result):
    return 1.0 - result["accuracy"] if "accuracy" in result else None


def resume_config(run_dir):
    """(TrainConfig, network, point): a run directory's last resume point and the settings the
    run was started with (``caviar train --resume``)."""
    from .train.resume import load_point

    net, point = load_point(os.path.join(run_dir, "resume"))
    cfg = TrainConfig(**{k: v for k, v in point["meta"]["config"].items() if k in TrainConfig.__dataclass_fields__})
    cfg.out = os.fspath(run_dir)
    return cfg, net, point


def train_job(cfg, verbose=True, log=None, on_start=None, resume=None):
    """Run the whole workflow; return the report that ``caviar train --json`` prints.

    ``resume`` (network, point) from ``resume_config`` continues an interrupted run from its
    last resume point, bit for bit as if it had not been interrupted, to ``cfg.epochs``."""
    log = log or (lambda *a: print(*a, file=sys.stderr))
    if cfg.ensemble < 1:
        raise UsageError(f"--ensemble must be at least 1, got {cfg.ensemble}")
    out = prepare_out(cfg.out)
    ds, parts, normalizer, sets = prepare_data(cfg)
    if hasattr(normalizer, "roles_"):
        log(D.format_roles(normalizer.roles_))
    weights = ds.class_weight
    if ds.class_names is not None:
        counts = numpy.bincount(sets["train"][1], minlength=len(ds.class_names))
        log("training classes: " + ", ".join(f"{c} {n}" + (f" (weight {w:.3g})" if weights else "")
                                             for c, n, w in zip(ds.class_names, counts, weights or counts)))
    params = hyperparameters(cfg)
    try:
        H.optimizer(params, strict=True)  # refuse --beta2 for momentum before any work
        H.schedule(params)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    mismatch = None
    if "test" in sets:
        n_dev, n_test = len(sets["dev"][0]), len(sets["test"][0])
        if min(n_dev, n_test) >= MIN_EXAMPLES:
            mismatch = D.check_same_distribution(parts.dev[0], parts.test[0], ds.inputs, seed=cfg.seed)
            log(f"dev vs test: {mismatch}")
        else:
            log(f"dev vs test: not compared ({n_dev} and {n_test} examples; telling sets apart needs at least "
                f"{MIN_EXAMPLES} in each)")
    if cfg.dev_data is not None and min(len(parts.train[0]), len(parts.dev[0])) >= MIN_EXAMPLES:
        # allowed to differ (the notes' web vs phone pictures), but worth knowing
        log(f"train vs dev: {D.check_same_distribution(parts.train[0], parts.dev[0], ds.inputs, seed=cfg.seed)}")
    augment = _augmenter(cfg, ds, normalizer)
    X_train, y_train = sets["train"]
    iterations = cfg.epochs * max(1, -(-len(X_train) // cfg.batch_size))
    callbacks = [GradientNorms(every=max(1, iterations // 300))]
    if cfg.early_stopping is not None:
        callbacks.append(EarlyStopping(patience=cfg.early_stopping, monitor="dev_cost"))
    callbacks.append(Controller(out))  # the live record and the babysitting controls
    if cfg.ensemble == 1:  # last: a point holds what every callback did at its epoch
        callbacks.append(ResumePoints(os.path.join(out, "resume"), every=cfg.checkpoint_every,
                                      meta={"config": asdict(cfg)}, callbacks=callbacks))
    if on_start is not None:
        on_start(out)
    resumed_from = None
    if resume is not None:
        if cfg.ensemble != 1:
            raise UsageError("--resume continues a single network's run; an ensemble's run has no resume point")
        net, point = resume
        resumed_from = point["epoch"]
        log(f"resuming {out} from epoch {resumed_from} of {cfg.epochs}")
        resume_fit(net, point, X_train, y_train, cfg.epochs, H.schedule(params), callbacks, batch_size=cfg.batch_size,
                   validation_data=sets["dev"], verbose=verbose, augment=augment)
        histories = [state_of(net).history]  # the whole run's
        model = net
    elif cfg.ensemble == 1:
        net = build_network(cfg, ds, cfg.seed)
        histories = [fit(net, X_train, y_train, optimizer=H.optimizer(params, strict=True), epochs=cfg.epochs,
                         batch_size=cfg.batch_size, schedule=H.schedule(params), validation_data=sets["dev"],
                         callbacks=callbacks, verbose=verbose, seed=cfg.seed, shuffle_seed=cfg.seed, augment=augment)]
        model = net
    else:  # caviar training: the ensemble's members as one population, one vectorized computation
        log(f"training an ensemble of {cfg.ensemble} as one population")
        sizes, output = network_shape(cfg, ds)
        model, histories = Ensemble.train_population(
            sizes, X_train, y_train, k=cfg.ensemble, seeds=[cfg.seed + k for k in range(cfg.ensemble)],
            epochs=cfg.epochs, batch_size=cfg.batch_size, validation_data=sets["dev"], shuffle_seed=cfg.seed,
            optimizer=H.value(params, "optimizer"), member={k: v for k, v in H.member(params, None).items() if k != "seed"},
            activation=H.value(params, "activation"), output=output, init=H.value(params, "init"),
            batchnorm=H.value(params, "batchnorm"), callbacks=callbacks, augment=augment, verbose=verbose,
            class_weight=weights)
        # the same greedy selection on dev as a study's ensemble (caviar tune), and its model format
        trained = model.members
        model, counts = Ensemble.select(trained, *sets["dev"], size=cfg.ensemble_size or DEFAULT_SIZE)
        selection = {"members": [cfg.seed + int(k) for k in numpy.flatnonzero(counts)],
                     "counts": [int(c) for c in counts[counts > 0]], "weights": model.weights}
        log(f"ensemble: greedy selection on dev kept {len(model.members)} of {len(trained)} members (seeds "
            + ", ".join(f"{s}" + (f" x{c}" if c > 1 else "") for s, c in zip(selection["members"], selection["counts"]))
            + ")")
    members = model.members if isinstance(model, Ensemble) else [model]
    results = {name: _summary(model.evaluate(X, y), ds.target_scale) for name, (X, y) in sets.items()}
    report = {name: results[name] for name in results}
    if "accuracy" in results["train"]:
        diag = diagnose(_error_rate(results["train"]), _error_rate(results["dev"]), cfg.human_error)
        report["diagnosis"] = diag.to_dict()
    else:
        report["diagnosis"] = None
    if cfg.ensemble > 1:
        report["ensemble"] = {**selection, "trained": len(trained),
                              "dev_members": [_summary(m, ds.target_scale) for m in model.evaluate(*sets["dev"])["members"]]}
    if mismatch is not None:
        report["mismatch"] = {"auc": mismatch.auc, "warning": mismatch.mismatched,
                              "top_features": mismatch.features[:3]}
    extras = D.model_extras(ds, normalizer, cfg.data)
    model_path = os.path.join(out, "model")
    if not isinstance(model, Ensemble):
        model.extras = extras
        save(model, model_path)
    else:
        model.save(model_path, extras)
    report["model"] = model_path
    report["epochs"] = max(state_of(m).epochs_trained for m in members)
    report["resumed_from_epoch"] = resumed_from
    report["files"] = _write_artifacts(out, histories[0])
    return report


def _summary(result, target_scale=None):
    """A set's figures; a regression target's errors back in its own units (R² has none)."""
    return D.in_target_units({k: v for k, v in result.items() if k != "members"}, target_scale)


def _write_artifacts(out, history):
    from .diagnose import plots  # matplotlib (0.8 s to import) only where plots are drawn, not for predict

    files = {"history": history.to_csv(os.path.join(out, "history.csv"))}
    files["cost_plot"] = plots.plot_cost(history, os.path.join(out, "cost.png"))
    files["learning_curves"] = plots.plot_learning_curves(history, os.path.join(out, "learning_curves.png"))
    files["gradient_norms"] = plots.plot_gradient_norms(history.grad_norms, os.path.join(out, "gradient_norms.png"))
    return files


# -- predict ---------------------------------------------------------------------------------


def predict_job(model_dir, data_path, out=None):
    """Predictions for a table (or .npz) of raw features, with class names, as CSV rows.
    Columns are matched by name in any order; extra columns (the target) are ignored."""
    model = load_model(model_dir)
    extras = getattr(model, "extras", {}) or {}
    X = D.features_for(extras, data_path)
    first = model.members[0] if isinstance(model, Ensemble) else model
    first.check_X(X)
    labels = backend.to_numpy(model.predict(X))
    classes = extras.get("class_names")
    head = first.head
    if classes is None or not head.classifies:
        mean, std = extras.get("target_scale") or (0.0, 1.0)
        rows, header = [[f"{v * std + mean:.6g}"] for v in labels], ["prediction"]
    else:
        proba = head.class_proba(backend.to_numpy(model.predict_proba(X)))
        header = ["prediction"] + [f"p_{c}" for c in classes]
        rows = [[classes[int(v)]] + [f"{p:.6f}" for p in pr] for v, pr in zip(labels, proba)]
    handle = open(out, "w", newline="") if out else sys.stdout
    try:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if out:
            handle.close()
    return len(rows)


# -- gradcheck -------------------------------------------------------------------------------


def gradcheck_job(cfg, batch=16):
    """A float64 gradient check of the configured network's cost on a small batch."""
    ds, parts, normalizer, sets = prepare_data(cfg)
    X, y = sets["train"]
    net = build_network(cfg, ds, cfg.seed, dtype="float64")
    return check_network(net, X[:batch].astype(numpy.float64), y[:batch])
