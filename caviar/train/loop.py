"""The training loop: mini-batch gradient descent with any optimizer, schedules and callbacks."""

from __future__ import annotations

import math
import numbers
import time

import numpy

from .. import backend, optim, schedules
from ..errors import DivergedError
from ..memory import keep_freed_memory
from .batches import check_batch_size, minibatch_indices
from .callbacks import LearningRateSchedule, ProgressBar
from .history import History


class Run:
    """The state callbacks see: ``net``, ``optimizer``, ``history``, ``epoch``, ``iteration``,
    ``epoch_target`` (the last epoch of this fit), ``batches_per_epoch``; set ``stop = True``
    to end training after the current mini-batch."""

    def __init__(self, net, optimizer, history, epoch_target, batches_per_epoch):
        self.net, self.optimizer, self.history = net, optimizer, history
        self.epoch_target, self.batches_per_epoch = epoch_target, batches_per_epoch
        self.epoch = net.epochs_trained
        self.iteration = optimizer.iterations
        self.stop = False


def _as_features(net, X, name):
    X = net.check_X(X)
    dtype = net.params["W1"].dtype
    X = X if X.dtype == dtype else X.astype(dtype)
    mod = backend.get_array_module(X)
    if not bool(mod.isfinite(X).all()):
        raise ValueError(f"{name} holds NaN or inf values")
    return X


def _check_epochs(epochs):
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    return int(epochs)


def _make_optimizer(net, optimizer, lr, optimizer_options):
    if optimizer is None and net.optimizer is not None and not optimizer_options:
        opt = net.optimizer  # a resumed fit continues with the same optimizer state
        if lr is not None:
            opt.lr = optim.base.check_lr(lr)
        return opt
    if isinstance(optimizer, optim.Optimizer):
        if optimizer_options:
            raise ValueError(f"options {sorted(optimizer_options)} apply to an optimizer given by name, not to {optimizer!r}")
        if lr is not None:
            optimizer.lr = optim.base.check_lr(lr)
        return optimizer
    return optim.get(optimizer or "adam", lr, **optimizer_options)


def fit(net, X, y, optimizer=None, lr=None, epochs=10, batch_size=64, schedule=None,
        validation_data=None, callbacks=(), verbose=True, seed=None, shuffle=True, augment=None,
        shuffle_seed=None, **optimizer_options):
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
        Learning-rate decay by epoch (``caviar.schedules``), e.g. 'inverse-time:1.0'.
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

    Raises
    ------
    DivergedError
        When the cost becomes NaN or inf. The update from that step is not applied, so the
        weights are the last ones, all finite; ``error.history`` holds the run so far.
    """
    keep_freed_memory()
    X = _as_features(net, X, "X")
    y = net.check_y(y, len(X))
    if augment is not None and backend.name() != "numpy":
        raise ValueError(f"augmentation works on NumPy arrays; train with the numpy backend to augment "
                         f"(backend now: {backend.name()})")
    epochs = _check_epochs(epochs)
    check_batch_size(batch_size)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_dev, y_dev)")
        X_dev = _as_features(net, validation_data[0], "X_dev")
        y_dev = net.check_y(validation_data[1], len(X_dev))
    opt = _make_optimizer(net, optimizer, lr, optimizer_options)
    if seed is not None:
        net.rng = backend.rng(seed)
    if seed is not None or shuffle_seed is not None:
        net.shuffle_rng = backend.shuffle_rng(seed if shuffle_seed is None else shuffle_seed)
    callbacks = list(callbacks)
    schedule = schedules.get(schedule)
    if schedule is not None:
        base_lr = opt.lr if not callable(opt.lr) else None
        callbacks.insert(0, LearningRateSchedule(schedule.with_lr0(base_lr) if base_lr is not None else schedule))
    if verbose:
        callbacks.append(ProgressBar())
    net.optimizer = opt

    m = len(X)
    min_last = 2 if net.config["batchnorm"] else 1
    n_batches = len(minibatch_indices(m, batch_size, numpy.random.default_rng(0), False, min_last))
    history = History()
    run = Run(net, opt, history, net.epochs_trained + epochs, n_batches)
    run.callbacks = callbacks  # a babysitter may remove the epoch schedule when the lr is set by hand
    params = net.parameters()
    _call(callbacks, "on_train_begin", run)
    try:
        # Overflow in a diverging run is reported once, as DivergedError, not as numpy warnings.
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _ in range(epochs):
                run.epoch = net.epochs_trained + 1
                _call(callbacks, "on_epoch_begin", run, run.epoch)
                started = time.perf_counter()
                logs = _train_epoch(net, opt, X, y, batch_size, shuffle, min_last, params, run, callbacks, augment)
                net.epochs_trained = run.epoch
                logs["lr"] = float(opt.current_lr()) if not callable(opt.lr) else None
                if validation_data is not None:
                    logs.update({f"dev_{k}": v for k, v in net.evaluate(X_dev, y_dev).items()})
                logs["seconds"] = time.perf_counter() - started
                history.epochs.append(logs)
                _call(callbacks, "on_epoch_end", run, run.epoch, logs)
                if run.stop:
                    break
    finally:
        _call(callbacks, "on_train_end", run)
        net.history.extend(history)
    return history


def _train_epoch(net, opt, X, y, batch_size, shuffle, min_last, params, run, callbacks, augment):
    total_cost, seen = 0.0, 0
    metric_sum = {}
    for idx in minibatch_indices(len(X), batch_size, net.shuffle_rng, shuffle, min_last):
        if run.stop:  # a callback asked to stop (at the end of the last batch or before this epoch)
            break
        idx = backend.to_module_of(idx, X)  # the batch's rows gathered where X lives
        Xb, yb = X[idx], y[idx]
        if augment is not None:
            Xb = augment(Xb, net.rng)
        for p in params:
            p.grad = None
        logits = net.forward(Xb, training=True)
        J = net.loss(logits, yb)
        reg = net.regularization(len(idx))
        cost = J if reg is None else J + reg
        value = float(cost.data)
        if not math.isfinite(value):
            run.history.events.append({"epoch": run.epoch, "event": "diverged", "iteration": run.iteration + 1, "cost": value})
            error = DivergedError(run.iteration + 1, value, opt.current_lr() if not callable(opt.lr) else None)
            error.history = run.history
            raise error
        cost.backward()
        opt.step(params)
        run.iteration += 1
        run.history.iterations.append(value)
        n = len(idx)
        total_cost += value * n
        seen += n
        for k, v in net.metrics_from_logits(logits.data, yb).items():
            metric_sum[k] = metric_sum.get(k, 0.0) + v * n
        _call(callbacks, "on_batch_end", run, run.iteration, value)
    return {"epoch": run.epoch, "train_cost": total_cost / max(seen, 1),
            **{f"train_{k}": v / max(seen, 1) for k, v in metric_sum.items()}}


def _call(callbacks, hook, *args):
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)
