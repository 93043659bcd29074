"""The one training loop: mini-batch gradient descent with any optimizer, schedules and
callbacks, for a single ``Network`` and for a ``Population`` of K networks alike.

The loop talks to what it trains through a small "trainee" protocol: ``numbers`` (the active
members), ``histories``, ``params()``, ``batch_cost(Xb, yb)`` (the total cost to backpropagate
and each member's J), ``step_decay`` (after ``batch_cost``: the L2 factors the optimizer adds,
for a cost that leaves its L2 term off the tape, else None), ``metric``, ``augment``, ``evaluate``, ``leave(slots, status)`` (members that
stop), ``snapshot(number)`` and ``network(number)``. ``_Single`` wraps a Network as a
population of one; ``Population`` implements it for K members stacked on a model axis.
"""

from __future__ import annotations

import numbers
import time

import numpy

from .. import backend, optim, schedules
from ..errors import DivergedError
from ..memory import keep_freed_memory
from .batches import check_batch_size, minibatch_indices
from .callbacks import ProgressBar, snapshot
from .history import History
from .state import state_of


class Run:
    """The state callbacks see.

    ``net`` (the network trained; a population's stacked network), ``optimizer``, ``epoch``,
    ``iteration``, ``epoch_target`` (the last epoch of this fit), ``batches_per_epoch``,
    ``population`` (True for a population), ``histories`` (member number -> History of this
    fit; a single network is member 0), ``history`` (member 0's, or a population's first),
    ``members`` (the active member numbers) and ``member_logs`` (member number -> the last
    epoch's figures). Set ``stop = True`` to end training after the current mini-batch, or call
    ``stop_members(numbers)`` to let members leave at the end of the epoch.
    """

    def __init__(self, trainee, optimizer, epoch, epoch_target, batches_per_epoch):
        self.trainee, self.net, self.optimizer = trainee, trainee.net, optimizer
        self.population = trainee.population
        self.histories = trainee.histories
        self.history = self.histories[min(self.histories)]
        self.epoch, self.epoch_target, self.batches_per_epoch = epoch, epoch_target, batches_per_epoch
        self.iteration = optimizer.iterations
        self.stop = False
        self.member_logs = {}
        self.leaving = set()

    @property
    def members(self):
        return list(self.trainee.numbers)

    def stop_members(self, numbers):
        """Members that leave at the end of this epoch (all of them: training stops)."""
        self.leaving |= set(numbers)
        if not set(self.trainee.numbers) - self.leaving:
            self.stop = True


class _Single:
    """A Network as the loop's trainee: a population of one, member number 0."""

    population = False
    step_decay = None  # its L2 term is on the tape

    def __init__(self, net):
        self.net, self.head = net, net.head
        self.numbers = [0]
        self.histories = {0: History()}
        self.params = net.parameters

    def batch_cost(self, Xb, yb, wb=None):
        net = self.net
        logits = net.forward(Xb, training=True)
        J = net.loss(logits, yb, wb)
        reg = net.regularization(len(Xb))
        cost = J if reg is None else J + reg
        return cost, numpy.array([float(cost.data)]), logits

    def metric(self, z, y):
        return numpy.array([self.head.primary(z, y)])

    def augment(self, Xb, augment):
        return augment(Xb, self.net.rng)

    def evaluate(self, X, y):
        return [self.net.evaluate(X, y)]

    def diverged(self, run, slots, values, opt):
        error = DivergedError(run.iteration + 1, float(values[0]), opt.current_lr() if not callable(opt.lr) else None)
        error.history = run.history
        raise error

    def leave(self, slots, status):
        if slots:
            self.numbers = []

    def snapshot(self, number):
        return snapshot(self.net)

    def network(self, number):
        return self.net

    def lrs(self, opt):
        return [None if callable(opt.lr) else float(opt.current_lr())]


def as_features(net, X, name):
    """X checked against the network and cast to its parameters' dtype, on its device."""
    X = net.check_X(X)
    dtype = net.params["W1"].dtype
    X = X if X.dtype == dtype else X.astype(dtype)
    mod = backend.get_array_module(X)
    if not bool(mod.isfinite(X).all()):
        raise ValueError(f"{name} holds NaN or inf values")
    return X


def check_epochs(epochs):
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    return int(epochs)


def check_sample_weight(sample_weight, m, X):
    """Examples' weights as an array (m,) where X lives: finite, non-negative, not all zero."""
    if sample_weight is None:
        return None
    w = numpy.asarray(backend.to_numpy(sample_weight) if hasattr(sample_weight, "shape") else sample_weight,
                      dtype=numpy.float64)
    if w.ndim != 1 or len(w) != m:
        raise ValueError(f"sample_weight must hold one weight per example, shape ({m},), got shape {w.shape}")
    if not numpy.isfinite(w).all() or (w < 0).any() or not w.any():
        raise ValueError("sample_weight must be finite, non-negative and not all zero")
    return backend.to_module_of(w, X)


def check_validation(net, validation_data):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_dev, y_dev)")
    X_dev = as_features(net, validation_data[0], "X_dev")
    return X_dev, net.check_y(validation_data[1], len(X_dev))


def check_augment(augment):
    if augment is not None and backend.name() != "numpy":
        raise ValueError(f"augmentation works on NumPy arrays; train with the numpy backend to augment "
                         f"(backend now: {backend.name()})")


def _make_optimizer(state, optimizer, lr, optimizer_options):
    if optimizer is None and state.optimizer is not None and not optimizer_options:
        opt = state.optimizer  # a resumed fit continues with the same optimizer state
    elif isinstance(optimizer, optim.Optimizer):
        if optimizer_options:
            raise ValueError(f"options {sorted(optimizer_options)} apply to an optimizer given by name, not to {optimizer!r}")
        opt = optimizer
    else:
        return optim.get(optimizer or "adam", lr, **optimizer_options)
    if lr is not None:
        opt.set_lr(lr)
    return opt


def fit(net, X, y, optimizer=None, lr=None, epochs=10, batch_size=64, schedule=None,
        validation_data=None, callbacks=(), verbose=True, seed=None, shuffle=True, augment=None,
        shuffle_seed=None, sample_weight=None, **optimizer_options):
    """Train ``net`` on X (m, n_x) and y with mini-batches; return the run's ``History``.

    Parameters
    ----------
    optimizer : 'adam', 'momentum', 'rmsprop', 'gd', or an Optimizer
        None: the network's optimizer from an earlier fit (or a loaded model), else 'adam'.
        Options such as ``beta1=0.9`` go to an optimizer given by name.
    lr : float, optional
        The learning rate alpha (the optimizer's default if None: Adam 0.001).
    epochs : int
        Passes over the training set.
    batch_size : int
        Examples per mini-batch: m is batch gradient descent, 1 is stochastic gradient descent.
    schedule : Schedule, str, callable or dict, optional
        Learning-rate decay by epoch (``caviar.schedules``), e.g. 'inverse-time:1.0'; the
        optimizer owns it (a learning rate set by hand later replaces it).
    validation_data : (X_dev, y_dev), optional
        Evaluated after every epoch (dropout off, running batch-norm statistics).
    callbacks : iterable
        EarlyStopping, Checkpoint, LambdaCallback or any object with the hook methods.
    verbose : bool
        A progress bar with the cost and dev metric.
    seed : int, optional
        Reseeds shuffling and dropout; None continues the network's own generator, so a
        saved and reloaded model continues exactly as an uninterrupted run would.
    shuffle : bool
        Reshuffle the examples every epoch (True) or take them in order.
    shuffle_seed : int, optional
        Seeds the mini-batch order apart from dropout (default: ``seed``), as a population
        of models shares one batch order while each member keeps its own seed.
    augment : callable, optional
        ``augment(X_batch, rng) -> X_batch`` (e.g. ``caviar.data.Augmenter``), applied to
        training mini-batches only, with the network's seeded generator.
    sample_weight : array (m,), optional
        Each example's weight in the training cost (times its class's ``class_weight``): a
        mini-batch's loss is the mean of its examples' weighted losses, as scikit-learn's.

    Raises
    ------
    DivergedError
        When the cost becomes NaN or inf. The update from that step is not applied, so the
        weights are the last ones, all finite; ``error.history`` holds the run so far.
    """
    keep_freed_memory()
    X = as_features(net, X, "X")
    y = net.check_y(y, len(X))
    check_augment(augment)
    epochs = check_epochs(epochs)
    check_batch_size(batch_size)
    validation = check_validation(net, validation_data)
    weights = check_sample_weight(sample_weight, len(X), X)
    state = state_of(net)
    opt = _make_optimizer(state, optimizer, lr, optimizer_options)
    schedule = schedules.get(schedule)
    if schedule is not None:
        opt.set_schedule(schedule)
    if seed is not None:
        net.rng = backend.rng(seed)
    if seed is not None or shuffle_seed is not None:
        state.shuffle_rng = backend.shuffle_rng(seed if shuffle_seed is None else shuffle_seed)
    state.optimizer = opt
    trainee = _Single(net)
    try:
        run_epochs(trainee, opt, X, y, epochs, batch_size, validation, callbacks, verbose, shuffle,
                   state.shuffle_rng, augment, state.epochs_trained, min_last=2 if net.config["batchnorm"] else 1,
                   on_epoch=lambda epoch: setattr(state, "epochs_trained", epoch), weights=weights)
    finally:
        state.history.extend(trainee.histories[0])
    return trainee.histories[0]


def run_epochs(trainee, opt, X, y, epochs, batch_size, validation, callbacks, verbose, shuffle, shuffle_rng,
               augment, first_epoch=0, min_last=1, on_epoch=None, weights=None):
    """Train ``trainee`` for ``epochs`` epochs after ``first_epoch``; members whose cost becomes
    NaN or inf leave as 'diverged' (a single network raises ``DivergedError``), members that
    callbacks stop leave as 'complete', and so does everyone at the last epoch."""
    callbacks = list(callbacks)
    if verbose:
        callbacks.append(ProgressBar())
    n_batches = len(minibatch_indices(len(X), batch_size, numpy.random.default_rng(0), False, min_last))
    run = Run(trainee, opt, first_epoch, first_epoch + epochs, n_batches)
    _call(callbacks, "on_train_begin", run)
    try:
        # Overflow in a diverging run is reported once, as divergence, not as numpy warnings.
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _ in range(epochs):
                if not trainee.numbers:
                    break
                run.epoch += 1
                opt.start_epoch(run.epoch)
                _call(callbacks, "on_epoch_begin", run, run.epoch)
                if run.stop:  # stopped between epochs (a run control): this epoch never ran
                    run.epoch -= 1
                    break
                started = time.perf_counter()
                figures = _train_epoch(trainee, opt, X, y, batch_size, shuffle, shuffle_rng, min_last, run,
                                       callbacks, augment, weights)
                if figures is None:  # every member diverged
                    break
                if on_epoch is not None:
                    on_epoch(run.epoch)
                _end_epoch(trainee, opt, run, figures, validation, started, callbacks)
                if run.stop:
                    break
    finally:
        trainee.leave(list(range(len(trainee.numbers))), "complete")
        _call(callbacks, "on_train_end", run)
    return run


def _train_epoch(trainee, opt, X, y, batch_size, shuffle, shuffle_rng, min_last, run, callbacks, augment,
                 weights=None):
    sums = numpy.zeros(len(trainee.numbers))
    metric_sums = numpy.zeros(len(trainee.numbers))
    seen = 0
    for idx in minibatch_indices(len(X), batch_size, shuffle_rng, shuffle, min_last):
        if run.stop:  # a callback asked to stop (at the end of the last batch)
            break
        idx = backend.to_module_of(idx, X)  # the batch's rows gathered where X lives
        Xb, yb = X[idx], y[idx]
        if augment is not None:
            Xb = trainee.augment(Xb, augment)
        params = trainee.params()
        for p in params:
            p.grad = None
        total, values, logits = (trainee.batch_cost(Xb, yb) if weights is None
                                 else trainee.batch_cost(Xb, yb, weights[idx]))
        good = numpy.isfinite(values)
        bad = not good.all()
        if bad:
            slots = list(numpy.flatnonzero(~good))
            for s in slots:
                run.histories[trainee.numbers[s]].events.append(
                    {"epoch": run.epoch, "event": "diverged", "iteration": run.iteration + 1, "cost": float(values[s])})
            trainee.diverged(run, slots, values, opt)  # a single network raises here
        total.backward()
        if bad:  # the diverged members get no update from this step, then leave
            for p in params:
                keep = backend.to_module_of(good.reshape(-1, 1, 1), p.grad)
                p.grad = backend.get_array_module(p.grad).where(keep, p.grad, 0).astype(p.dtype)
        opt.step(params, active=good if bad else None, decay=trainee.step_decay)
        run.iteration += 1
        metric = trainee.metric(logits.data, yb)
        for number, value, ok in zip(trainee.numbers, values.tolist(), good.tolist()):
            if ok:
                run.histories[number].iterations.append(value)
        if bad:
            trainee.leave(slots, "diverged")
            sums, metric_sums, metric, values = sums[good], metric_sums[good], metric[good], values[good]
            if not trainee.numbers:
                return None
        n = len(idx)
        sums += values * n
        metric_sums += metric * n
        seen += n
        _call(callbacks, "on_batch_end", run, run.iteration, float(values[0]) if not trainee.population else values)
    return sums, metric_sums, seen


def _end_epoch(trainee, opt, run, figures, validation, started, callbacks):
    sums, metric_sums, seen = figures
    key = trainee.head.metric
    lrs = trainee.lrs(opt)
    dev = trainee.evaluate(*validation) if validation is not None else [None] * len(trainee.numbers)
    seconds = time.perf_counter() - started
    run.member_logs = {}
    for slot, number in enumerate(trainee.numbers):
        logs = {"epoch": run.epoch, "train_cost": float(sums[slot] / max(seen, 1)),
                f"train_{key}": float(metric_sums[slot] / max(seen, 1)), "lr": lrs[slot]}
        if dev[slot] is not None:
            logs.update({f"dev_{k}": v for k, v in dev[slot].items()})
        logs["seconds"] = seconds
        run.histories[number].epochs.append(logs)
        run.member_logs[number] = logs
    logs = run.member_logs if trainee.population else run.member_logs[trainee.numbers[0]]
    _call(callbacks, "on_epoch_end", run, run.epoch, logs)
    leaving = set(trainee.numbers) if run.epoch == run.epoch_target else run.leaving & set(trainee.numbers)
    if leaving:
        trainee.leave([s for s, n in enumerate(trainee.numbers) if n in leaving], "complete")
    run.leaving = set()


def _call(callbacks, hook, *args):
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)
