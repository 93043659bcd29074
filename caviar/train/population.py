"""Caviar training: K networks of one architecture trained as one vectorized computation.

Every parameter is stacked on a leading model axis (W[l] of shape (K, n[l-1], n[l]), biases
(K, 1, n[l])), so one forward and one backward pass per mini-batch train all K members: the
same layers and fused ops as a single network, on arrays with one more axis. All members see
the same mini-batch (one batch order, ``shuffle_seed``); each keeps its own hyperparameters
(learning rate and schedule, betas, epsilon, L2, keep_prob, initialization scale) and its own
seed (initialization and dropout masks).

A member is exactly the network ``Network(..., seed=s)`` trained alone with
``fit(seed=s, shuffle_seed=shuffle_seed)``: it is initialized from the same draws, sees the same
batches and dropout masks, and its update is computed with the same float operations (see
``caviar.optim.base.coef``). The total cost is the sum of the members' costs, so each member's
gradient is its own.

A member whose cost becomes NaN or inf is frozen for that step (no update) and removed; members
can also be stopped early (successive halving), and the population shrinks.
"""

from __future__ import annotations

import os

import numpy

from .. import backend, optim, schedules
from .. import functional as F
from ..autodiff import Tensor, no_grad, result
from ..memory import keep_freed_memory
from ..nn import Network
from ..nn.layers import Dropout, Layer
from .batches import check_batch_size, minibatch_indices
from .history import History

MEMBER_KEYS = ("seed", "lr", "beta1", "beta2", "epsilon", "l2", "keep_prob", "init_scale", "decay_rate", "schedule")


class PopulationDropout(Layer):
    """Inverted dropout with each member's keep_prob and generator: member k's mask is drawn
    exactly as the single network's would be, (m, n) from its own generator."""

    def __init__(self, keep_probs, rngs):
        super().__init__()
        self.keep_probs, self.rngs = keep_probs, rngs

    @property
    def keep_probs(self):
        return self._keep_probs

    @keep_probs.setter
    def keep_probs(self, values):
        self._keep_probs = list(values)
        self._dropping = [k for k, keep in enumerate(self._keep_probs) if keep < 1.0]
        # built where the draws are (the GPU's memory on cupy), so a call copies nothing there
        self._keep = backend.xp.asarray(self._keep_probs, dtype=numpy.float64).reshape(-1, 1, 1)
        self._inverse = backend.xp.asarray([1.0 / k for k in self._keep_probs], dtype=numpy.float64).reshape(-1, 1, 1)

    def __call__(self, a, training=False, rng=None):
        if not training or not self._dropping:
            return a
        F.refuse_if_checking(min(self.keep_probs))
        dtype = a.dtype
        # members without dropout draw nothing: 0 < keep 1, so they keep every unit
        draws = backend.xp.empty(a.shape, dtype=dtype) if len(self._dropping) == len(self._keep_probs) \
            else backend.xp.zeros(a.shape, dtype=dtype)
        for k in self._dropping:  # the draws of rng.random((m, n), dtype); CuPy needs the size
            self.rngs[k].random(draws.shape[1:], dtype=dtype, out=draws[k])  # with out, or draws one value
        # (draws < keep) * float32(1 / keep): the single network's mask and scale, in place
        mask = draws < self._keep.astype(dtype)
        scale = backend.xp.multiply(mask, self._inverse.astype(dtype), out=draws)
        return result(a.data * scale, (a,), lambda g: (g * scale,), "dropout")


def _member_schedule(member):
    sched = member.get("schedule")
    if sched is None and member.get("decay_rate"):
        sched = schedules.InverseTime(decay_rate=float(member["decay_rate"]))
    sched = schedules.get(sched)
    return None if sched is None else sched.with_lr0(float(member.get("lr", 1e-3)))


class Population:
    """K members of one architecture. ``members`` is a list of dicts with any of: seed, lr,
    beta1 (momentum's beta), beta2, epsilon, l2, keep_prob, init_scale, decay_rate, schedule."""

    def __init__(self, layer_sizes, members, activation="relu", output="softmax", init="auto", batchnorm=False,
                 optimizer="adam", dtype="float32", bn_momentum=0.9, bn_epsilon=1e-5):
        if not members:
            raise ValueError("a population needs at least one member")
        self.members = [dict(m) for m in members]
        for i, m in enumerate(self.members):
            unknown = set(m) - set(MEMBER_KEYS)
            if unknown:
                raise ValueError(f"member {i} has unknown settings {sorted(unknown)}; expected some of {MEMBER_KEYS}")
        self.optimizer_name = optimizer
        self.shared = {"layer_sizes": list(layer_sizes), "activation": activation, "output": output, "init": init,
                       "batchnorm": batchnorm, "dtype": dtype, "bn_momentum": bn_momentum, "bn_epsilon": bn_epsilon}
        nets = [self._solo(m) for m in self.members]  # each member initialized as it would be alone
        n_hidden = len(layer_sizes) - 2
        keep = [[n.config["keep_prob"][l] for n in nets] for l in range(n_hidden)]
        self.net = Network(layer_sizes, activation, output, init, batchnorm=batchnorm, dtype=dtype,
                           keep_prob=[0.5 if any(k < 1 for k in layer) else 1.0 for layer in keep],
                           bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.rngs = [backend.rng(m.get("seed")) for m in self.members]
        dropouts = iter(keep[l] for l in range(n_hidden) if any(k < 1 for k in keep[l]))
        self.net.layers = [PopulationDropout(next(dropouts), self.rngs) if isinstance(layer, Dropout) else layer
                           for layer in self.net.layers]
        for layer in self.net.layers:
            for key, p in list(layer.params.items()):
                stacked = Tensor(_stack([n.params[p.name].data for n in nets]), requires_grad=True, name=p.name)
                layer.params[key] = stacked
                self.net.params[p.name] = stacked
            for key, buf in list(layer.buffers.items()):
                name = self._buffer_name(buf)
                stacked = _stack([n.buffers[name] for n in nets])
                layer.buffers[key] = stacked
                self.net.buffers[name] = stacked
        self.index = list(range(len(self.members)))  # original member number of each active slot
        self.results = {}  # original member number -> (status, Network, History)

    def _buffer_name(self, buf):
        """The network-level name (running_mean1, ...) of a layer's buffer array."""
        return next(k for k, b in self.net.buffers.items() if b is buf)

    def _solo(self, member, seed=None):
        s = self.shared
        return Network(s["layer_sizes"], s["activation"], s["output"], s["init"], member.get("init_scale"),
                       s["batchnorm"], member.get("keep_prob", 1.0), member.get("l2", 0.0), 0.0,
                       member.get("seed") if seed is None else seed, dtype=s["dtype"],
                       bn_momentum=s["bn_momentum"], bn_epsilon=s["bn_epsilon"])

    @property
    def size(self):
        return len(self.index)

    # -- per-member hyperparameters as (K, 1) float64 arrays (the optimizer's row views) ------
    def _column(self, key, default):
        values = [self.members[i].get(key, default) for i in self.index]
        return numpy.asarray([default if v is None else v for v in values], dtype=numpy.float64).reshape(-1, 1)

    def _make_optimizer(self):
        name = self.optimizer_name
        lr = self._column("lr", optim.OPTIMIZERS[name].default_lr)
        if name == "adam":
            return optim.Adam(lr, self._column("beta1", 0.9), self._column("beta2", 0.999), self._column("epsilon", 1e-8))
        if name == "rmsprop":
            return optim.RMSprop(lr, self._column("beta2", 0.999), self._column("epsilon", 1e-8))
        if name == "momentum":
            return optim.Momentum(lr, self._column("beta1", 0.9))
        return optim.get(name, lr)

    # -- cost ------------------------------------------------------------------------------
    def cost(self, X, y, training=True):
        """(total cost, per-member data loss (K,), logits, per-member L2 term): the total is the
        sum of the members' J, so every member's gradient is the one it would have alone."""
        logits = self.net.forward(X, training)
        K, m = logits.shape[0], logits.shape[1]
        output = self.shared["output"]
        mod = backend.get_array_module(y)
        if output == "softmax":
            labels = mod.broadcast_to(y, (K,) + y.shape)
            losses = F.softmax_cross_entropy(logits, labels, reduction="none").mean(axis=-1)
        else:
            target = mod.broadcast_to(y.reshape(m, -1), logits.shape)
            loss = F.sigmoid_cross_entropy if output == "sigmoid" else F.mean_squared_error
            losses = loss(logits, target, reduction="none").mean(axis=(-2, -1))
        total = losses.sum()
        lambd = numpy.asarray([self.members[i].get("l2", 0.0) or 0.0 for i in self.index])
        reg = numpy.zeros(K)
        if lambd.any():
            penalty, reg = F.l2_penalty_per_member(self.net.weights(), lambd, m)
            total = total + penalty
        return total, losses, logits, reg

    def evaluate(self, X, y):
        """Per-member {'cost', 'accuracy' | 'mse'} with dropout off and running statistics."""
        X = self.net.check_X(X).astype(self.net.params["W1"].dtype, copy=False)
        y = self.net.check_y(y, len(X))
        chunk = max(1, 8192 // max(self.size, 1))
        losses, metrics = [], []
        with no_grad():
            for i in range(0, len(X), chunk):
                Xc, yc = X[i:i + chunk], y[i:i + chunk]
                _, loss, logits, _ = self.cost(Xc, yc, training=False)
                losses.append(backend.to_numpy(loss.data) * len(Xc))
                metrics.append(backend.to_numpy(self._metric(logits.data, yc)) * len(Xc))
        n = len(X)
        key = "mse" if self.shared["output"] == "linear" else "accuracy"
        cost, metric = sum(losses) / n, sum(metrics) / n
        return [{"cost": float(c), key: float(v)} for c, v in zip(cost, metric)]

    def _metric(self, z, y):
        output = self.shared["output"]
        if output == "softmax":
            return (z.argmax(axis=-1) == y).mean(axis=-1)
        if output == "sigmoid":
            return ((z > 0) == (y.reshape(z.shape[1:]) > 0.5)).mean(axis=(-2, -1))
        return ((z - y.reshape(z.shape[1:])) ** 2).mean(axis=(-2, -1))

    # -- members ---------------------------------------------------------------------------
    def member_network(self, slot):
        """The network of the member in ``slot`` (an active position), as a single Network."""
        member = self.members[self.index[slot]]
        net = self._solo(member)
        for name, p in net.params.items():
            p.data = self.net.params[name].data[slot].reshape(p.shape).copy()
        for name, b in net.buffers.items():
            b[...] = self.net.buffers[name][slot].reshape(b.shape)
        net.rng = self.rngs[slot]
        return net

    def keep(self, slots):
        """Keep only the members in ``slots`` (active positions): the population shrinks."""
        slots = list(slots)
        for layer in self.net.layers:
            for p in layer.params.values():
                p.data, p.grad = p.data[slots], None
            for key, buf in list(layer.buffers.items()):
                name = self._buffer_name(buf)
                layer.buffers[key] = self.net.buffers[name] = buf[slots]
            if isinstance(layer, PopulationDropout):
                layer.keep_probs = [layer.keep_probs[s] for s in slots]
        self.rngs[:] = [self.rngs[s] for s in slots]
        for layer in self.net.layers:
            if isinstance(layer, PopulationDropout):
                layer.rngs = self.rngs
        self.index = [self.index[s] for s in slots]
        opt = self.net.optimizer
        if opt is not None:
            for state in opt.state.values():
                for key, value in state.items():
                    if hasattr(value, "shape") and value.ndim >= 1:
                        state[key] = value[slots]
            for attr in ("lr", "beta", "beta1", "beta2", "epsilon"):
                value = getattr(opt, attr, None)
                if isinstance(value, numpy.ndarray):
                    setattr(opt, attr, value[slots])

    def _finish(self, slots, status, histories):
        for s in slots:
            number = self.index[s]
            self.results[number] = (status, self.member_network(s), histories[number])

    # -- training --------------------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=64, validation_data=None, shuffle_seed=0, on_epoch=None):
        """Train every member; return one History per member (in the order given).

        ``on_epoch(epoch, rows)`` receives, after every epoch, a dict member number -> logs
        (train and dev figures) and may return member numbers to stop early.
        """
        keep_freed_memory()
        net = self.net
        X = net.check_X(X).astype(net.params["W1"].dtype, copy=False)
        y = net.check_y(y, len(X))
        batch_size = check_batch_size(batch_size)
        if validation_data is not None:
            X_dev = net.check_X(validation_data[0]).astype(X.dtype, copy=False)
            y_dev = net.check_y(validation_data[1], len(X_dev))
        histories = {i: History() for i in self.index}
        for slot, number in enumerate(self.index):  # as fit(seed=s) reseeds a single network
            self.rngs[slot] = backend.rng(self.members[number].get("seed"))
        for layer in net.layers:
            if isinstance(layer, PopulationDropout):
                layer.rngs = self.rngs
        shuffle_rng = backend.shuffle_rng(shuffle_seed)
        net.optimizer = opt = self._make_optimizer()
        sched = {i: _member_schedule(self.members[i]) for i in self.index}
        min_last = 2 if self.shared["batchnorm"] else 1
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(1, epochs + 1):
                if not self.index:
                    break
                if any(sched[i] is not None for i in self.index):
                    opt.lr = numpy.asarray([sched[i](epoch) if sched[i] else self.members[i].get("lr", opt.default_lr)
                                            for i in self.index], dtype=numpy.float64).reshape(-1, 1)
                sums = numpy.zeros(self.size)
                metric_sums = numpy.zeros(self.size)
                seen = 0
                for idx in minibatch_indices(len(X), batch_size, shuffle_rng, True, min_last):
                    idx = backend.to_module_of(idx, X)  # the batch's rows gathered where X lives
                    sums, metric_sums, seen = self._step(X[idx], y[idx], opt, histories, epoch, sums, metric_sums, seen)
                    if not self.index:
                        break
                if not self.index:
                    break
                logs_by_member = self._epoch_logs(epoch, opt, sums, metric_sums, seen, validation_data, X_dev if validation_data else None,
                                        y_dev if validation_data else None)
                for number, logs in logs_by_member.items():
                    histories[number].epochs.append(logs)
                stop = set(on_epoch(epoch, logs_by_member) or ()) if on_epoch is not None else set()
                if epoch == epochs:
                    stop = set(self.index)
                if stop:
                    slots = [s for s, number in enumerate(self.index) if number in stop]
                    self._finish(slots, "complete", histories)
                    self.keep([s for s, number in enumerate(self.index) if number not in stop])
        self._finish(range(self.size), "complete", histories)  # epochs == 0, or members left
        return [histories[i] for i in range(len(self.members)) if i in histories]

    def _step(self, Xb, yb, opt, histories, epoch, sums, metric_sums, seen):
        params = self.net.parameters()
        for p in params:
            p.grad = None
        total, losses, logits, reg = self.cost(Xb, yb, training=True)
        # J + L2 term summed in the parameters' dtype, as a single network reports its cost
        values = backend.to_numpy(losses.data + backend.to_module_of(reg.astype(losses.dtype), losses.data)).astype(numpy.float64)
        bad = ~numpy.isfinite(values)
        total.backward()
        if bad.any():  # freeze the diverged members for this step, then let them go
            good = ~bad
            for p in params:
                keep = backend.to_module_of(good.reshape(-1, 1, 1), p.grad)
                p.grad = backend.get_array_module(p.grad).where(keep, p.grad, 0).astype(p.dtype)
            opt.lr = opt.lr * good.reshape(-1, 1)
        opt.step(params)
        metric = backend.to_numpy(self._metric(logits.data, yb))
        for slot, number in enumerate(self.index):
            if not bad[slot]:
                histories[number].iterations.append(float(values[slot]))
        if bad.any():
            slots = list(numpy.flatnonzero(bad))
            for s in slots:
                number = self.index[s]
                histories[number].events.append({"epoch": epoch, "event": "diverged", "iteration": opt.iterations,
                                                 "cost": float(values[s])})
            self._finish(slots, "diverged", histories)
            good = [s for s in range(self.size) if not bad[s]]
            sums, metric_sums = sums[good], metric_sums[good]
            metric = metric[good]
            values = values[good]
            self.keep(good)
        n = len(Xb)
        return sums + values * n, metric_sums + metric * n, seen + n

    def _epoch_logs(self, epoch, opt, sums, metric_sums, seen, validation_data, X_dev, y_dev):
        key = "mse" if self.shared["output"] == "linear" else "accuracy"
        lr = opt.lr if isinstance(opt.lr, numpy.ndarray) else numpy.full((self.size, 1), opt.lr)
        rows = {}
        dev = self.evaluate(X_dev, y_dev) if validation_data is not None else [None] * self.size
        for slot, number in enumerate(self.index):
            logs = {"epoch": epoch, "train_cost": float(sums[slot] / seen), f"train_{key}": float(metric_sums[slot] / seen),
                    "lr": float(lr[slot].item())}
            if dev[slot] is not None:
                logs.update({f"dev_{k}": v for k, v in dev[slot].items()})
            rows[number] = logs
        return rows


def _stack(arrays):
    """Stack per-member arrays on a leading axis; vectors become (K, 1, n) to broadcast over m."""
    stacked = backend.xp.stack(arrays)
    return stacked.reshape(stacked.shape[0], 1, -1) if stacked.ndim == 2 else stacked


def bytes_per_member(layer_sizes, batch_size, dtype="float32"):
    """A member's memory: parameters, their gradients (as computed and gathered into the
    optimizer's (K, P) array) and optimizer state (about 6 copies), and the activations of a
    mini-batch and of an evaluation chunk (a few copies per layer)."""
    item = numpy.dtype(dtype).itemsize
    params = sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    activations = sum(layer_sizes[1:]) * (batch_size * 6 + 1024 * 3)
    return item * (6 * params + activations)


def available_memory():
    """Bytes of memory available now to the arrays: the GPU's free memory on the cupy backend,
    else the machine's (Linux /proc/meminfo), or None where unknown."""
    if backend.name() == "cupy":  # pragma: no cover - GPU only
        free, _total = backend.xp.cuda.runtime.memGetInfo()
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def max_population(layer_sizes, batch_size, dtype="float32", limit=None, fraction=0.5):
    """The largest K to train at once: ``limit`` if given, and no more than ``fraction`` of the
    available memory allows."""
    per = bytes_per_member(layer_sizes, batch_size, dtype)
    avail = available_memory()
    by_memory = max(1, int(avail * fraction // per)) if avail else 1 << 30
    return max(1, min(by_memory, limit if limit else by_memory))


def chunks(items, size):
    """Split a list into consecutive pieces of at most ``size`` (several populations)."""
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]
