"""Column roles of a table, inferred from its training rows, and its target.

Roles (``infer_roles``), which ``--categorical``, ``--numeric`` and ``--drop`` override:

- ``numeric``: numbers (integers too, unless named categorical);
- ``categorical``: text, booleans, pandas categories, and integers named with ``--categorical``;
- ``date``: text that parses as dates in at least 95% of its filled cells; expanded into three
  numbers (days since 1970-01-01, month, weekday), so a trend and a season can both be learned;
- ``id``: text with a different value in every row (a name, a key): dropped, with a warning;
- ``constant``: one value (or none) in every row: dropped;
- ``drop``: named with ``--drop``.

The target (``target_of``) holds classes (text, booleans, integers or whole numbers with few
distinct values) or a regression target (other numbers); ``task`` overrides the guess. Rows with
a missing target are dropped, counted in a warning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy

from ..errors import DataError

ROLES = ("numeric", "categorical", "date", "id", "constant", "drop")
KEPT = ("numeric", "categorical", "date")


class Rows:
    """Some rows of a table, column by column (``frame[name]``) without copying the table."""

    def __init__(self, frame, rows):
        self.frame, self.rows = (frame.frame, frame.rows) if isinstance(frame, Rows) else (frame, rows)
        self.columns = self.frame.columns

    def __getitem__(self, name):
        series = self.frame[name]
        return series if self.rows is None else series.iloc[self.rows]

    def take(self, values):
        """The chosen rows of a whole column's array (a NumPy take: cheaper than pandas')."""
        return values if self.rows is None else values[self.rows]

    def __len__(self):
        return len(self.frame) if self.rows is None else len(self.rows)



@dataclass
class Column:
    name: str
    role: str
    missing: float  # fraction of missing cells in the training rows
    levels: int | None  # distinct filled values (None for a numeric column that varies)

    def to_dict(self):
        return {"name": self.name, "role": self.role, "missing": self.missing, "levels": self.levels}


def _is_text(series):
    import pandas

    return pandas.api.types.is_object_dtype(series) or pandas.api.types.is_string_dtype(series)


def _looks_like_dates(values):
    import pandas

    sample = values.astype(str).head(500)
    if not sample.str.contains(r"\d", regex=True).all() or not sample.str.contains(r"[-/:.]", regex=True).all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pandas.to_datetime(sample, errors="coerce", format="mixed")
    return parsed.notna().mean() >= 0.95


def infer_roles(frame, categorical=(), numeric=(), drop=()):
    """One ``Column`` per column of ``frame`` (the target excluded)."""
    import pandas

    frame = Rows(frame, None)
    named = {"categorical": list(categorical), "numeric": list(numeric), "drop": list(drop)}
    for role, names in named.items():
        unknown = [n for n in names if n not in frame.columns]
        if unknown:
            raise DataError(f"--{role} names no column {', '.join(repr(n) for n in unknown)}; the columns are "
                            f"{', '.join(list(frame.columns)[:12])}{' ...' if len(frame.columns) > 12 else ''}")
    columns = []
    m = len(frame)
    for name in frame.columns:
        whole = frame.frame[name]
        number = pandas.api.types.is_numeric_dtype(whole) and not pandas.api.types.is_bool_dtype(whole)
        if number and name not in named["categorical"]:  # numbers: only whether they vary matters
            values = whole.to_numpy(dtype=numpy.float64, na_value=numpy.nan)
            n_filled = len(values) - int(numpy.count_nonzero(numpy.isnan(values)))
            # fmin and fmax skip missing cells: one pass each, no copy
            varies = n_filled and numpy.fmin.reduce(values) != numpy.fmax.reduce(values)
            levels = None if varies else min(n_filled, 1)
            s = whole
        else:
            s = frame[name]
            filled = s.dropna()
            n_filled, levels = len(filled), int(filled.nunique())
        missing = float(1 - n_filled / m) if m else 0.0
        if name in named["drop"]:
            role = "drop"
        elif name in named["categorical"]:
            role = "categorical"
        elif name in named["numeric"]:
            if _is_text(s) and pandas.to_numeric(filled, errors="coerce").isna().any():
                bad = filled[pandas.to_numeric(filled, errors="coerce").isna()].iloc[0]
                raise DataError(f"--numeric column {name!r} holds text such as {bad!r}")
            role = "numeric"
        elif levels is not None and levels <= 1:
            role = "constant"
        elif pandas.api.types.is_bool_dtype(s) or isinstance(s.dtype, pandas.CategoricalDtype):
            role = "categorical"
        elif pandas.api.types.is_numeric_dtype(s):
            role = "numeric"
        elif pandas.api.types.is_datetime64_any_dtype(s) or (_is_text(s) and _looks_like_dates(filled)):
            role = "date"
        elif levels == n_filled and n_filled > 20:
            role = "id"
        else:
            role = "categorical"
        columns.append(Column(name, role, missing, levels))
    return columns


def format_roles(columns):
    """The short table shown before training: name, role, missing %, levels."""
    width = max([len("column")] + [len(c.name) for c in columns])
    lines = [f"{'column':<{width}}  {'role':<11} {'missing':>8} {'levels':>7}"]
    for c in columns:
        note = {"id": "  (dropped: a different value in every row)", "constant": "  (dropped)",
                "drop": "  (dropped: --drop)"}.get(c.role, "")
        levels = "-" if c.levels is None else c.levels
        lines.append(f"{c.name:<{width}}  {c.role:<11} {100 * c.missing:>7.1f}% {levels:>7}{note}")
    return "\n".join(lines)


def target_of(frame, target, task=None, source="the data"):
    """(frame without the target's missing rows, y, class names or None): classes are encoded
    0..C-1 in sorted order; a regression target is float64."""
    import pandas

    if target not in frame.columns:
        raise DataError(f"{source}: no column named {target!r}; the columns are {', '.join(frame.columns)}")
    if task not in (None, "classification", "regression"):
        raise DataError(f"task must be 'classification' or 'regression', got {task!r}")
    y = frame[target]
    missing = y.isna()
    if missing.all():
        raise DataError(f"{source}: the target column {target!r} is empty")
    if missing.any():
        warnings.warn(f"{source}: dropped {int(missing.sum())} row(s) whose target {target!r} is missing", stacklevel=2)
        frame, y = frame[~missing], y[~missing]
    frame = frame.drop(columns=[target])
    # a column the reader parsed as numbers; text (even "1", "2" mixed with "x") is classes
    is_numeric = pandas.api.types.is_numeric_dtype(y) and not pandas.api.types.is_bool_dtype(y)
    numbers = y.astype("float64") if is_numeric else None
    if task is None:
        many = is_numeric and len(numpy.unique(numbers)) > max(20, int(math.sqrt(len(y))))
        whole = is_numeric and bool((numbers == numpy.round(numbers)).all())
        task = "regression" if is_numeric and (many or not whole) else "classification"
    if task == "regression":
        if not is_numeric:
            parsed = pandas.to_numeric(y, errors="coerce") if not pandas.api.types.is_bool_dtype(y) else None
            if parsed is None or parsed.isna().any():
                bad = y[parsed.isna()].iloc[0] if parsed is not None else y.iloc[0]
                raise DataError(f"{source}: a regression target needs numbers; {target!r} holds {bad!r}")
            numbers = parsed
        values = numbers.to_numpy(dtype=numpy.float64)
        if not numpy.isfinite(values).all():
            row = int(numpy.argmin(numpy.isfinite(values)))
            raise DataError(f"{source}: the target {target!r} is {values[row]} at row {row + 1}")
        return frame, values, None
    codes, uniques = pandas.factorize(numbers if is_numeric else y.astype(str), sort=True)  # hashing: fast
    names = [f"{c:g}" if isinstance(c, float) else str(c) for c in uniques]
    return frame, codes.astype(numpy.int64), names
