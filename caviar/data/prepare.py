"""Preparing a dataset the notes' way: load, split (stratified, seeded), and normalize with the
training set's statistics only. ``caviar train``, ``caviar tune`` and ``gradcheck`` share it."""

from __future__ import annotations

import numpy

from .loading import DataError, load
from .normalize import Normalizer
from .split import split


def _align(ds, other, label):
    """``other`` (a separate dev or test file) expressed in ``ds``'s features and class indices."""
    if other.feature_names != ds.feature_names:
        raise DataError(f"{label} has features {other.feature_names[:5]}... but the training data has {ds.feature_names[:5]}...")
    if ds.class_names is None:
        if other.class_names is not None:
            raise DataError(f"{label} holds class labels but the training target is numeric")
        return other.X, other.y
    names = other.class_names if other.class_names is not None else [f"{v:g}" for v in other.y]
    labels = [names[int(v)] for v in other.y] if other.class_names is not None else names
    unknown = sorted(set(labels) - set(ds.class_names))
    if unknown:
        raise DataError(f"{label} has classes the training data lacks: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(ds.class_names)}
    return other.X, numpy.array([index[c] for c in labels], dtype=numpy.int64)


def prepare(data, target=None, seed=0, dev=None, test=None, dev_data=None, test_data=None, image_shape=None):
    """(dataset, split, normalizer, sets): ``sets`` maps 'train', 'dev' and 'test' (if any) to
    normalized float32 (X, y).

    With ``dev_data``/``test_data`` files those sets come from them (the notes' case: train on
    web pictures, dev and test on the app's pictures) and the rest of ``data`` is split.
    """
    ds = load(data, target=target, seed=seed)
    given = {}
    for name, path in (("dev", dev_data), ("test", test_data)):
        if path is not None:
            given[name] = _align(ds, load(path, target=target or ds.target), f"--{name}-data {path}")
    # Carve from ``data`` only the sets no file provides. A test set is never carved beside a
    # dev file: dev and test must come from the same distribution.
    dev = 0 if "dev" in given else dev
    test = 0 if ("test" in given or "dev" in given) else test
    parts = split(ds.X, ds.y, dev=dev, test=test, seed=seed, stratify=ds.class_names is not None,
                  class_names=ds.class_names)
    parts.dev = given.get("dev", parts.dev if len(parts.dev_index) else None)
    parts.test = given.get("test", parts.test)
    if parts.dev is None:
        raise DataError("no dev set: give --dev-data or let caviar split one from --data")
    # image rows get one mean and std over all pixels, so augmented images stay in range
    normalizer = Normalizer(per_feature=(image_shape or ds.image_shape) is None).fit(parts.train[0])
    sets = {"train": parts.train, "dev": parts.dev}
    if parts.test is not None:
        sets["test"] = parts.test
    sets = {k: (normalizer.transform(X).astype(numpy.float32), y) for k, (X, y) in sets.items()}
    return ds, parts, normalizer, sets
