"""The preprocessing of a table, fitted on the training rows only and saved with the model.

The notes normalize inputs with the training set's mean and standard deviation; a real table
needs a little more first, all of it learned from the training rows and nothing else:

- numeric columns: a missing cell gets the training median and a 0/1 "was missing" column
  (for columns with missing training cells), then every value is standardized;
- date columns: three numbers (days since 1970-01-01, month, weekday), then as numeric;
- categorical columns: one-hot. A missing cell is a level of its own; levels seen fewer than
  ``min_count`` times in training, beyond the ``max_levels`` most frequent, or never seen, go to
  one "other" column, so a 3,000-level column cannot explode the input.

What a fitted preprocessing remembers is a handful of lists and numbers: ``to_dict`` is JSON and
``from_dict`` rebuilds it without executing anything. ``transform`` matches columns by name in
any order, ignores extra columns, and refuses missing ones by name.
"""

from __future__ import annotations

import warnings

import numpy

from .columns import KEPT, infer_roles
from ..errors import DataError

MISSING, OTHER = "(missing)", "(other)"
FLOAT32_MAX = float(numpy.finfo(numpy.float32).max)


def _first(series, mask):
    """The position of the first marked cell in the order the table was read (rows may have
    been shuffled by the split)."""
    marked = numpy.flatnonzero(mask)
    labels = series.index[marked]
    try:
        return int(marked[numpy.argmin(numpy.asarray(labels))])
    except (TypeError, ValueError):
        return int(marked[0])


def _at(series, i, position):
    """Where cell ``i`` of a column is, as a person finds it: the file's line (the header is
    line 1) or the table's row, counted from 1 in the order it was read."""
    label = series.index[i]
    where = int(label) + (2 if position == "line" else 1) if isinstance(label, (int, numpy.integer)) else label
    return f"{position} {where}"


def numbers(series, name, source, position="row"):
    """A column as float64, refusing text and values that overflow float32 (named)."""
    import pandas

    values = pandas.to_numeric(series, errors="coerce").to_numpy(dtype=numpy.float64, na_value=numpy.nan)
    bad_text = numpy.isnan(values) & series.notna().to_numpy()
    if bad_text.any():
        i = _first(series, bad_text)
        raise DataError(f"{source}: numeric column {name!r} has the text {series.iloc[i]!r} at {_at(series, i, position)}")
    too_big = ~(numpy.abs(values) <= FLOAT32_MAX) & ~numpy.isnan(values)
    if too_big.any():
        i = _first(series, too_big)
        raise DataError(f"{source}: column {name!r} holds {values[i]:g} at {_at(series, i, position)}, beyond what a "
                        f"float32 holds (about 3.4e38); rescale or remove it")
    return values


def _date_parts(series):
    import pandas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        when = pandas.to_datetime(series, errors="coerce", format="mixed")
    days = (when - pandas.Timestamp("1970-01-01")).dt.total_seconds() / 86400.0
    return {"days": days.to_numpy(dtype=numpy.float64, na_value=numpy.nan),
            "month": when.dt.month.to_numpy(dtype=numpy.float64, na_value=numpy.nan),
            "weekday": when.dt.day_of_week.to_numpy(dtype=numpy.float64, na_value=numpy.nan)}


def _label(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 3 and 3.0 (an integer column with a missing cell) are one level
    return str(value)


def _labels(series):
    """Categorical cells as text, missing ones as their own level."""
    text = series.astype(object).where(series.notna(), MISSING)
    return text.map(lambda v: v if v is MISSING else _label(v)).to_numpy(dtype=object)


class Preprocessor:
    """Column roles and what each kept column needs (see the module); ``fit`` on training rows."""

    def __init__(self, categorical=(), numeric=(), drop=(), min_count=5, max_levels=32):
        if min_count < 1 or max_levels < 1:
            raise ValueError(f"min_count and max_levels must be at least 1, got {min_count} and {max_levels}")
        self.overrides = {"categorical": list(categorical), "numeric": list(numeric), "drop": list(drop)}
        self.min_count, self.max_levels = int(min_count), int(max_levels)
        self.columns_ = None

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, frame, source="the training data", position="row"):
        self.roles_ = infer_roles(frame, **self.overrides)
        self.columns_ = []  # one dict per kept column: what transform needs
        for col in self.roles_:
            if col.role not in KEPT:
                if col.role == "id":
                    warnings.warn(f"{source}: dropped column {col.name!r}: a different value in every row (an ID?)",
                                  stacklevel=2)
                continue
            series = frame[col.name]
            if col.role == "categorical":
                self.columns_.append(self._fit_categorical(col.name, series))
            else:
                parts = _date_parts(series) if col.role == "date" else {"": numbers(series, col.name, source, position)}
                for part, values in parts.items():
                    self.columns_.append(self._fit_numeric(col.name, col.role, part, values))
        if not self.columns_:
            raise DataError(f"{source}: no usable feature column is left (roles: "
                            f"{', '.join(f'{c.name} {c.role}' for c in self.roles_) or 'no columns'})")
        return self

    @staticmethod
    def _fit_numeric(name, role, part, values):
        missing = numpy.isnan(values)
        filled = values[~missing]
        median = float(numpy.median(filled)) if len(filled) else 0.0
        imputed = numpy.where(missing, median, values)
        mean = float(imputed.mean()) if len(imputed) else 0.0
        std = float(imputed.std()) if len(imputed) else 0.0
        return {"name": name, "role": role, "part": part, "median": median, "mean": mean,
                "std": std if std > 0 else 1.0, "indicator": bool(missing.any())}

    def _fit_categorical(self, name, series):
        labels, counts = numpy.unique(_labels(series), return_counts=True)
        order = numpy.argsort(-counts, kind="stable")
        kept = [str(labels[i]) for i in order if counts[i] >= self.min_count or labels[i] == MISSING][: self.max_levels]
        return {"name": name, "role": "categorical", "levels": kept,
                "other": bool(len(kept) < len(labels))}

    # -- applying ---------------------------------------------------------------------------------
    @property
    def input_names(self):
        """The table columns a model needs, in order."""
        return list(dict.fromkeys(c["name"] for c in self.columns_))

    @property
    def output_names(self):
        """The names of the model's input columns (one-hot levels, indicators, date parts)."""
        names = []
        for c in self.columns_:
            if c["role"] == "categorical":
                names += [f"{c['name']}={level}" for level in c["levels"] + [OTHER]]
            else:
                base = c["name"] + (f".{c['part']}" if c["part"] else "")
                names.append(base)
                if c["indicator"]:
                    names.append(f"{base} missing")
        return names

    def transform(self, frame, source="the data", position="row"):
        """The model's inputs (m, n_x) as float32. Categories never seen in training go to
        'other', with a warning that counts them."""
        absent = [n for n in self.input_names if n not in frame.columns]
        if absent:
            shown = ", ".join(repr(n) for n in absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
            raise DataError(f"{source}: lacks {len(absent)} of the model's {len(self.input_names)} columns: {shown}")
        blocks, unseen = [], {}
        dates = {}
        for c in self.columns_:
            series = frame[c["name"]]
            if c["role"] == "categorical":
                labels = _labels(series)
                index = {level: i for i, level in enumerate(c["levels"])}
                codes = numpy.fromiter((index.get(v, len(index)) for v in labels), dtype=numpy.int64, count=len(labels))
                block = numpy.zeros((len(labels), len(index) + 1), dtype=numpy.float32)
                block[numpy.arange(len(labels)), codes] = 1.0
                if not c["other"]:
                    new = {v for v in labels if v not in index}
                    if new:
                        unseen[c["name"]] = int(sum(v not in index for v in labels))
                blocks.append(block)
                continue
            if c["role"] == "date":
                if c["name"] not in dates:
                    dates[c["name"]] = _date_parts(series)
                values = dates[c["name"]][c["part"]]
            else:
                values = numbers(series, c["name"], source, position)
            missing = numpy.isnan(values)
            column = (numpy.where(missing, c["median"], values) - c["mean"]) / c["std"]
            blocks.append(column.astype(numpy.float32).reshape(-1, 1))
            if c["indicator"]:
                blocks.append(missing.astype(numpy.float32).reshape(-1, 1))
        if unseen:
            warnings.warn(f"{source}: categories never seen in training went to 'other': "
                          + ", ".join(f"{n} ({k} row{'s' if k != 1 else ''})" for n, k in unseen.items()), stacklevel=2)
        return numpy.hstack(blocks) if blocks else numpy.zeros((len(frame), 0), dtype=numpy.float32)

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self):
        return {"kind": "table", "min_count": self.min_count, "max_levels": self.max_levels,
                "overrides": self.overrides, "columns": self.columns_,
                "roles": [c.to_dict() for c in getattr(self, "roles_", [])]}

    @classmethod
    def from_dict(cls, d):
        pre = cls(d["overrides"]["categorical"], d["overrides"]["numeric"], d["overrides"]["drop"], d["min_count"],
                  d["max_levels"])
        pre.columns_ = [dict(c) for c in d["columns"]]
        return pre
