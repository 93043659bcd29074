"""The optimizer protocol: state per parameter, updated in place.

An optimizer only computes and applies updates from gradients that backprop left in
``.grad``; it never builds the cost. ``minimize(cost_fn, params)`` is the framework-style
convenience from the notes: zero gradients, evaluate the cost, backprop, step.

Hyperparameters may be floats or arrays that broadcast against the parameters (a population
of models gives each member its own learning rate and betas); ``lr`` may also be a schedule,
a callable ``step -> lr``.
"""

from __future__ import annotations

import numbers

import numpy

from .. import backend, kernels
from ..autodiff import Tensor, no_grad


def _per_member(name, value, ok, requirement):
    """An array of per-member values (a population): float64, every entry checked."""
    arr = numpy.asarray(value, dtype=numpy.float64)
    bad = ~ok(arr)
    if bad.any():
        raise ValueError(f"{name} must be {requirement}, got {arr[bad].flat[0]!r} for member {int(numpy.argmax(bad.ravel()))}")
    return arr


def check_lr(lr):
    """A learning rate is a non-negative number, a schedule (a callable ``step -> lr``), or an
    array of per-member rates for a population."""
    if callable(lr):
        return lr
    if isinstance(lr, numpy.ndarray):
        return _per_member("learning rate lr", lr, lambda a: (a >= 0) & numpy.isfinite(a), "a non-negative finite number")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 <= lr < float("inf"):
        raise ValueError(f"learning rate lr must be a non-negative finite number, got {lr!r}")
    return float(lr)


def check_beta(name, beta):
    if isinstance(beta, numpy.ndarray):
        return _per_member(name, beta, lambda a: (a >= 0) & (a < 1), "in [0, 1)")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < 1:
        raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
    return float(beta)


def check_epsilon(epsilon):
    if isinstance(epsilon, numpy.ndarray):
        return _per_member("epsilon", epsilon, lambda a: a > 0, "positive")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    return float(epsilon)


def coef(value, like):
    """A coefficient for arithmetic with the array ``like``, in its dtype and on its device.
    Scalars and per-member arrays are both computed in float64 first: a Python float is then
    rounded to float32 by the array operation itself, an array by ``astype``, to the same value,
    so a population member's update is bit-identical to the same model trained alone."""
    if isinstance(value, float):
        return value
    return backend.to_module_of(value.astype(like.dtype, copy=False), like)


def power(beta, t):
    """beta ** t for a scalar or per-member beta, each entry rounded as Python's float power:
    NumPy's array power picks SIMD kernels at run time (AVX-512's differs from Python's by an
    ulp in about 5% of cases), which would break a member's bit-identity with its solo run."""
    if isinstance(beta, float):
        return beta**t
    values = beta.ravel().tolist()
    if values and values.count(values[0]) == len(values):  # the members share it (the default): one power
        return numpy.full(beta.shape, values[0] ** t, dtype=numpy.float64)
    return numpy.asarray([b**t for b in values], dtype=numpy.float64).reshape(beta.shape)


def fused_update(kind, param, grad, state_arrays, coefficients):
    """Apply optimizer ``kind``'s update to ``param`` in one compiled pass (``caviar.kernels``),
    bit-identical to its NumPy update; False where the kernels do not run (no numba, the GPU,
    a small or non-contiguous parameter), and then the caller runs the NumPy update.
    ``coefficients`` are the update's hyperparameters as the NumPy update computes them (floats,
    or per-member (K, 1) float64 arrays); ``state_arrays`` are updated in place.

    A population's (K, P) block (``_Flat``) is updated in one call from each parameter's own
    ``.grad`` (``grad`` None: nothing was gathered), each with its L2 term's gradient added
    inside the kernel where the step gives one (``_Flat.decay``)."""
    data = param.data
    if isinstance(param, _Flat) and grad is None:
        K = len(data)
        squares = kernels.update(kind, data, [numpy.ascontiguousarray(p.grad.reshape(K, -1)) for p in param.params],
                                 state_arrays, [kernels.column(c, K, data.dtype) for c in coefficients], param.decay,
                                 param.starts, param.widths)
        param.squares = None if squares is None else (squares, [d is not None for d in param.decay])
        return True
    if not kernels.usable(data, *state_arrays) or getattr(grad, "dtype", None) != data.dtype:
        return False
    K = len(data) if isinstance(param, _Flat) else 1
    columns = [kernels.column(c, K, data.dtype) for c in coefficients]
    if isinstance(param, _Flat):  # a population's gathered (K, P) block
        kernels.update(kind, data, [numpy.ascontiguousarray(grad)], state_arrays, columns)
    else:  # a single network's parameter and its state, each one row
        kernels.update(kind, data.reshape(1, -1), [numpy.ascontiguousarray(grad.reshape(1, -1))],
                       [a.reshape(1, -1) for a in state_arrays], columns)
    return True


_FLAT = "population"  # the state key of the (K, P) update


class _Flat:
    """A population's parameters as one (K, P) array: parameter i's data becomes a view of a
    block of columns, so an update written in place on ``data`` lands in every parameter.
    Each element goes through the same float operations as when parameters are updated one
    by one, so results are bit-identical. A parameter whose ``.data`` was replaced (members
    removed, weights restored) makes ``holds`` false, and the next step gathers afresh."""

    __slots__ = ("params", "views", "columns", "starts", "widths", "data", "dtype", "grad", "decay", "squares")

    def __init__(self, params):
        xp = backend.get_array_module(params[0].data)
        K = len(params[0].data)
        self.params = list(params)
        self.data = xp.concatenate([p.data.reshape(K, -1) for p in params], axis=1)
        self.dtype = self.data.dtype
        self.grad = xp.empty_like(self.data)
        self.decay = None  # this step's L2 factors, one per parameter (None: no term), from ``step``
        self.views, self.columns, start = [], [], 0
        for p in params:
            stop = start + p.data[0].size
            view = self.data[:, start:stop].reshape(p.data.shape)
            if not xp.shares_memory(view, self.data):  # cannot happen for stacked (K, ...) arrays
                raise RuntimeError(f"parameter {getattr(p, 'name', '')} of shape {p.data.shape} cannot be a view")
            p.data = view
            self.views.append(view)
            self.columns.append((start, stop))
            start = stop
        self.starts = [start for start, _ in self.columns]  # the same lists at every step (the update's layout)
        self.widths = [p.data.shape[-1] if p.data.ndim else 1 for p in params]
        # (the compiled update's (K, len(params)) sums of squares of the values it wrote, whether
        # each parameter had a decay (only those are summed)) for the next step's L2 term; None: none
        self.squares = None

    def same_params(self, params):
        return len(params) == len(self.params) and all(p is q for p, q in zip(params, self.params))

    def holds(self, params):
        return self.same_params(params) and all(p.data is v for p, v in zip(params, self.views))

    def gather_grads(self, params):
        xp = backend.get_array_module(self.data)
        return xp.concatenate([p.grad.reshape(len(self.data), -1) for p in params], axis=1, out=self.grad)


class Optimizer:
    """Base class: subclasses implement ``init_state(param)`` and ``update(param, grad, state, lr)``.

    ``defaults`` holds every hyperparameter the optimizer takes, by the notes' names (``lr``,
    ``beta1``, ``beta2``, ``epsilon``), with the notes' defaults: the one place they live.
    ``names`` maps a notes' name to the constructor's where they differ (momentum's beta is
    ``beta1`` in a search space and on the command line).

    The learning rate has one owner, the optimizer (as optax's ``inject_hyperparams``): an
    epoch schedule sets it at the start of every epoch (``start_epoch``), and a value set by
    hand (``set_lr``, panda mode) replaces the schedule from then on.
    """

    defaults = {"lr": 0.01}
    names = {}
    kernel = None  # the name of its compiled update in caviar.kernels, if it has one

    def __init__(self, lr=None):
        self.lr = check_lr(self.defaults["lr"] if lr is None else lr)
        self.schedule = None  # epoch -> lr, set by set_schedule
        self.iterations = 0  # completed steps
        self.state = {}
        self._flat = None  # a population's parameters as one (K, P) array, once stepped

    @classmethod
    def option(cls, name, value):
        """A constructor argument: ``value``, or the notes' default for ``name`` when None."""
        return cls.defaults[name] if value is None else value

    def current_lr(self):
        return self.lr(self.iterations) if callable(self.lr) else self.lr

    # -- the learning rate's one owner ----------------------------------------------------
    def set_schedule(self, schedule):
        """Follow ``schedule`` (epoch -> lr) from the next epoch on; a schedule without its own
        initial rate starts from the current one."""
        if schedule is not None and hasattr(schedule, "with_lr0") and not callable(self.lr):
            schedule = schedule.with_lr0(self.lr)
        self.schedule = schedule

    def start_epoch(self, epoch):
        """Called by the training loop before every epoch (counted from 1)."""
        if self.schedule is not None:
            self.lr = check_lr(self.schedule(epoch))

    def set_lr(self, lr):
        """A learning rate set by hand: it replaces the schedule from now on."""
        self.lr = check_lr(lr)
        self.schedule = None

    def keep(self, slots):
        """Keep only the members in ``slots`` (a population shrinks): per-member
        hyperparameters, schedules and state."""
        for attr, value in list(vars(self).items()):
            if isinstance(value, numpy.ndarray):
                setattr(self, attr, value[slots])
        if hasattr(self.schedule, "keep"):
            self.schedule = self.schedule.keep(slots)
        for state in self.state.values():
            for key, value in state.items():
                if hasattr(value, "shape") and value.ndim >= 1:
                    state[key] = value[slots]

    def hyperparameters(self):
        """The constructor's arguments, for model files and reports."""
        return {"lr": self.lr if isinstance(self.lr, float) else None}

    def init_state(self, param):
        return {}

    def update(self, param, grad, state, lr):  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, params, active=None, decay=None):
        """Apply one update to every parameter that has a gradient.

        With per-member hyperparameters (a population: arrays of shape (K, 1)), all parameters
        are updated as one (K, P) array (see ``_Flat``): each elementwise pass of the update is
        one call over long contiguous rows instead of one per parameter. ``active`` (K,) bools
        leaves the other members unchanged for this step (a diverging member's last weights).
        ``decay`` maps some parameters (by ``id``) to the factor c of an L2 term left off the tape: their
        gradient is taken as ``grad + c * W`` (what backprop through the term adds), inside
        the compiled update where it runs.
        """
        lr = self.current_lr()
        if active is not None:
            lr = numpy.broadcast_to(numpy.asarray(lr, dtype=numpy.float64), (len(active), 1)) * active.reshape(-1, 1)
        per_member = isinstance(lr, numpy.ndarray) or any(
            isinstance(v, numpy.ndarray) for v in self.hyperparameter_values())
        live = [p for p in params if p.grad is not None]
        decay = decay or {}
        with no_grad():
            if per_member and live:
                self._step_flat(live, lr, decay)
            else:
                for p in live:
                    state = self.state.get(id(p))
                    if state is None:
                        state = self.state[id(p)] = self.init_state(p)
                    c = decay.get(id(p))
                    self.update(p, p.grad if c is None else p.grad + c * p.data, state, lr)
        self.iterations += 1

    def _step_flat(self, params, lr, decay):
        flat = self._flat
        if flat is None or not flat.holds(params):
            same = flat is not None and flat.same_params(params)
            flat = self._flat = _Flat(params)
            if not same:
                self.state.pop(_FLAT, None)
        state = self.state.get(_FLAT)
        if state is None or any(getattr(v, "shape", flat.data.shape) != flat.data.shape for v in state.values()):
            state = self.state[_FLAT] = self.init_state(flat)
        flat.squares = None  # until the compiled update sums this step's
        if self.kernel is not None and kernels.usable(flat.data) and all(
                isinstance(p.grad, numpy.ndarray) and p.grad.dtype == flat.dtype for p in params):
            # nothing gathered: the kernel reads each parameter's gradient where backprop left it
            flat.decay = [decay.get(id(p)) for p in params] if decay else None
            self.update(flat, None, state, lr)
            flat.decay = None
            return
        grad = flat.gather_grads(params)
        K = len(flat.data)
        for p, (start, stop) in zip(params, flat.columns):
            c = decay.get(id(p))
            if c is not None:  # grad + c * W, the values backprop through the L2 term gives
                grad[:, start:stop] += c.reshape(K, 1) * flat.data[:, start:stop]
        self.update(flat, grad, state, lr)

    def hyperparameter_values(self):
        return [v for k, v in vars(self).items() if k in ("beta", "beta1", "beta2", "epsilon")]

    @staticmethod
    def zero_grad(params):
        for p in params:
            p.grad = None

    def minimize(self, cost_fn, params):
        """One step on ``cost_fn()``: zero grads, forward, backward, update. Returns the cost."""
        params = [params] if isinstance(params, Tensor) else list(params)
        self.zero_grad(params)
        cost = cost_fn()
        cost.backward()
        self.step(params)
        return cost

    # -- state as arrays, for model files ---------------------------------------------------
    def state_arrays(self, params):
        """{'<param name>.<key>': array} for every parameter with state (names from ``params``)."""
        out = {}
        for name, p in params.items():
            for key, value in self.state.get(id(p), {}).items():
                if key.startswith("_"):
                    continue
                out[f"{name}.{key}"] = value
        return out

    def load_state_arrays(self, params, arrays):
        for name, p in params.items():
            state = self.init_state(p)
            found = False
            for key in list(state):
                if not key.startswith("_") and f"{name}.{key}" in arrays:
                    value = arrays[f"{name}.{key}"]
                    state[key] = int(value) if isinstance(state[key], int) else value.astype(p.dtype)
                    found = True
            if found:
                self.state[id(p)] = state

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"
