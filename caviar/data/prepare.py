"""Preparing a dataset the notes' way: load, split (stratified, seeded), and normalize with the
training set's statistics only. ``caviar train``, ``caviar tune`` and ``gradcheck`` share it."""

from __future__ import annotations

import os

import numpy

from .loading import DataError, bundled_table, load
from .normalize import Normalizer
from .preprocess import Preprocessor, numbers
from .split import Split, split_indices
from .table import is_table, read_table


# how the data is read: the same for caviar train, gradcheck and tune
TABLE_OPTIONS = ("target", "task", "na_values", "categorical", "numeric", "drop", "dev_data", "test_data",
                 "class_weight")


def balanced_class_weight(y, n_classes):
    """scikit-learn's 'balanced' weights, n / (C n_c): every class weighs as much in the cost."""
    counts = numpy.bincount(numpy.asarray(y, dtype=numpy.int64), minlength=n_classes)
    if (counts == 0).any():
        raise DataError(f"class {int(numpy.argmin(counts))} has no training example; it cannot be weighted")
    return [float(len(y) / (n_classes * c)) for c in counts]


def in_target_units(figures, target_scale):
    """Figures of standardized regression targets (``prepare``) in the target's own units:
    MSE times the variance, RMSE and MAE times the std; R² and the cost stay as they are."""
    if target_scale is None:
        return dict(figures)
    std = target_scale[1]
    return {k: v * std ** {"mse": 2, "rmse": 1, "mae": 1}[k] if k in ("mse", "rmse", "mae") else v
            for k, v in figures.items()}


def _class_codes(ds, other, label):
    """``other``'s labels (a separate dev or test file) as ``ds``'s class indices."""
    if ds.class_names is None:
        if other.class_names is not None:
            raise DataError(f"{label} holds class labels but the training target is numeric")
        return other.y
    names = other.class_names if other.class_names is not None else [f"{v:g}" for v in other.y]
    labels = [names[int(v)] for v in other.y] if other.class_names is not None else names
    unknown = sorted(set(labels) - set(ds.class_names))
    if unknown:
        raise DataError(f"{label} has classes the training data lacks: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(ds.class_names)}
    return numpy.array([index[c] for c in labels], dtype=numpy.int64)


def prepare(data, target=None, seed=0, dev=None, test=None, dev_data=None, test_data=None, image_shape=None,
            task=None, na_values=None, categorical=(), numeric=(), drop=(), class_weight=None):
    """(dataset, split, preprocessing, sets): ``sets`` maps 'train', 'dev' and 'test' (if any) to
    float32 (X, y) ready for a network; ``preprocessing`` (a ``Normalizer`` for numeric arrays,
    a ``Preprocessor`` for a table) was fitted on the training rows only and is what a model
    must apply to new data (its ``to_dict`` is saved with the model).

    With ``dev_data``/``test_data`` files those sets come from them (the notes' case: train on
    web pictures, dev and test on the app's pictures) and the rest of ``data`` is split.
    A table's columns get roles (``caviar.data.columns``; ``categorical``, ``numeric`` and
    ``drop`` override them) and its preprocessing imputes, encodes and standardizes them. A
    regression target is standardized with its training mean and standard deviation
    (``ds.target_scale``); a model's outputs times the std plus the mean are in its units.
    ``class_weight='balanced'`` sets ``ds.class_weight`` from the training classes' counts.
    """
    if class_weight not in (None, "balanced"):
        raise DataError(f"class_weight takes 'balanced', got {class_weight!r}")
    ds = load(data, target=target, seed=seed, task=task, na_values=na_values)
    given = {}
    for name, path in (("dev", dev_data), ("test", test_data)):
        if path is not None:
            other = load(path, target=target or ds.target, task="regression" if ds.class_names is None else "classification",
                         na_values=na_values)
            given[name] = (other, _class_codes(ds, other, f"--{name}-data {path}"))
    # Carve from ``data`` only the sets no file provides. A test set is never carved beside a
    # dev file: dev and test must come from the same distribution.
    dev = 0 if "dev" in given else dev
    test = 0 if ("test" in given or "dev" in given) else test
    parts = Split(*split_indices(ds.y, dev, test, seed, ds.class_names is not None, ds.class_names))
    if "dev" not in given and not len(parts.dev_index):
        raise DataError("no dev set: give --dev-data or let caviar split one from --data")
    # the sets carved from ``data``: their features in one pass; a file's set is transformed on its own
    own = {k: v for k, v in (("train", parts.train_index), ("dev", parts.dev_index), ("test", parts.test_index))
           if k == "train" or (k not in given and len(v))}
    if ds.frame is not None:
        prep = Preprocessor(categorical, numeric, drop)
        matrices = prep.fit_transform(ds.frame, parts.train_index, list(own.values()), source=ds.name,
                                      position="line" if ds.lines else "row")

        def features(d, label):
            return prep.transform(d.frame, source=label, position="line" if d.lines else "row")
    else:
        if ds.X is None or any(o.frame is not None for o, _ in given.values()):
            raise DataError("a separate dev or test file must be of the same kind as --data (a table or an .npz)")
        # image rows get one mean and std over all pixels, so augmented images stay in range
        prep = Normalizer(per_feature=(image_shape or ds.image_shape) is None).fit(ds.X[parts.train_index])

        def features(d, label, index=None):
            X = d.X if index is None else d.X[index]
            if X.shape[1] != ds.X.shape[1]:
                raise DataError(f"{label} has {X.shape[1]} features but the training data has {ds.X.shape[1]}")
            return prep.transform(X).astype(numpy.float32)

        matrices = [features(ds, ds.name, index) for index in own.values()]
    sets = {k: (X, ds.y[index]) for (k, index), X in zip(own.items(), matrices)}
    for k, path in (("dev", dev_data), ("test", test_data)):
        if k in given:
            sets[k] = (features(given[k][0], f"--{k}-data {path}"), given[k][1])
    if ds.class_names is None:  # a regression target in the network's units: the training mean and std
        y = sets["train"][1]
        mean, std = float(y.mean()), float(y.std()) or 1.0
        ds.target_scale = (mean, std)
        sets = {k: (X, (t - mean) / std) for k, (X, t) in sets.items()}
    if class_weight is not None:
        if ds.class_names is None:
            raise DataError("class weights need classes; the target is numeric")
        ds.class_weight = balanced_class_weight(sets["train"][1], len(ds.class_names))
    parts.train, parts.dev, parts.test = sets["train"], sets["dev"], sets.get("test")
    ds.inputs = getattr(prep, "output_names", None) or ds.feature_names
    return ds, parts, prep, sets


def model_extras(ds, preprocessing, data):
    """What a model file keeps beside the weights to predict from raw data: the preprocessing
    (a table's, or the normalizer of numeric arrays), class names, the target's scale."""
    table = isinstance(preprocessing, Preprocessor)
    return {("preprocessor" if table else "normalizer"): preprocessing.to_dict(), "class_names": ds.class_names,
            "feature_names": preprocessing.input_names if table else ds.feature_names, "target": ds.target,
            "target_scale": ds.target_scale, "data": data if isinstance(data, str) else None}


def features_for(extras, data):
    """A model's inputs (float32) from raw data: a table through its saved preprocessing, or
    numeric columns (or an .npz's X) through its normalizer."""
    name = os.fspath(data) if isinstance(data, (str, os.PathLike)) else "the DataFrame"
    data = bundled_table(data)
    if "preprocessor" in extras:
        frame = read_table(data)
        lines = isinstance(data, (str, os.PathLike))
        return Preprocessor.from_dict(extras["preprocessor"]).transform(frame, source=name,
                                                                          position="line" if lines else "row")
    if isinstance(data, (str, os.PathLike)) and not is_table(data):  # an .npz, or a bundled dataset by name
        X = load(data).X
    else:
        features = extras.get("feature_names")
        if features is None:
            raise DataError("the model does not record its feature names; give an .npz with X instead")
        frame = read_table(data)
        missing = [c for c in features if c not in frame.columns]
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise DataError(f"{name}: lacks {len(missing)} of the model's {len(features)} feature columns: {shown}")
        X = numpy.column_stack([numbers(frame[c], c, name) for c in features])
        bad = ~numpy.isfinite(X)
        if bad.any():
            row, col = (int(i) for i in numpy.argwhere(bad)[0])
            raise DataError(f"{name}: column {features[col]!r} is missing or not finite at row {row + 1}")
    if "normalizer" in extras:
        X = Normalizer.from_dict(extras["normalizer"]).transform(X)
    return X.astype(numpy.float32)
