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
from ..autodiff import Tensor, no_grad
from ..memory import keep_freed_memory
from ..nn import Network, heads
from ..nn.layers import Dropout
from . import hyperparameters as H
from .batches import check_batch_size
from .callbacks import Callback
from .dropout import PopulationDropout
from .history import History
from .loop import as_features, check_augment, check_validation, run_epochs
from . import step as stacked

MEMBER_KEYS = H.MEMBER


class Population:
    """K members of one architecture. ``members`` is a list of dicts with any of the per-member
    settings of ``caviar.train.hyperparameters`` (``MEMBER``): seed, schedule, lr, beta1
    (momentum's beta), beta2, epsilon, l2, keep_prob, init_scale, decay_rate. What a member
    leaves out is the optimizer's default (its learning rate included), as for a solo run."""

    def __init__(self, layer_sizes, members, activation="relu", output="softmax", init="auto", batchnorm=False,
                 optimizer="adam", dtype="float32", bn_momentum=0.9, bn_epsilon=1e-5, class_weight=None):
        if not members:
            raise ValueError("a population needs at least one member")
        self.members = [dict(m) for m in members]
        for i, m in enumerate(self.members):
            unknown = set(m) - set(MEMBER_KEYS)
            if unknown:
                raise ValueError(f"member {i} has unknown settings {sorted(unknown)}; expected some of {MEMBER_KEYS}")
        optim.lookup(optimizer)  # an unknown optimizer is refused now, not at fit
        self.optimizer_name = optimizer
        self.optimizer = None
        self.shared = {"layer_sizes": list(layer_sizes), "activation": activation, "output": output, "init": init,
                       "batchnorm": batchnorm, "dtype": dtype, "bn_momentum": bn_momentum, "bn_epsilon": bn_epsilon,
                       "class_weight": class_weight}
        self.head = heads.get(output)
        nets = [self._solo(m) for m in self.members]  # each member initialized as it would be alone
        n_hidden = len(layer_sizes) - 2
        keep = [[n.config["keep_prob"][l] for n in nets] for l in range(n_hidden)]
        # zeros: its weights are replaced by the members' (below), so it draws none
        self.net = Network(layer_sizes, activation, output, "zeros", batchnorm=batchnorm, dtype=dtype,
                           keep_prob=[0.5 if any(k < 1 for k in layer) else 1.0 for layer in keep],
                           bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.net.config["init"] = init
        self.rngs = [backend.rng(m.get("seed")) for m in self.members]
        dropouts = iter(keep[l] for l in range(n_hidden) if any(k < 1 for k in keep[l]))
        self.net.layers = [PopulationDropout(next(dropouts), self.rngs) if isinstance(layer, Dropout) else layer
                           for layer in self.net.layers]
        _stack_into(self.net, nets)
        self.index = list(range(len(self.members)))  # original member number of each active slot
        self.results = {}  # original member number -> (status, Network, History)

    def _buffer_name(self, buf):
        """The network-level name (running_mean1, ...) of a layer's buffer array."""
        return next(k for k, b in self.net.buffers.items() if b is buf)

    def _solo(self, member, draw=True):
        """Member ``member``'s network alone, initialized as its seed gives; with ``draw`` False,
        its weights are zeros (no draws, for a caller that sets them) and its config still
        names the population's init."""
        s = self.shared
        net = Network(s["layer_sizes"], s["activation"], s["output"], s["init"] if draw else "zeros",
                      member.get("init_scale"), s["batchnorm"], H.value(member, "keep_prob"), H.value(member, "l2"),
                      0.0, member.get("seed"), dtype=s["dtype"], bn_momentum=s["bn_momentum"],
                      bn_epsilon=s["bn_epsilon"], class_weight=s["class_weight"])
        net.config["init"] = s["init"]
        return net

    @property
    def size(self):
        return len(self.index)

    # -- per-member hyperparameters as (K, 1) float64 arrays (the optimizer's row views) ------
    def _make_optimizer(self):
        """One optimizer for all members: each of its hyperparameters a (K, 1) column of the
        members' values, the optimizer's own default where a member has none; each member's
        schedule starts from its own learning rate."""
        cls = optim.lookup(self.optimizer_name)
        columns = {}
        for key, default in cls.defaults.items():
            values = [self.members[i].get(key) for i in self.index]
            columns[key] = numpy.asarray([default if v is None else v for v in values],
                                         dtype=numpy.float64).reshape(-1, 1)
        opt = optim.build(self.optimizer_name, **columns)
        plans = [H.schedule(self.members[i]) for i in self.index]
        if any(p is not None for p in plans):
            lrs = columns["lr"].ravel()
            opt.set_schedule(schedules.PerMember([p.with_lr0(float(lr)) if p is not None else None
                                                  for p, lr in zip(plans, lrs)], lrs))
        return opt

    # -- cost ------------------------------------------------------------------------------
    def cost(self, X, y, training=True, l2_on_tape=True):
        """(total cost, per-member data loss (K,), logits, per-member L2 term): the total is the
        sum of the members' J, so every member's gradient is the one it would have alone.

        With ``l2_on_tape=False`` (the training step) the L2 term stays off the tape: the total
        is the data losses' and ``step_decay`` maps each weight (by ``id``) to its factor 2
        lambda/(2m) per member, for the optimizer to add the term's gradient as it updates
        (the values backprop through the term would give, without a pass of their own)."""
        logits = self.net.forward(X, training)
        K, m = logits.shape[0], logits.shape[1]
        cw = self.shared["class_weight"]
        losses = self.head.member_losses(logits, y, None if cw is None else self.head.example_weights(y, cw))
        total = losses.sum()
        if l2_on_tape:
            lambd = self._lambdas()
            reg = numpy.zeros(K)
            if lambd.any():
                penalty, reg = F.l2_penalty_per_member(self.net.weights(), lambd, m)
                total = total + penalty
        else:
            reg = self._step_l2(m)
        return total, losses, logits, reg

    def _lambdas(self):
        return numpy.asarray([self.members[i].get("l2", 0.0) or 0.0 for i in self.index])

    def _step_l2(self, m):
        """Each member's L2 term (K,) for a training step on m examples, and ``step_decay``
        set for the optimizer to add the term's gradient as it updates."""
        cache = self._l2_cache  # [slots, weights, {m: (lambda/(2m), decay)}, squares' plan] while the members stay
        if cache is None or cache[0] != self.index:
            lambd = self._lambdas()
            cache = self._l2_cache = [list(self.index), self.net.weights() if lambd.any() else None, {}, None]
        slots, weights, terms, plan = cache
        if weights is None:
            return numpy.zeros(self.size)
        if m not in terms:
            terms[m] = F.l2_factors(self._lambdas(), m, weights[0].data)
        coef, twice = terms[m]
        self.step_decay = {id(w): twice for w in weights}
        squares = self._updated_squares(weights)
        if squares is None:
            if plan is None or not plan.holds(weights):  # the first step's, then the optimizer's (K, P) views
                plan = cache[3] = F.SquaresPlan(weights)
            squares = plan()
        return coef * squares

    def _updated_squares(self, weights):
        """Each member's sum of squares over ``weights``, float64 (K,), as the compiled update of
        the last step summed them while it wrote their values (``kernels.update``: the same
        sums as ``F.member_squares``, without a pass of their own over the weights: 220 of the
        8,760 us of a step of the default search's 10 x 64-256-256-10 group); None where it did
        not (the first step, an update in NumPy, a rebuilt (K, P) block, members leaving). Taken
        once: only the update writes a population's weights between two steps (nothing in
        caviar writes into them in place while it trains)."""
        flat = self.optimizer._flat if self.optimizer is not None else None
        found = None if flat is None else flat.squares
        if found is None:
            return None
        flat.squares = None
        squares, decayed = found
        slots = {id(p): i for i, p in enumerate(flat.params)}
        total = 0
        for w in weights:  # in the weights' order, as l2_penalty adds them
            i = slots.get(id(w))
            if i is None or w.data is not flat.views[i] or not decayed[i]:
                return None
            total = total + squares[:, i].astype(numpy.float64)
        return total

    def evaluate(self, X, y):
        """Per-member {'cost', and the head's metrics} with dropout off and running statistics."""
        X = self.net.check_X(X).astype(self.net.params["W1"].dtype, copy=False)  # fit checked it once already
        y = self.net.check_y(y, len(X))
        chunk = max(1, 8192 // max(self.size, 1))
        with no_grad():
            z = [self.net.forward(X[i:i + chunk], training=False).data for i in range(0, len(X), chunk)]
            z = Tensor(backend.get_array_module(z[0]).concatenate(z, axis=1) if len(z) > 1 else z[0])
            cost = backend.to_numpy(self.head.member_losses(z, y).data)
        metrics = {k: backend.to_numpy(v) for k, v in self.head.metrics(z.data, y).items()}
        return [{"cost": float(cost[s]), **{k: float(v[s]) for k, v in metrics.items()}} for s in range(self.size)]

    # -- members ---------------------------------------------------------------------------
    def member_network(self, slot):
        """The network of the member in ``slot`` (an active position), as a single Network."""
        member = self.members[self.index[slot]]
        net = self._solo(member, draw=False)  # its weights are the member's
        params, buffers = self.snapshot(self.index[slot])
        for name, p in net.params.items():
            p.data = params[name]
        for name, b in net.buffers.items():
            b[...] = buffers[name]
        net.rng = self.rngs[slot]
        return net

    def member_alone(self, number, opt, epoch):
        """(network, optimizer): active member ``number`` after ``epoch`` epochs as the network
        it would be alone (``fit(seed=s, shuffle_seed=...)``): its weights, running statistics
        and dropout generator, an optimizer with its hyperparameters, schedule, counters and
        state, the shared mini-batch order, and its history (``net.train_state``). It can go on
        alone exactly (a resume point)."""
        from ..optim.base import _FLAT
        from .state import TrainingState

        slot = self.index.index(number)
        net = self.member_network(slot)
        member = self.members[number]
        cls = optim.lookup(self.optimizer_name)
        solo = optim.build(self.optimizer_name, strict=False, **{k: member.get(k) for k in cls.defaults})
        plan = H.schedule(member)
        if plan is not None:
            solo.set_schedule(plan)  # from the member's own initial rate, as in the population
        solo.lr = float(numpy.asarray(opt.lr, dtype=numpy.float64).reshape(-1)[slot] if numpy.ndim(opt.lr)
                        else opt.lr)
        solo.iterations = opt.iterations
        flat, flat_state = opt._flat, opt.state.get(_FLAT)
        if flat is not None and flat_state is not None:
            arrays, start = {}, 0
            for p in flat.params:
                stop = start + p.data[0].size
                for key, value in flat_state.items():
                    if key.startswith("_"):
                        continue
                    arrays[f"{p.name}.{key}"] = value if isinstance(value, int) else _unstack(
                        value[slot:slot + 1, start:stop].reshape(p.data.shape[1:]), p.name)
                start = stop
            solo.load_state_arrays(net.params, arrays)
        state = net.train_state = TrainingState(member.get("seed"))
        state.optimizer, state.epochs_trained = solo, epoch
        state.history.extend(self.histories[number])
        state.shuffle_rng.bit_generator.state = self.shuffle_rng.bit_generator.state
        return net, solo

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
        if self.optimizer is not None:
            self.optimizer.keep(slots)

    # -- training --------------------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=64, validation_data=None, shuffle_seed=0, on_epoch=None, callbacks=(),
            augment=None, verbose=False):
        """Train every member with the one training loop (``caviar.train.loop``); return one
        History per member (in the order given).

        ``callbacks`` are the loop's (``EarlyStopping`` watches every member on its own).
        ``on_epoch(epoch, rows)`` receives, after every epoch, a dict member number -> logs
        and may return member numbers to stop early. ``augment(X_batch, rng)`` is applied with
        each member's own generator, as its solo run would.
        """
        keep_freed_memory()
        net = self.net
        X = as_features(net, X, "X")
        y = net.check_y(y, len(X))
        check_augment(augment)
        batch_size = check_batch_size(batch_size)
        validation = check_validation(net, validation_data)
        self.histories = {i: History() for i in self.index}
        for slot, number in enumerate(self.index):  # as fit(seed=s) reseeds a single network
            self.rngs[slot] = backend.rng(self.members[number].get("seed"))
        for layer in net.layers:
            if isinstance(layer, PopulationDropout):
                layer.rngs = self.rngs
        self.optimizer = self._make_optimizer()
        # on_epoch first: what it records (a study's epoch rows) is there before a resume point is written
        callbacks = ([_OnEpoch(on_epoch)] if on_epoch is not None else []) + list(callbacks)
        self.shuffle_rng = backend.shuffle_rng(shuffle_seed)
        run_epochs(self, self.optimizer, X, y, epochs, batch_size, validation, callbacks, verbose, True,
                   self.shuffle_rng, augment, min_last=2 if self.shared["batchnorm"] else 1)
        return [self.histories[i] for i in range(len(self.members)) if i in self.histories]

    # -- the training loop's trainee protocol (see caviar.train.loop) ------------------------
    population = True
    step_decay = None
    _l2_cache = None

    @property
    def numbers(self):
        return self.index

    def params(self):
        return self.net.parameters()

    def batch_cost(self, Xb, yb):
        self.step_decay = None
        if stacked.supports(self):  # forward and backward at once, the tape's gradients
            losses, z = stacked.run(self, Xb, yb)
            total, logits, reg = _Backpropagated(), Tensor(z), self._step_l2(Xb.shape[-2])
        else:
            total, losses, logits, reg = self.cost(Xb, yb, training=True, l2_on_tape=False)
            losses = losses.data
        # J + L2 term summed in the parameters' dtype, as a single network reports its cost
        values = backend.to_numpy(losses + backend.to_module_of(reg.astype(losses.dtype), losses))
        return total, values.astype(numpy.float64), logits

    def metric(self, z, y):
        return backend.to_numpy(self.head.primary(z, y))

    def augment(self, Xb, augment):
        return backend.xp.stack([augment(Xb, rng) for rng in self.rngs])

    def diverged(self, run, slots, values, opt):
        pass  # the loop freezes those members for this step and lets them leave

    def leave(self, slots, status):
        """Members in ``slots`` leave with ``status`` as plain Networks; the population shrinks."""
        if not slots:
            return
        for s in slots:
            number = self.index[s]
            self.results[number] = (status, self.member_network(s), self.histories[number])
        self.keep([s for s in range(self.size) if s not in set(slots)])

    def snapshot(self, number):
        """Copies of a member's parameters and buffers, shaped as its solo network's."""
        slot = self.index.index(number)
        params = {k: _unstack(p.data[slot], k) for k, p in self.net.params.items()}
        buffers = {k: b[slot].reshape(-1).copy() for k, b in self.net.buffers.items()}
        return params, buffers

    def network(self, number):
        return self.results[number][1]

    def lrs(self, opt):
        lr = opt.current_lr()
        return [float(v) for v in numpy.broadcast_to(numpy.asarray(lr, dtype=numpy.float64).reshape(-1), (self.size,))]


class _Backpropagated:
    """The total cost of a step whose gradients are already in ``.grad`` (``step.run``):
    the training loop's ``backward()`` has nothing left to do."""

    def backward(self):
        pass


class _OnEpoch(Callback):
    """``Population.fit(on_epoch=...)``: a plain function of (epoch, member logs) that returns
    the members to stop."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, run, epoch, logs):
        run.stop_members(self.fn(epoch, run.member_logs) or ())


def _stack_into(net, nets):
    """Give ``net`` the parameters and buffers of ``nets`` (networks of its architecture)
    stacked on a leading model axis: its forward pass then computes every one of them."""
    names = {id(b): k for k, b in net.buffers.items()}
    for layer in net.layers:
        for key, p in list(layer.params.items()):
            stacked = Tensor(_stack([n.params[p.name].data for n in nets]), requires_grad=True, name=p.name)
            layer.params[key] = stacked
            net.params[p.name] = stacked
        for key, buf in list(layer.buffers.items()):
            name = names[id(buf)]
            stacked = _stack([n.buffers[name] for n in nets])
            layer.buffers[key] = stacked
            net.buffers[name] = stacked
    return net


def stacked_network(nets):
    """One network whose forward pass in evaluation (dropout off, batch norm's running
    statistics) gives the logits of every network in ``nets``, (K, m, n_y): their weights
    stacked on a leading axis, as a population's are. ``nets`` share an architecture
    (``architecture``)."""
    c = nets[0].config
    if any(architecture(n) != architecture(nets[0]) for n in nets):
        raise ValueError("only networks of one architecture stack into one forward pass")
    net = Network(c["layer_sizes"], c["activation"], c["output"], c["init"], batchnorm=c["batchnorm"],
                  dtype=c["dtype"], bn_momentum=c["bn_momentum"], bn_epsilon=c["bn_epsilon"])
    return _stack_into(net, nets)


def architecture(net):
    """What networks must share to be computed in one stacked forward pass."""
    c = net.config
    return (tuple(c["layer_sizes"]), c["activation"], c["output"], c["batchnorm"], c["bn_epsilon"], c["dtype"])


def _unstack(array, name):
    """A member's slice of a stacked parameter in its solo shape: vectors (1, n) become (n,)."""
    return (array[0] if not name.startswith("W") and array.ndim == 2 else array).copy()


def _stack(arrays):
    """Stack per-member arrays on a leading axis; vectors become (K, 1, n) to broadcast over m."""
    stacked = backend.xp.stack(arrays)
    return stacked.reshape(stacked.shape[0], 1, -1) if stacked.ndim == 2 else stacked


def load_kernels():
    """Load the compiled kernels a population's step runs (``caviar.kernels``) by training
    two small populations for one step each, with and without batch norm (ten classes, dropout,
    L2, Adam, a dev set: the float32 signatures of the default search's networks, whose
    parameters fill Adam's 8 and 16 gradient slots). numba's first call in a process costs
    about 0.25 s, and each further signature about 10 ms: a study's driver loads them once
    before forking its workers, which then start with them (each worker loaded ten of them
    on its first populations when this took a two-class network without batch norm). Once
    per process: a second study in it (a notebook's) does not train them again."""
    global _kernels_loaded
    from .. import kernels

    if _kernels_loaded or not kernels.ENABLED or backend.name() != "numpy" or not kernels.kernels():
        return
    rng = numpy.random.default_rng(0)
    # four members of 128 examples: every array over kernels.MIN_SIZE, down to the logits' dZ
    X, y = rng.standard_normal((128, 64)).astype(numpy.float32), rng.integers(0, 10, 128)
    threads, kernels.THREADS = kernels.THREADS, 1  # no thread pool in the driver: a fork would lose it
    try:
        members = [{"seed": i, "keep_prob": 0.8, "l2": 0.1} for i in range(4)]
        for sizes, batchnorm in (([64, 64, 10], False), ([64, 64, 64, 64, 10], True)):
            Population(sizes, members, batchnorm=batchnorm).fit(X, y, epochs=1, batch_size=128,
                                                                validation_data=(X, y))
    finally:
        kernels.THREADS = threads
    _kernels_loaded = True


_kernels_loaded = False  # load_kernels has run in this process


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
