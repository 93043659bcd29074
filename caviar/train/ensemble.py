"""Ensembles: average the predicted probabilities of several networks (weighted).

``Ensemble.train`` trains members that differ only in their seed (initialization, shuffling,
dropout); ``Snapshots`` saves the weights along one run every few epochs, and
``Ensemble.from_snapshots`` turns them into members (a snapshot ensemble, almost free).
``greedy_selection`` picks members from many candidates by their dev predictions (Caruana et
al., 2004), as ``caviar tune`` does with its trials.
"""

from __future__ import annotations

import json
import os

import numpy

from .. import backend
from ..autodiff import no_grad
from ..nn.network import EVAL_CHUNK
from .callbacks import Callback, restore, snapshot
from .loop import fit
from .modelfile import save


# On two tables and three search spaces (benchmarks/tune_defaults.py, README "Hyperparameter
# search"), the test score at 10, 20, 50 and 100 steps was within 0.6 points and 5 steps trailed
# by up to 1.4; ``greedy_selection`` keeps its best step, so 50 costs little.
DEFAULT_SIZE = 50


def greedy_selection(P, y, head, size=DEFAULT_SIZE):
    """Caruana et al. (2004), "Ensemble selection from libraries of models": start from nothing
    and add, with replacement, the candidate whose addition most lowers the loss of the
    average on the dev set (``head.proba_costs``: log loss, or the MSE of predictions), ``size``
    times; keep the step with the lowest loss. ``P`` (n, m, n_y) holds the candidates' dev
    probabilities (or predictions), ``y`` the dev labels.

    Returns ``(counts, losses)``: how many times each candidate was chosen (the ensemble's
    weights, up to their sum) and the loss after each step up to the kept one. Ties go to the
    earlier candidate, so the selection is deterministic.
    """
    P = numpy.asarray(P, dtype=numpy.float64)
    if P.ndim != 3 or not len(P):
        raise ValueError(f"candidates' predictions must be a non-empty (n, m, n_y) stack, got shape {P.shape}")
    counts = numpy.zeros(len(P), dtype=numpy.int64)
    # only the entries the cost reads (``head.proba_cost_terms``): the same sums and costs, bit
    # for bit, over a tenth of the numbers for softmax on ten classes (40 trials' 359 x 10 dev
    # probabilities: 1.8-2.4 ms against 8.6 ms averaging whole stacks)
    Q, costs_of = head.proba_cost_terms(P, y)
    total = numpy.zeros(Q.shape[1:])
    chosen, losses = [], []
    for step in range(1, int(size) + 1):
        costs = costs_of((total + Q) / step)
        j = int(numpy.argmin(numpy.where(numpy.isfinite(costs), costs, numpy.inf)))
        total += Q[j]
        chosen.append(j)
        losses.append(float(costs[j]))
    best = int(numpy.argmin(losses))  # the first of equal losses: the smaller ensemble
    for j in chosen[:best + 1]:
        counts[j] += 1
    return counts, losses[:best + 1]


class Ensemble:
    """Members' probabilities (or predictions) averaged with ``weights`` (default equal; any
    non-negative numbers, normalized to sum to 1)."""

    def __init__(self, members, weights=None):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        weights = numpy.ones(len(members)) if weights is None else numpy.asarray(weights, dtype=numpy.float64)
        if weights.shape != (len(members),) or not numpy.isfinite(weights).all() or (weights < 0).any() \
                or weights.sum() <= 0:
            raise ValueError(f"an ensemble needs one non-negative weight per member ({len(members)}), got {weights}")
        self.weights = [float(w) for w in weights / weights.sum()]
        outputs = {m.output for m in members}
        if len(outputs) != 1 or len({tuple(m.config["layer_sizes"][:1] + m.config["layer_sizes"][-1:]) for m in members}) != 1:
            raise ValueError("ensemble members must share inputs, outputs and output type")
        self.members = members

    @classmethod
    def train(cls, make_network, X, y, k=5, seeds=None, **fit_kwargs):
        """Train ``k`` networks ``make_network(seed)`` with seeds 0..k-1 (or ``seeds``)."""
        seeds = list(range(k)) if seeds is None else list(seeds)
        members = []
        for seed in seeds:
            net = make_network(seed)
            fit(net, X, y, seed=seed, **fit_kwargs)
            members.append(net)
        return cls(members)

    @classmethod
    def train_population(cls, layer_sizes, X, y, k=5, seeds=None, epochs=10, batch_size=64, validation_data=None,
                         shuffle_seed=0, max_population=None, optimizer="adam", member=None, callbacks=(),
                         augment=None, verbose=False, **network):
        """Train ``k`` members (seeds 0..k-1) as one population: one vectorized computation
        instead of k runs, each member exactly the network ``fit`` would train alone with
        ``seed=s, shuffle_seed=shuffle_seed``. ``member`` holds the per-member settings (lr,
        l2, keep_prob, betas...), ``network`` the shared ones (activation, output, batchnorm);
        ``callbacks`` (early stopping: each member keeps its own best epoch) and ``augment``
        are the training loop's. Returns the ensemble and the members' histories."""
        from .population import Population, chunks
        from .population import max_population as limit_for

        seeds = list(range(k)) if seeds is None else list(seeds)
        members, histories = [], []
        size = limit_for(layer_sizes, batch_size, network.get("dtype", "float32"), max_population)
        for group in chunks(seeds, size):
            pop = Population(layer_sizes, [{"seed": s, **(member or {})} for s in group], optimizer=optimizer, **network)
            histories += pop.fit(X, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                                 shuffle_seed=shuffle_seed, callbacks=callbacks, augment=augment, verbose=verbose)
            members += [pop.results[i][1] for i in range(len(group))]
        return cls(members), histories

    @classmethod
    def select(cls, candidates, X_dev, y_dev, size=DEFAULT_SIZE):
        """(ensemble, counts): the greedy selection (``greedy_selection``) among ``candidates``
        by their predictions on the dev set, weighted by how often each was chosen; ``counts``
        has one entry per candidate (0 for those left out)."""
        pool = cls(candidates)
        y = backend.to_numpy(candidates[0].check_y(y_dev, len(X_dev)))
        counts, _ = greedy_selection(backend.to_numpy(pool.member_proba(X_dev)), y, pool.head, size)
        chosen = numpy.flatnonzero(counts)
        return cls([candidates[i] for i in chosen], counts[chosen]), counts

    @classmethod
    def from_snapshots(cls, net, snapshots):
        """Members with ``net``'s configuration and the weights of each snapshot."""
        from ..nn.network import Network

        members = []
        for snap in snapshots:
            member = Network(**net.config)
            restore(member, snap)
            members.append(member)
        return cls(members)

    @property
    def output(self):
        return self.members[0].output

    @property
    def head(self):
        return self.members[0].head

    @property
    def config(self):
        return self.members[0].config

    def member_proba(self, X):
        """Every member's probabilities (or outputs), (K, m, n_y) in the members' order. Members
        of one architecture are computed together, in one forward pass of their weights stacked
        on a leading axis (a population's forward), not member by member; each member's values
        are the ones it gives alone."""
        from .population import architecture, stacked_network

        first = self.members[0]
        X = first.check_X(X)
        groups = {}
        for i, m in enumerate(self.members):
            groups.setdefault(architecture(m), []).append(i)
        xp = backend.get_array_module(X)
        out = None
        for numbers in groups.values():
            net = stacked_network([self.members[i] for i in numbers])
            rows = max(1, EVAL_CHUNK // len(numbers))  # bounds the (K, rows, n) activations
            with no_grad():
                z = [net.forward(X[i:i + rows], training=False).data for i in range(0, len(X), rows)]
            z = xp.concatenate(z, axis=1) if len(z) != 1 else z[0]
            p = self.head.proba(z)
            if out is None:
                out = xp.empty((len(self.members),) + p.shape[1:], dtype=p.dtype)
            out[numbers] = p
        return out

    def predict_proba(self, X):
        """The weighted mean of the members' probabilities (or of their outputs, for
        regression), in float64."""
        P = self.member_proba(X)
        xp = backend.get_array_module(P)
        weights = xp.asarray(self.weights, dtype=numpy.float64)
        return xp.tensordot(weights, P.astype(numpy.float64), axes=1)

    def predict(self, X):
        return self.head.predict(self.predict_proba(X))

    def evaluate(self, X, y):
        """The ensemble's cost and metrics, and each member's, side by side. The cost is the
        loss of the averaged probabilities (log loss; for regression, the MSE)."""
        first = self.members[0]
        X = first.check_X(X)
        y = backend.to_numpy(first.check_y(y, len(X)))
        p = backend.to_numpy(self.predict_proba(X))
        result = {"cost": self.head.proba_cost(p, y), **self.head.proba_metrics(p, y)}
        result["members"] = [m.evaluate(X, y) for m in self.members]
        return result

    def save(self, path, extras=None):
        """A directory with ``ensemble.json`` and one model directory per member."""
        os.makedirs(path, exist_ok=True)
        for i, m in enumerate(self.members):
            save(m, os.path.join(path, f"member-{i}"))
        with open(os.path.join(path, "ensemble.json"), "w") as f:
            json.dump({"format": "caviar-ensemble", "members": len(self.members), "weights": self.weights,
                       "extras": extras if extras is not None else getattr(self.members[0], "extras", {})}, f, indent=1)
        return path


class Snapshots(Callback):
    """Keep a copy of the weights every ``every`` epochs (for a snapshot ensemble)."""

    def __init__(self, every=5):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every!r}")
        self.every = every
        self.snapshots = []

    def on_epoch_end(self, run, epoch, logs):
        if epoch % self.every == 0:
            self.snapshots.append(snapshot(run.net))


def save_model(model, path, extras=None):
    """Write a Network or an Ensemble to the directory ``path`` (``caviar.save``)."""
    if isinstance(model, Ensemble):
        return model.save(path, extras)
    return save(model, path, extras)


def load_model(path):
    """A Network or an Ensemble from a directory written by ``save`` (``caviar.load``)."""
    from .modelfile import ModelFileError, load

    path = os.fspath(path)
    manifest = os.path.join(path, "ensemble.json")
    if os.path.isfile(manifest):
        try:
            with open(manifest) as f:
                meta = json.load(f)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{manifest} is not valid JSON: {exc}") from None
        members = [load(os.path.join(path, f"member-{i}")) for i in range(int(meta["members"]))]
        ensemble = Ensemble(members, meta.get("weights"))
        ensemble.extras = meta.get("extras", {})
        return ensemble
    return load(path)
