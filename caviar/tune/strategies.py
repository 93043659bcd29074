"""Search strategies. Each proposes trials from what the study already holds, so proposing
again after a crash adds nothing twice (every trial has a key), and resuming is exact.

- ``random``: the notes' "try random values: don't use a grid".
- ``grid``: kept to show why random is better: with the same budget it tries few distinct
  values of each hyperparameter.
- ``coarse-to-fine``: rounds; each new round samples inside a box, on every dimension's own
  scale, around the best trials of the round before. The box of every round is recorded.
- ``halving``: successive halving (beyond the notes): many trials on a small epoch budget,
  the best 1/eta promoted to eta times the budget, until the full budget.
"""

from __future__ import annotations

import itertools
import math

import numpy

from ..train import hyperparameters as H
from .space import Choice, Space

# Hyperparameters that fix a network's shape or its mini-batches (the schema's 'shape' entries):
# trials that share them can train as one population (caviar training); every other
# hyperparameter may differ per member.
SHAPE_KEYS = H.SHAPE


def population_key(trial):
    """Trials with equal keys (shape hyperparameters and epoch budget) can train as one population."""
    return H.shape_key(trial["params"]) + (trial["budget"],)


def sample(space, seed, index, group_size=1, stream=()):
    """One configuration. With ``group_size`` > 1, the shape hyperparameters are drawn once per
    group of consecutive trials and the rest per trial: every hyperparameter keeps its
    distribution, and a group can train as one population."""
    config = space.sample(numpy.random.default_rng([seed, *stream, index]))
    if group_size > 1:
        shape_rng = numpy.random.default_rng([seed, *stream, index // group_size, 1_000_003])
        for dim in space:
            if dim.name in SHAPE_KEYS:
                config[dim.name] = dim.sample(shape_rng)
    return config


def trial_seed(seed, index):
    """A trial's training seed, derived from the study seed and the trial's index."""
    return int(numpy.random.default_rng([seed, index, 7]).integers(2**31 - 1))


def rank_key(value, number, higher):
    """Sort key of a finished trial, best first: the better value, then the lower number."""
    return (-value if higher else value, number)


def ranked(trials, higher):
    """Finished trials with a value, best first."""
    done = [t for t in trials if t["value"] is not None and t["status"] in ("complete", "diverged")]
    return sorted(done, key=lambda t: rank_key(t["value"], t["number"], higher))


class Strategy:
    name = ""

    def __init__(self, space, trials, epochs, seed, higher=True, group_size=1):
        if trials < 1:
            raise ValueError(f"trials must be at least 1, got {trials}")
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self.space, self.n, self.epochs, self.seed, self.higher = space, int(trials), int(epochs), int(seed), higher
        self.group_size = int(group_size)

    def _spec(self, key, index, params, budget=None, **extra):
        return {"key": key, "params": params, "seed": trial_seed(self.seed, index), "budget": budget or self.epochs, **extra}

    def propose(self, study, horizon=None):  # pragma: no cover - abstract
        """Every trial that can be specified now (those already in the study included). The
        search ends when a proposal leaves nothing pending. ``horizon`` (a time-budgeted search)
        says how many trials in all are wanted now; a strategy may propose fewer than it would."""
        raise NotImplementedError


class RandomSearch(Strategy):
    name = "random"

    def propose(self, study, horizon=None):
        n = self.n if horizon is None else min(self.n, horizon)
        return [self._spec(f"t{i}", i, sample(self.space, self.seed, i, self.group_size)) for i in range(n)]


class GridSearch(Strategy):
    name = "grid"

    def points(self):  # a grid ignores group_size: its points are fixed
        dims = list(self.space)
        continuous = [d for d in dims if not isinstance(d, Choice)]
        fixed = math.prod(len(d.options) for d in dims if isinstance(d, Choice))
        per_dim = max(1, int((self.n / max(fixed, 1)) ** (1 / max(len(continuous), 1)) + 1e-9)) if continuous else 1
        axes = [d.grid(per_dim) if not isinstance(d, Choice) else list(d.options) for d in dims]
        return [dict(zip([d.name for d in dims], combo)) for combo in itertools.islice(itertools.product(*axes), self.n)]

    def propose(self, study, horizon=None):
        return [self._spec(f"g{i}", i, p) for i, p in enumerate(self.points())]


class CoarseToFine(Strategy):
    name = "coarse-to-fine"

    def __init__(self, space, trials, epochs, seed, higher=True, group_size=1, rounds=3, top=0.25, margin=0.1):
        super().__init__(space, trials, epochs, seed, higher, group_size)
        if not 1 <= rounds <= self.n:
            raise ValueError(f"rounds must be between 1 and the number of trials ({self.n}), got {rounds}")
        self.rounds, self.top, self.margin = int(rounds), top, margin
        base, extra = divmod(self.n, self.rounds)
        self.sizes = [base + (1 if r < extra else 0) for r in range(self.rounds)]

    def box(self, best_params, space):
        """The smallest box around the best trials on each dimension's own scale, widened by
        ``margin`` of the current range on each side and kept inside the current box."""
        dims = {}
        for d in space:
            values = [p[d.name] for p in best_params]
            if isinstance(d, Choice):
                dims[d.name] = d.restricted(values)
                continue
            units = [d.to_unit(v) for v in values]
            lo, hi = max(0.0, min(units) - self.margin), min(1.0, max(units) + self.margin)
            dims[d.name] = d.narrowed(lo, hi)
        return Space(dims)

    def propose(self, study, horizon=None):
        trials = study.trials()
        boxes = study.boxes()
        if 0 not in boxes:
            study.set_box(0, self.space.to_dict())
            boxes[0] = self.space.to_dict()
        specs, index = [], 0
        for r in range(self.rounds):
            if r not in boxes:
                previous = [t for t in trials if t["round"] == r - 1]
                if len(previous) < self.sizes[r - 1] or any(t["status"] in ("pending", "running") for t in previous):
                    break  # round r-1 is not finished: wait
                best = ranked(previous, self.higher)
                keep = best[: max(2, math.ceil(self.top * len(best)))]
                box = self.box([t["params"] for t in keep], Space(boxes[r - 1])) if keep else Space(boxes[r - 1])
                study.set_box(r, box.to_dict())
                boxes[r] = box.to_dict()
            space = Space(boxes[r])
            for i in range(self.sizes[r]):
                specs.append(self._spec(f"c{r}-{i}", index, sample(space, self.seed, i, self.group_size, (r,)), round=r))
                index += 1
        return specs


class SuccessiveHalving(Strategy):
    name = "halving"

    def __init__(self, space, trials, epochs, seed, higher=True, group_size=1, eta=3, min_epochs=1):
        super().__init__(space, trials, epochs, seed, higher, group_size)
        if eta < 2:
            raise ValueError(f"eta must be at least 2, got {eta}")
        if not 1 <= min_epochs <= epochs:
            raise ValueError(f"min_epochs must be between 1 and epochs ({epochs}), got {min_epochs}")
        self.eta = int(eta)
        self.budgets = [int(min_epochs)]
        while self.budgets[-1] * self.eta <= epochs:
            self.budgets.append(self.budgets[-1] * self.eta)
        if self.budgets[-1] < epochs:
            self.budgets.append(int(epochs))

    def propose(self, study, horizon=None):
        specs = [self._spec(f"h0-{i}", i, sample(self.space, self.seed, i, self.group_size),
                            budget=self.budgets[0], rung=0) for i in range(self.n)]
        trials = study.trials()
        for rung in range(1, len(self.budgets)):
            below = [t for t in trials if t["rung"] == rung - 1]
            expected = self.n if rung == 1 else self._promoted_count(rung - 1)
            if len(below) < expected or any(t["status"] in ("pending", "running") for t in below):
                break
            for t in ranked(below, self.higher)[: self._promoted_count(rung)]:
                index = int(t["key"].split("-")[1])
                specs.append({"key": f"h{rung}-{index}", "params": t["params"], "seed": t["seed"],
                              "budget": self.budgets[rung], "rung": rung, "parent": t["number"]})
        return specs

    def _promoted_count(self, rung):
        return max(1, self.n // self.eta**rung)


STRATEGIES = {"random": RandomSearch, "grid": GridSearch, "coarse-to-fine": CoarseToFine, "halving": SuccessiveHalving}


def make_strategy(settings, space):
    name = settings["strategy"]
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    higher = settings["metric"] != "dev_mse"
    common = dict(trials=settings["trials"], epochs=settings["epochs"], seed=settings["seed"], higher=higher,
                  group_size=settings.get("group_size", 1))
    if name == "coarse-to-fine":
        return CoarseToFine(space, rounds=settings.get("rounds", 3), **common)
    if name == "halving":
        return SuccessiveHalving(space, eta=settings.get("eta", 3), min_epochs=settings.get("min_epochs", 1), **common)
    return STRATEGIES[name](space, **common)
