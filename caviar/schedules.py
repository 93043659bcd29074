"""Learning-rate decay by epoch, the notes' formulas. Epochs count from 1, as in the notes'
table (alpha0 = 0.2, decay_rate = 1: epoch 1 -> 0.1, epoch 2 -> 0.067, ...).

A schedule is a callable ``epoch -> lr``. One built without ``lr0`` takes the learning rate
given to ``fit`` as its alpha0 (``schedule.with_lr0(lr)``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace


def _positive(name, value, allow_zero=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return value


@dataclass(frozen=True)
class Schedule:
    lr0: float | None = None

    def with_lr0(self, lr0):
        return self if self.lr0 is not None else replace(self, lr0=lr0)

    def __call__(self, epoch):
        if self.lr0 is None:
            raise ValueError(f"{type(self).__name__} has no initial learning rate lr0; give one or pass it to fit(lr=...)")
        if epoch < 1:
            raise ValueError(f"epochs count from 1, got {epoch}")
        return self.rate(epoch)

    def rate(self, epoch):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class InverseTime(Schedule):
    """alpha = alpha0 / (1 + decay_rate * epoch)."""

    decay_rate: float = 1.0

    def __post_init__(self):
        _positive("decay_rate", self.decay_rate, allow_zero=True)

    def rate(self, epoch):
        return self.lr0 / (1 + self.decay_rate * epoch)


@dataclass(frozen=True)
class Exponential(Schedule):
    """alpha = base^epoch * alpha0 (base 0.95 in the notes)."""

    base: float = 0.95

    def __post_init__(self):
        if not 0 < self.base <= 1:
            raise ValueError(f"base must be in (0, 1], got {self.base!r}")

    def rate(self, epoch):
        return self.base**epoch * self.lr0


@dataclass(frozen=True)
class InverseSqrt(Schedule):
    """alpha = k / sqrt(epoch) * alpha0."""

    k: float = 1.0

    def __post_init__(self):
        _positive("k", self.k)

    def rate(self, epoch):
        return self.k / math.sqrt(epoch) * self.lr0


@dataclass(frozen=True)
class Staircase(Schedule):
    """Discrete staircase: alpha = alpha0 * factor^floor((epoch - 1) / every)."""

    every: int = 10
    factor: float = 0.5

    def __post_init__(self):
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {self.every!r}")
        if not 0 < self.factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {self.factor!r}")

    def rate(self, epoch):
        return self.lr0 * self.factor ** ((epoch - 1) // self.every)


class Manual(Schedule):
    """The notes' "manual decay": a callable ``epoch -> lr``, or a table {first epoch: lr}.

    With a table, each learning rate holds from its epoch until the next entry; before the
    first entry, ``lr0`` (the rate given to ``fit``) holds.
    """

    def __init__(self, table_or_fn, lr0=None):
        object.__setattr__(self, "lr0", lr0)
        if callable(table_or_fn):
            object.__setattr__(self, "fn", table_or_fn)
            object.__setattr__(self, "table", None)
        else:
            table = {int(k): float(v) for k, v in dict(table_or_fn).items()}
            for epoch, lr in table.items():
                if epoch < 1 or lr < 0:
                    raise ValueError(f"manual schedule entry {epoch}: {lr} needs epoch >= 1 and lr >= 0")
            object.__setattr__(self, "fn", None)
            object.__setattr__(self, "table", dict(sorted(table.items())))

    def with_lr0(self, lr0):
        if self.lr0 is not None:
            return self
        return Manual(self.fn if self.fn is not None else self.table, lr0)

    def __call__(self, epoch):
        if self.fn is not None:
            return float(self.fn(epoch))
        lr = self.lr0
        for start, value in self.table.items():
            if epoch >= start:
                lr = value
        if lr is None:
            raise ValueError(f"manual schedule has no learning rate for epoch {epoch}; give lr0 or an entry for epoch 1")
        return lr

    def __repr__(self):
        return f"Manual({self.fn or self.table!r}, lr0={self.lr0!r})"


KINDS = {"inverse-time": InverseTime, "exponential": Exponential, "inverse-sqrt": InverseSqrt, "staircase": Staircase}


def parse(spec):
    """A schedule from text, as the command line writes it: 'inverse-time:1.0',
    'exponential:0.95', 'inverse-sqrt:1.0', 'staircase:10:0.5' (every 10 epochs, times 0.5)."""
    name, _, args = str(spec).partition(":")
    if name not in KINDS:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(KINDS)}")
    try:
        values = [float(a) for a in args.split(":")] if args else []
    except ValueError:
        raise ValueError(f"schedule {spec!r} has a non-numeric argument") from None
    if name == "staircase":
        if len(values) > 2:
            raise ValueError(f"staircase takes EVERY[:FACTOR], got {spec!r}")
        kwargs = {"every": int(values[0])} if values else {}
        if len(values) == 2:
            kwargs["factor"] = values[1]
        return Staircase(**kwargs)
    if len(values) > 1:
        raise ValueError(f"{name} takes one argument, got {spec!r}")
    field = {"inverse-time": "decay_rate", "exponential": "base", "inverse-sqrt": "k"}[name]
    return KINDS[name](**({field: values[0]} if values else {}))


def get(schedule):
    """None, a Schedule, a text spec, a callable epoch -> lr, or a {epoch: lr} table."""
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        return parse(schedule)
    if callable(schedule) or isinstance(schedule, dict):
        return Manual(schedule)
    raise TypeError(f"a schedule is a Schedule, a spec like 'inverse-time:1.0', a callable or a dict, got {schedule!r}")


class PerMember:
    """A population's learning rates by epoch: member k follows ``schedules[k]`` (already
    holding its own lr0), or keeps ``lrs[k]`` where it has none. Returns (K, 1) float64, each
    entry computed as the member's own schedule computes it alone."""

    def __init__(self, schedules, lrs):
        self.schedules, self.lrs = list(schedules), [float(v) for v in lrs]

    def __call__(self, epoch):
        import numpy

        return numpy.asarray([s(epoch) if s is not None else lr for s, lr in zip(self.schedules, self.lrs)],
                             dtype=numpy.float64).reshape(-1, 1)

    def keep(self, slots):
        return PerMember([self.schedules[s] for s in slots], [self.lrs[s] for s in slots])
