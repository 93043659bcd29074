"""Loading data: CSV files, ``.npz`` files, NumPy arrays, and bundled datasets by name.

Every loader returns a ``Dataset``: X (m, n_x) float, y (m,) labels as integers 0..C-1 (class
names kept in ``class_names``) or floats for regression, and the feature names. Errors name the
file, the column and the row, so a person can fix the data.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field

import numpy

from ..errors import CaviarError


class DataError(CaviarError, ValueError):
    """Data that cannot be used as given; the message says where and why."""


@dataclass
class Dataset:
    X: numpy.ndarray
    y: numpy.ndarray
    feature_names: list
    class_names: list | None = None  # None for regression targets
    name: str = ""
    target: str | None = None
    image_shape: tuple | None = None  # (height, width) for image data, for augmentation
    notes: dict = field(default_factory=dict)

    @property
    def n_classes(self):
        return len(self.class_names) if self.class_names is not None else None

    def __len__(self):
        return len(self.X)


BUNDLED = ("moons", "circles", "digits", "iris", "wine", "breast_cancer", "synthetic")


def load(spec, target=None, seed=0):
    """A bundled dataset by name, or a file: ``.csv`` (with ``target``) or ``.npz`` (X and y).

    Bundled: 'moons', 'circles', 'digits', 'iris', 'wine', 'breast_cancer', and
    'synthetic' or 'synthetic:M' (M examples, default 10,000; for the big-data split rule).
    """
    spec = os.fspath(spec)
    name, _, arg = spec.partition(":")
    if name in BUNDLED and not os.path.exists(spec):
        return load_bundled(name, seed=seed, **({"n_samples": _count(arg, spec)} if arg else {}))
    if not os.path.exists(spec):
        raise DataError(f"no such file: {spec!r} (and it is not a bundled dataset: {', '.join(BUNDLED)})")
    if os.path.isdir(spec):
        raise DataError(f"{spec!r} is a directory; give a .csv or .npz file")
    if spec.lower().endswith(".npz"):
        return load_npz(spec)
    return load_csv(spec, target)


def _count(arg, spec):
    try:
        n = int(arg)
    except ValueError:
        raise DataError(f"{spec!r}: the number of examples must be an integer") from None
    if n < 10:
        raise DataError(f"{spec!r}: a synthetic dataset needs at least 10 examples")
    return n


def load_bundled(name, seed=0, n_samples=None):
    """The notes' toy problems and scikit-learn's bundled datasets (no download)."""
    from sklearn import datasets

    if name == "moons":
        X, y = datasets.make_moons(n_samples=n_samples or 1000, noise=0.2, random_state=seed)
        return Dataset(X, y, ["x1", "x2"], ["0", "1"], name)
    if name == "circles":
        X, y = datasets.make_circles(n_samples=n_samples or 1000, noise=0.1, factor=0.5, random_state=seed)
        return Dataset(X, y, ["x1", "x2"], ["0", "1"], name)
    if name == "synthetic":
        X, y = datasets.make_classification(n_samples=n_samples or 10000, n_features=20, n_informative=10,
                                            n_redundant=4, n_classes=3, random_state=seed)
        return Dataset(X, y, [f"f{i}" for i in range(20)], ["0", "1", "2"], name)
    loaders = {"digits": datasets.load_digits, "iris": datasets.load_iris, "wine": datasets.load_wine,
               "breast_cancer": datasets.load_breast_cancer}
    if name not in loaders:
        raise DataError(f"unknown bundled dataset {name!r}; expected one of {', '.join(BUNDLED)}")
    bunch = loaders[name]()
    features = [str(f) for f in getattr(bunch, "feature_names", [f"f{i}" for i in range(bunch.data.shape[1])])]
    classes = [str(c) for c in bunch.target_names]
    return Dataset(bunch.data.astype(numpy.float64), bunch.target.astype(numpy.int64), features, classes, name,
                   image_shape=(8, 8) if name == "digits" else None)


def from_arrays(X, y, feature_names=None, name="arrays"):
    """A Dataset from arrays; labels that are not integers 0..C-1 are mapped to them."""
    X = numpy.asarray(X)
    if X.ndim != 2:
        raise DataError(f"X must be a 2-D array (m, n_x), got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise DataError(f"X must hold numbers, got dtype {X.dtype}")
    y = numpy.asarray(y)
    if len(y) != len(X):
        raise DataError(f"X has {len(X)} examples but y has {len(y)}")
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(X.shape[1])]
    check_finite_features(X, names)
    y, classes = encode_labels(y)
    return Dataset(X.astype(numpy.float64), y, names, classes, name)


def load_npz(path):
    """An ``.npz`` with arrays ``X`` and ``y`` (loaded without pickle)."""
    try:
        with numpy.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise DataError(f"{path}: an .npz dataset needs arrays 'X' and 'y'; it has {data.files}")
            X, y = data["X"], data["y"]
            names = [str(n) for n in data["feature_names"]] if "feature_names" in data.files else None
    except (ValueError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    ds = from_arrays(X, y, names, name=os.path.basename(path))
    return ds


def encode_labels(y):
    """Class labels -> integers 0..C-1 and the class names; float targets stay as they are.

    Integer labels and strings are classes; floats are classes only when they are all whole
    numbers with few distinct values, otherwise a regression target (class names None).
    """
    y = numpy.asarray(y)
    if y.dtype.kind == "f":
        finite = numpy.isfinite(y)
        if not finite.all():
            row = int(numpy.argmin(finite))
            raise DataError(f"target value at row {row + 1} is {y[row]}")
        whole = bool((y == numpy.round(y)).all())
        if not whole or len(numpy.unique(y)) > max(20, int(math.sqrt(len(y)))):
            return y.astype(numpy.float64), None
        y = y.astype(numpy.int64)
    classes, codes = numpy.unique(y.astype(str) if y.dtype.kind not in "iub" else y, return_inverse=True)
    return codes.astype(numpy.int64), [str(c) for c in classes]


def check_finite_features(X, feature_names=None, source="X"):
    """Raise ``DataError`` naming the column and row of the first NaN or inf."""
    bad = ~numpy.isfinite(X)
    if bad.any():
        row, col = (int(i) for i in numpy.argwhere(bad)[0])
        name = feature_names[col] if feature_names is not None else f"column {col}"
        raise DataError(f"{source}: feature {name!r} is {X[row, col]} at row {row + 1}; remove or impute it")


def read_csv(path):
    """The header and the non-blank rows of a CSV file; every row must have the header's width."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    numbered = [(line, r) for line, r in enumerate(rows, start=1) if any(cell.strip() for cell in r)]
    if len(numbered) < 2:
        raise DataError(f"{path}: needs a header row and at least one example")
    header = [h.strip() for h in numbered[0][1]]
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields but the header has {len(header)}")
    return header, numbered[1:]


def numeric_columns(path, header, rows, names):
    """The named columns as a float array (m, len(names)); errors name the column and line."""
    cols = [header.index(n) for n in names]
    X = numpy.empty((len(rows), len(cols)))
    for i, (line, row) in enumerate(rows):
        for j, c in enumerate(cols):
            cell = row[c].strip()
            try:
                X[i, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: column {names[j]!r} has a non-numeric value {cell!r} at line {line}") from None
            if not math.isfinite(X[i, j]):
                raise DataError(f"{path}: column {names[j]!r} is {cell} at line {line}; remove or impute it")
    return X


def load_csv(path, target=None):
    """A CSV with a header row. ``target`` names the label column (default: the last column).

    Feature columns must be numeric; the target may hold numbers or class names.
    """
    header, rows = read_csv(path)
    target = target if target is not None else header[-1]
    if target not in header:
        raise DataError(f"{path}: no column named {target!r}; the columns are {', '.join(header)}")
    t = header.index(target)
    features = [h for i, h in enumerate(header) if i != t]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {target!r}")
    X = numeric_columns(path, header, rows, features)
    y = _parse_targets([row[t].strip() for _, row in rows], [line for line, _ in rows])
    y, classes = encode_labels(y)
    return Dataset(X, y, features, classes, os.path.basename(path), target)


def _parse_targets(labels, lines):
    if any(not label for label in labels):
        raise DataError(f"the target is empty at line {lines[labels.index('')]}")
    try:
        values = numpy.array([float(label) for label in labels])
    except ValueError:
        return numpy.array(labels)  # class names
    return values
