"""Search spaces on the right scales (the notes, week 3: "use an appropriate scale").

- ``uniform(a, b)`` and ``integer(a, b)``: linear scales (layers, hidden units).
- ``log_uniform(a, b)``: r uniform in [log10 a, log10 b], value 10**r (learning rate, L2, decay
  rate): as many samples in [1e-4, 1e-3] as in [0.1, 1].
- ``one_minus_log_uniform(a, b)``: for averaging betas, 1 - beta is log-uniform, so beta in
  [0.9, 0.999] is sampled as densely in [0.99, 0.999] as in [0.9, 0.99] (beta near 1 is where
  small changes matter: 1/(1-beta) values are averaged).
- ``choice([...])``: categories (activation, optimizer, batch size among powers of two).

Correction to the notes: one copy writes ``r = -4 * np.random.randn()``, a normal draw that
is unbounded and mostly near 0; the log scale needs ``r = -4 * np.random.rand()``, uniform in
[-4, 0], which ``log_uniform`` does.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

from ..errors import CaviarError
from ..train.hyperparameters import SCHEMA


class SpaceError(CaviarError, ValueError):
    """A search-space entry that cannot be used; the message names the entry."""


def _number(name, value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SpaceError(f"{name}: {what} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class Dimension:
    name: str

    def sample(self, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    # coarse-to-fine works on each dimension's own scale: to_unit maps a value into [0, 1]
    def to_unit(self, value):  # pragma: no cover - abstract
        raise NotImplementedError

    def from_unit(self, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def grid(self, k):
        """k values evenly spread on the dimension's own scale."""
        if k == 1:
            return [self.from_unit(0.5)]
        return [self.from_unit(i / (k - 1)) for i in range(k)]


@dataclass(frozen=True)
class _Scaled(Dimension):
    """A continuous range sampled uniformly on its own scale: ``_forward`` maps a value onto
    that scale (identity, log10, or log10(1 - v)) and ``_inverse`` maps it back; sampling,
    coarse-to-fine boxes and grids all work on that scale."""

    low: float = 0.0
    high: float = 1.0
    kind = ""

    def _forward(self, v):
        return v

    def _inverse(self, r):
        return r

    def _check(self):
        pass

    def __post_init__(self):
        _number(self.name, self.low, "low")
        _number(self.name, self.high, "high")
        self._check()
        if not self.low < self.high:
            raise SpaceError(f"{self.name}: the range needs low < high, got [{self.low}, {self.high}]")

    def sample(self, rng):
        lo, hi = sorted((self._forward(self.low), self._forward(self.high)))
        return float(self._inverse(rng.uniform(lo, hi)))

    def to_unit(self, value):
        a, b = self._forward(self.low), self._forward(self.high)
        return (self._forward(value) - a) / (b - a)

    def from_unit(self, u):
        a, b = self._forward(self.low), self._forward(self.high)
        return float(self._inverse(a + min(max(u, 0.0), 1.0) * (b - a)))

    def narrowed(self, lo_unit, hi_unit):
        return type(self)(self.name, self.from_unit(lo_unit), self.from_unit(hi_unit))

    def spec(self):
        return {self.kind: [self.low, self.high]}


@dataclass(frozen=True)
class Uniform(_Scaled):
    scale = "linear"
    kind = "uniform"


@dataclass(frozen=True)
class LogUniform(_Scaled):
    """r uniform in [log10 low, log10 high], value 10**r."""

    low: float = 1e-4
    high: float = 1.0
    scale = "log"
    kind = "log_uniform"

    def _check(self):
        if self.low <= 0 or self.high <= 0:
            raise SpaceError(f"{self.name}: a log range must be positive, got [{self.low}, {self.high}] (it touches zero or below)")

    def _forward(self, v):
        return math.log10(v)

    def _inverse(self, r):
        return 10**r


@dataclass(frozen=True)
class OneMinusLogUniform(_Scaled):
    """beta in [low, high] with 1 - beta log-uniform in [1 - high, 1 - low]."""

    low: float = 0.9
    high: float = 0.999
    scale = "one_minus_log"
    kind = "one_minus_log_uniform"

    def _check(self):
        if not (0 < self.low < 1 and 0 < self.high < 1):
            raise SpaceError(f"{self.name}: a beta range must lie inside (0, 1), got [{self.low}, {self.high}]")

    def _forward(self, v):
        return math.log10(1 - v)

    def _inverse(self, r):
        return 1 - 10**r


@dataclass(frozen=True)
class Integer(Dimension):
    low: int = 1
    high: int = 10
    scale = "linear"

    def __post_init__(self):
        for what, v in (("low", self.low), ("high", self.high)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise SpaceError(f"{self.name}: {what} must be an integer, got {v!r}")
        if not self.low < self.high:
            raise SpaceError(f"{self.name}: the range needs low < high, got [{self.low}, {self.high}]")

    def sample(self, rng):
        return int(rng.integers(self.low, self.high + 1))

    def to_unit(self, value):
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, u):
        return int(round(self.low + min(max(u, 0.0), 1.0) * (self.high - self.low)))

    def grid(self, k):
        return sorted({self.from_unit(i / (k - 1)) if k > 1 else self.from_unit(0.5) for i in range(k)})

    def narrowed(self, lo_unit, hi_unit):
        lo, hi = self.from_unit(lo_unit), self.from_unit(hi_unit)
        if lo >= hi:  # keep a range of at least two integers inside the original bounds
            lo, hi = (lo - 1, lo) if lo > self.low else (lo, lo + 1)
        return Integer(self.name, lo, hi)

    def spec(self):
        return {"integer": [self.low, self.high]}


@dataclass(frozen=True)
class Choice(Dimension):
    options: tuple = ()
    scale = "categorical"

    def __post_init__(self):
        if len(self.options) < 1:
            raise SpaceError(f"{self.name}: a choice needs at least one option")
        if len(set(map(repr, self.options))) != len(self.options):
            raise SpaceError(f"{self.name}: choice options repeat: {list(self.options)}")

    def sample(self, rng):
        return self.options[int(rng.integers(len(self.options)))]

    def to_unit(self, value):
        return self.options.index(value) / max(len(self.options) - 1, 1)

    def from_unit(self, u):
        return self.options[int(round(min(max(u, 0.0), 1.0) * (len(self.options) - 1)))]

    def grid(self, k):
        return list(self.options)

    def restricted(self, values):
        kept = tuple(o for o in self.options if o in values)
        return Choice(self.name, kept or self.options)

    def spec(self):
        return {"choice": list(self.options)}


def uniform(low, high):
    return ("uniform", low, high)


def integer(low, high):
    return ("integer", low, high)


def log_uniform(low, high):
    return ("log_uniform", low, high)


def one_minus_log_uniform(low, high):
    return ("one_minus_log_uniform", low, high)


def choice(options):
    return ("choice", list(options))


KINDS = {"uniform": Uniform, "integer": Integer, "log_uniform": LogUniform,
         "one_minus_log_uniform": OneMinusLogUniform, "choice": Choice}

# The hyperparameters a trial understands, in the notes' order of importance: the schema's.
KNOWN = {name: h.help for name, h in SCHEMA.items()}


def _coerce(value):
    if isinstance(value, str):
        try:
            return int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            return value
    return value


def _dimension(name, spec):
    if name not in KNOWN:
        raise SpaceError(f"unknown hyperparameter {name!r}; known: {', '.join(KNOWN)}")
    if isinstance(spec, tuple) and spec and spec[0] in KINDS:  # from the helper functions
        kind, args = spec[0], list(spec[1:])
    elif isinstance(spec, dict) and len(spec) == 1:
        kind, value = next(iter(spec.items()))
        if kind not in KINDS:
            raise SpaceError(f"{name}: unknown dimension {kind!r}; expected one of {', '.join(KINDS)}")
        args = [value] if kind == "choice" else value
    elif isinstance(spec, Dimension):
        return spec
    elif isinstance(spec, (list, tuple, dict)):
        raise SpaceError(f"{name}: write a dimension as {{kind: [low, high]}} or {{choice: [...]}}, got {spec!r}")
    else:
        return Choice(name, (spec,))  # a fixed value
    if kind == "choice":
        options = args[0] if len(args) == 1 else args
        if not isinstance(options, (list, tuple)):
            raise SpaceError(f"{name}: choice needs a list of options, got {options!r}")
        return Choice(name, tuple(options))
    if not isinstance(args, (list, tuple)) or len(args) != 2:
        raise SpaceError(f"{name}: {kind} needs [low, high], got {args!r}")
    low, high = (_coerce(v) for v in args)  # YAML 1.1 reads 1e-4 as a string
    if kind == "integer":
        return Integer(name, low, high)
    return KINDS[kind](name, float(_number(name, low, "low")), float(_number(name, high, "high")))


class Space:
    """An ordered set of dimensions; ``sample(rng)`` draws one configuration (a dict)."""

    def __init__(self, dims):
        items = dims.items() if isinstance(dims, dict) else [(d.name, d) for d in dims]
        self.dims = {}
        for name, spec in items:
            self.dims[name] = _dimension(name, spec)
        if not self.dims:
            raise SpaceError("a search space needs at least one hyperparameter")

    def sample(self, rng):
        return {name: d.sample(rng) for name, d in self.dims.items()}

    def __iter__(self):
        return iter(self.dims.values())

    def __getitem__(self, name):
        return self.dims[name]

    def to_dict(self):
        return {name: d.spec() for name, d in self.dims.items()}

    @classmethod
    def from_dict(cls, d):
        return cls(d)

    def __repr__(self):
        return f"Space({self.to_dict()})"


def notes_space():
    """The notes' hyperparameters in their order of importance (week 3: lr; beta1, batch size,
    hidden units; layers, decay; then the rest), with ranges that train well."""
    return Space({
        "lr": log_uniform(1e-4, 3e-2),
        "beta1": one_minus_log_uniform(0.8, 0.99),
        "batch_size": choice([32, 64, 128]),
        "hidden_units": integer(16, 128),
        "layers": integer(1, 3),
        "decay_rate": log_uniform(1e-3, 0.3),
        "l2": log_uniform(1e-4, 1.0),
        "keep_prob": uniform(0.6, 1.0),
        "beta2": one_minus_log_uniform(0.99, 0.9999),
        "epsilon": log_uniform(1e-9, 1e-6),
    })


def default_space():
    """``caviar tune``'s space: what matters on tables, each on its own scale. Adam's betas and
    epsilon stay at their defaults (the notes rank them last). Widths and depths stay moderate:
    in a fixed time, more and smaller trials make a better ensemble (the README's "Hyperparameter
    search" has the measurements, ``benchmarks/tune_defaults.py``)."""
    return Space(dict(DEFAULT_SPACE))


DEFAULT_SPACE = {
    "lr": log_uniform(3e-4, 1e-2),
    "batch_size": choice([32, 64, 128]),
    "hidden_units": choice([32, 64, 128, 256]),
    "layers": integer(1, 3),
    "batchnorm": choice([False, True]),
    "keep_prob": uniform(0.5, 1.0),
    "l2": log_uniform(1e-4, 1.0),
    "decay_rate": log_uniform(1e-3, 0.1),
}


def load_space(path):
    """A space from a YAML (.yaml/.yml) or TOML (.toml) file: ``name: {kind: [low, high]}``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpaceError(f"no space file at {path!r}")
    try:
        if path.lower().endswith(".toml"):
            import tomllib

            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif path.lower().endswith((".yaml", ".yml")):
            import yaml

            with open(path) as f:
                data = yaml.safe_load(f)
        else:
            raise SpaceError(f"{path}: a space file is .yaml, .yml or .toml")
    except SpaceError:
        raise
    except Exception as exc:  # a parser's own error, with its line
        raise SpaceError(f"{path}: cannot parse it: {exc}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping of hyperparameter names to dimensions")
    try:
        return Space(data)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None
