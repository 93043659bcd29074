"""The practitioner's workflow of the notes, as functions the command line calls:
load -> split -> check dev/test mismatch -> normalize -> train -> evaluate -> diagnose -> write.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field

import numpy

from . import data as D
from . import backend, schedules
from .diagnose import GradientNorms, check_network, diagnose
from .diagnose import plots
from .errors import CaviarError
from .nn import Network
from .train import EarlyStopping, Ensemble, load_model
from .watch import Controller


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
    early_stopping: int | None = None
    augment: list | None = None
    image_shape: tuple | None = None
    ensemble: int = 1
    human_error: float = 0.0
    seed: int = 0
    out: str = "caviar-run"
    dev: float | None = None
    test: float | None = None
    dev_data: str | None = None
    test_data: str | None = None


def optimizer_options(cfg):
    """The Adam/RMSprop/Momentum hyperparameters given on the command line, by the notes' names."""
    opts = {}
    if cfg.beta1 is not None:
        opts["beta1" if cfg.optimizer == "adam" else "beta"] = cfg.beta1
    if cfg.beta2 is not None:
        opts["beta2"] = cfg.beta2
    if cfg.epsilon is not None:
        opts["epsilon"] = cfg.epsilon
    allowed = {"adam": {"beta1", "beta2", "epsilon"}, "rmsprop": {"beta2", "epsilon"}, "momentum": {"beta"}}.get(cfg.optimizer, set())
    extra = sorted(set(opts) - allowed)
    if extra:
        raise UsageError(f"optimizer {cfg.optimizer!r} takes no {', '.join('--' + k.replace('beta', 'beta1') if k == 'beta' else '--' + k for k in extra)}")
    return opts


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


def _align(ds, other, label):
    """``other`` (a separate dev or test file) expressed in ``ds``'s features and class indices."""
    if other.feature_names != ds.feature_names:
        raise UsageError(f"{label} has features {other.feature_names[:5]}... but the training data has {ds.feature_names[:5]}...")
    if ds.class_names is None:
        if other.class_names is not None:
            raise UsageError(f"{label} holds class labels but the training target is numeric")
        return other.X, other.y
    names = other.class_names if other.class_names is not None else [f"{v:g}" for v in other.y]
    labels = [names[int(v)] for v in other.y] if other.class_names is not None else names
    unknown = sorted(set(labels) - set(ds.class_names))
    if unknown:
        raise UsageError(f"{label} has classes the training data lacks: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(ds.class_names)}
    return other.X, numpy.array([index[c] for c in labels], dtype=numpy.int64)


def prepare_data(cfg):
    """Load, split (stratified, seeded), and normalize with training statistics only.

    With ``dev_data``/``test_data`` files those sets come from them (the notes' case: train on
    web pictures, dev and test on the app's pictures) and the rest of ``data`` is split.
    """
    ds = D.load(cfg.data, target=cfg.target, seed=cfg.seed)
    classification = ds.class_names is not None
    given = {}
    for name, path in (("dev", cfg.dev_data), ("test", cfg.test_data)):
        if path is not None:
            given[name] = _align(ds, D.load(path, target=cfg.target or ds.target), f"--{name}-data {path}")
    # Carve from ``data`` only the sets no file provides. A test set is never carved beside a
    # dev file: dev and test must come from the same distribution.
    dev = 0 if "dev" in given else cfg.dev
    test = 0 if ("test" in given or "dev" in given) else cfg.test
    parts = D.split(ds.X, ds.y, dev=dev, test=test, seed=cfg.seed, stratify=classification, class_names=ds.class_names)
    parts.dev = given.get("dev", parts.dev if len(parts.dev_index) else None)
    parts.test = given.get("test", parts.test)
    if parts.dev is None:
        raise UsageError("no dev set: give --dev-data or let caviar split one from --data")
    # image rows get one mean and std over all pixels, so augmented images stay in range
    normalizer = D.Normalizer(per_feature=(cfg.image_shape or ds.image_shape) is None).fit(parts.train[0])
    sets = {"train": parts.train, "dev": parts.dev}
    if parts.test is not None:
        sets["test"] = parts.test
    sets = {k: (normalizer.transform(X).astype(numpy.float32), y) for k, (X, y) in sets.items()}
    return ds, parts, normalizer, sets


def build_network(cfg, ds, seed, dtype="float32"):
    classification = ds.class_names is not None
    output = cfg.output or ("softmax" if classification else "linear")
    if output == "softmax" and not classification:
        raise UsageError("--output softmax needs class labels, but the target is numeric; use --output linear")
    if output == "linear" and classification and cfg.output:
        raise UsageError("--output linear needs a numeric target, but the target holds classes")
    if output == "sigmoid" and (not classification or ds.n_classes != 2):
        raise UsageError(f"--output sigmoid needs two classes, the data has {ds.n_classes or 'a numeric target'}")
    if output == "softmax" and ds.n_classes < 2:
        raise UsageError("the target has a single class: there is nothing to learn")
    n_y = ds.n_classes if output == "softmax" else 1
    sizes = [ds.X.shape[1], *cfg.hidden, n_y]
    return Network(sizes, activation=cfg.activation, output=output, init=cfg.init, init_scale=cfg.init_scale,
                   batchnorm=cfg.batchnorm, keep_prob=cfg.keep_prob, l2=cfg.l2, l1=cfg.l1, seed=seed, dtype=dtype)


def _augmenter(cfg, ds, normalizer):
    if not cfg.augment:
        return None
    shape = cfg.image_shape or ds.image_shape
    if shape is None:
        raise UsageError("--augment needs images: give --image-shape HxW (the digits dataset is 8x8)")
    if shape[0] * shape[1] != ds.X.shape[1]:
        raise UsageError(f"--image-shape {shape[0]}x{shape[1]} has {shape[0] * shape[1]} pixels but the data has {ds.X.shape[1]} features")
    return D.Augmenter(shape, cfg.augment, normalizer=normalizer)


def _error_rate(result):
    return 1.0 - result["accuracy"] if "accuracy" in result else None


def train_job(cfg, verbose=True, log=None, on_start=None):
    """Run the whole workflow; return the report that ``caviar train --json`` prints."""
    log = log or (lambda *a: print(*a, file=sys.stderr))
    if cfg.ensemble < 1:
        raise UsageError(f"--ensemble must be at least 1, got {cfg.ensemble}")
    out = prepare_out(cfg.out)
    ds, parts, normalizer, sets = prepare_data(cfg)
    opts = optimizer_options(cfg)
    decay = schedules.parse(cfg.decay) if cfg.decay else None
    mismatch = None
    if "test" in sets and min(len(sets["dev"][0]), len(sets["test"][0])) >= 10:
        mismatch = D.check_same_distribution(parts.dev[0], parts.test[0], ds.feature_names, seed=cfg.seed)
        log(f"dev vs test: {mismatch}")
    if cfg.dev_data is not None:  # allowed to differ (the notes' web vs phone pictures), but worth knowing
        log(f"train vs dev: {D.check_same_distribution(parts.train[0], parts.dev[0], ds.feature_names, seed=cfg.seed)}")
    augment = _augmenter(cfg, ds, normalizer)
    X_train, y_train = sets["train"]
    iterations = cfg.epochs * max(1, -(-len(X_train) // cfg.batch_size))
    members, histories = [], []
    if cfg.ensemble > 1 and augment is None and cfg.early_stopping is None:
        # caviar training: the ensemble's members as one population, one vectorized computation
        log(f"training an ensemble of {cfg.ensemble} as one population")
        first = build_network(cfg, ds, cfg.seed)
        member = {"lr": cfg.lr, "l2": cfg.l2, "keep_prob": cfg.keep_prob, "init_scale": cfg.init_scale,
                  "beta1": opts.get("beta1", opts.get("beta")), "beta2": opts.get("beta2"), "epsilon": opts.get("epsilon"),
                  "schedule": decay}
        ensemble, histories = Ensemble.train_population(
            first.config["layer_sizes"], X_train, y_train, k=cfg.ensemble, seeds=[cfg.seed + k for k in range(cfg.ensemble)],
            epochs=cfg.epochs, batch_size=cfg.batch_size, validation_data=sets["dev"], shuffle_seed=cfg.seed,
            optimizer=cfg.optimizer, member={k: v for k, v in member.items() if v is not None},
            activation=cfg.activation, output=first.output, init=cfg.init, batchnorm=cfg.batchnorm)
        members = ensemble.members
    for k in range(cfg.ensemble if not members else 0):  # one by one (augmentation, early stopping)
        seed = cfg.seed + k
        net = build_network(cfg, ds, seed)
        callbacks = [GradientNorms(every=max(1, iterations // 300))]
        if cfg.early_stopping is not None:
            callbacks.append(EarlyStopping(patience=cfg.early_stopping, monitor="dev_cost"))
        run_dir = out if cfg.ensemble == 1 else os.path.join(out, f"member-{k}")
        callbacks.append(Controller(run_dir))  # the live record and the babysitting controls
        if on_start is not None and k == 0:
            on_start(run_dir)
        if cfg.ensemble > 1:
            log(f"member {k + 1} of {cfg.ensemble}")
        history = net.fit(X_train, y_train, optimizer=cfg.optimizer, lr=cfg.lr, epochs=cfg.epochs,
                          batch_size=cfg.batch_size, schedule=decay, validation_data=sets["dev"], callbacks=callbacks,
                          verbose=verbose, seed=seed, shuffle_seed=cfg.seed, augment=augment, **opts)
        members.append(net)
        histories.append(history)
    model = members[0] if len(members) == 1 else Ensemble(members)
    results = {name: _summary(model.evaluate(X, y)) for name, (X, y) in sets.items()}
    report = {name: results[name] for name in results}
    if "accuracy" in results["train"]:
        diag = diagnose(_error_rate(results["train"]), _error_rate(results["dev"]), cfg.human_error)
        report["diagnosis"] = diag.to_dict()
    else:
        report["diagnosis"] = None
    if len(members) > 1:
        report["ensemble"] = {"members": [_summary(m) for m in model.evaluate(*sets["dev"])["members"]]}
    if mismatch is not None:
        report["mismatch"] = {"auc": mismatch.auc, "warning": mismatch.mismatched,
                              "top_features": mismatch.features[:3]}
    extras = {"normalizer": normalizer.to_dict(), "class_names": ds.class_names, "feature_names": ds.feature_names,
              "target": ds.target, "data": cfg.data}
    model_path = os.path.join(out, "model")
    if len(members) == 1:
        model.extras = extras
        model.save(model_path)
    else:
        model.save(model_path, extras)
    report["model"] = model_path
    report["files"] = _write_artifacts(out, histories[0])
    return report


def _summary(result):
    return {k: v for k, v in result.items() if k in ("cost", "accuracy", "mse")}


def _write_artifacts(out, history):
    files = {"history": history.to_csv(os.path.join(out, "history.csv"))}
    files["cost_plot"] = plots.plot_cost(history, os.path.join(out, "cost.png"))
    files["learning_curves"] = plots.plot_learning_curves(history, os.path.join(out, "learning_curves.png"))
    files["gradient_norms"] = plots.plot_gradient_norms(history.grad_norms, os.path.join(out, "gradient_norms.png"))
    return files


def format_report(report):
    """The table ``caviar train`` prints."""
    sets = [k for k in ("train", "dev", "test") if k in report]
    metric = "accuracy" if "accuracy" in report["train"] else "mse"
    lines = [f"{'set':<6} {'cost':>10} {metric:>10}"]
    for k in sets:
        lines.append(f"{k:<6} {report[k]['cost']:>10.4f} {report[k][metric]:>10.4f}")
    if "ensemble" in report:
        for i, m in enumerate(report["ensemble"]["members"], start=1):
            lines.append(f"  dev, member {i}: cost {m['cost']:.4f}  {metric} {m[metric]:.4f}")
    if report.get("diagnosis"):
        d = report["diagnosis"]
        lines.append(f"diagnosis: {d['kind']} (avoidable bias {100 * d['avoidable_bias']:.1f} points, "
                     f"variance {100 * d['variance']:.1f} points)")
        lines += [f"  {i}. {r}" for i, r in enumerate(d["recommendations"], start=1)]
    lines.append(f"model: {report['model']}")
    return "\n".join(lines)


# -- predict ---------------------------------------------------------------------------------


def predict_job(model_dir, data_path, out=None):
    """Predictions for a CSV (or .npz) of raw features, with class names, as CSV rows."""
    model = load_model(model_dir)
    extras = getattr(model, "extras", {}) or {}
    if str(data_path).lower().endswith(".csv"):
        X = _read_features(data_path, extras.get("feature_names"))
    else:
        X = D.load(data_path).X
    if "normalizer" in extras:
        X = D.Normalizer.from_dict(extras["normalizer"]).transform(X)
    X = X.astype(numpy.float32)
    first = model.members[0] if isinstance(model, Ensemble) else model
    first.check_X(X)
    labels = backend.to_numpy(model.predict(X))
    classes = extras.get("class_names")
    rows = [[classes[int(v)] if classes is not None and first.output != "linear" else f"{v:.6g}"] for v in labels]
    header = ["prediction"]
    if first.output in ("softmax", "sigmoid") and classes is not None:
        proba = backend.to_numpy(model.predict_proba(X))
        if first.output == "sigmoid":
            proba = numpy.hstack([1 - proba, proba])
        header += [f"p_{c}" for c in classes]
        rows = [r + [f"{p:.6f}" for p in pr] for r, pr in zip(rows, proba)]
    handle = open(out, "w", newline="") if out else sys.stdout
    try:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if out:
            handle.close()
    return len(rows)


def _read_features(path, features):
    """The model's feature columns from a CSV, by name (other columns, like the target, are ignored)."""
    if not os.path.isfile(path):
        raise D.DataError(f"no such file: {path!r}")
    if features is None:
        raise D.DataError("the model does not record its feature names; give an .npz with X instead")
    header, rows = D.read_csv(path)
    missing = [c for c in features if c not in header]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise D.DataError(f"{path}: lacks {len(missing)} of the model's {len(features)} feature columns: {shown}")
    return D.numeric_columns(path, header, rows, features)


# -- gradcheck -------------------------------------------------------------------------------


def gradcheck_job(cfg, batch=16):
    """A float64 gradient check of the configured network's cost on a small batch."""
    ds, parts, normalizer, sets = prepare_data(cfg)
    X, y = sets["train"]
    net = build_network(cfg, ds, cfg.seed, dtype="float64")
    return check_network(net, X[:batch].astype(numpy.float64), y[:batch])


def write_json(report):
    print(json.dumps(report, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
