"""Compiled one-pass kernels (numba; defined in ``caviar/compiled.py``) for the elementwise
work of a training step.

The NumPy code of ``caviar.functional`` and ``caviar.optim`` is the readable reference: one
array operation per line of the notes, each a pass over memory (Adam makes about 13 passes over
the parameters, batch norm about 7 over the activations each way). A kernel here does, for every
element, exactly the same float operations in the same order and dtype (no fused multiply-add,
no fast-math): sums over the examples run in NumPy's order for that axis (row after row, from
the first), a mean divides by m, a bool mask multiplies as 0.0 or 1.0. Its results are therefore
bit-identical to the reference (``tests/test_kernels.py`` holds this for every kernel, float32
and float64, single networks and populations), so a population member still equals its solo
run whether or not the kernels run. exp, log and tanh stay in NumPy (its SIMD versions round
differently from a compiler's).

A layer kernel's arrays are (K, m, h): K members (a single network is K = 1), m examples, h
units; an update kernel's are (K, P) rows of parameters. Per-member coefficients are (K,) arrays
in the data's dtype, computed in float64 and rounded once, as ``caviar.optim.base.coef`` rounds
them. Scalars that NumPy applies as weak Python numbers (m, epsilon, 1.0) come in a small array
of the data's dtype, for the same reason. Large work is split by members over two threads
(numba releases the GIL).

Without numba, on the GPU, below ``MIN_SIZE`` elements (where a kernel call costs more than
NumPy's few passes; ``LOGITS_MIN_SIZE`` for the softmax and accuracy kernels, which replace
more of them) or with ``CAVIAR_FUSED=0``, ``usable`` is False and the reference runs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy

from . import backend

MIN_SIZE = 1 << 12  # elements from which a kernel beats NumPy's passes (and pays numba's start, once)
# logits from which the softmax and accuracy kernels run: they replace about ten NumPy calls
# each, and win from a single network's batch (20 against 37 us on (64, 10) here)
LOGITS_MIN_SIZE = 1 << 9
# elements from which a kernel's work is split over two threads: handing half to the other
# thread costs more than the pass itself below about 3M elements here (ReLU on (16, 128, 256):
# 44 us on one thread, 132 on two; Adam over 16 x 187,500 parameters: 1.64 ms on one, 1.32 on two)
SPLIT = 3 << 20
# gradients per signature of an update kernel: a step's tuple of gradients is padded with empty
# ones to a multiple of this, as numba compiles a kernel anew for each length of tuple (0.3 to
# 0.7 s here, on the first run of each depth of network after installing)
ARITY = 8
ROW_BLOCK = 128  # terms of a row the row-sum kernel adds (one block of NumPy's pairwise sum)
THREADS = min(2, os.cpu_count() or 1)  # 1 where each core already has its own worker (caviar tune)
ENABLED = os.environ.get("CAVIAR_FUSED", "1") != "0"  # CAVIAR_FUSED=0: the NumPy code everywhere
_pool = None
_kernels = None  # by name, loaded on first use (numba's import alone takes 0.2 s)


def _compile():
    from .compiled import KERNELS

    return dict(KERNELS)


def kernels():
    """The compiled kernels by name; empty without numba (or with a numba that refuses this NumPy)."""
    global _kernels
    if _kernels is None:
        try:
            _kernels = _compile()
        except Exception:  # noqa: BLE001 - any failure of an optional compiler means: use NumPy
            _kernels = {}
    return _kernels


_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def usable(*arrays, contiguous=True, min_size=None):
    """Whether the kernels run on ``arrays``: NumPy arrays of one float dtype, C-contiguous
    (unless ``contiguous`` is False), the first of ``min_size`` (``MIN_SIZE`` by default)
    elements or more (``CAVIAR_FUSED=0`` turns the kernels off)."""
    first = arrays[0]
    if not (ENABLED and isinstance(first, numpy.ndarray) and first.dtype in _FLOATS
            and first.size >= (MIN_SIZE if min_size is None else min_size)):
        return False
    dtype = first.dtype
    for a in arrays:  # a loop, not all() over a generator: this runs some 20 times a step
        if not isinstance(a, numpy.ndarray) or a.dtype != dtype or not (a.flags.c_contiguous or not contiguous):
            return False
    return backend.name() == "numpy" and bool(_kernels if _kernels is not None else kernels())


def column(value, K, dtype):
    """A hyperparameter (a float or a per-member (K, 1) array) as a (K,) array in ``dtype``,
    computed in float64 and rounded once: the value ``base.coef`` gives the NumPy update."""
    if isinstance(value, float):
        return numpy.full(K, value, dtype=dtype)
    value = numpy.asarray(value, dtype=numpy.float64).reshape(-1)
    return (value if len(value) == K else numpy.broadcast_to(value, (K,))).astype(dtype)


def constants(dtype, *values):
    """Scalars as NumPy applies weak Python numbers to an array: rounded to its dtype."""
    return numpy.asarray(values, dtype=numpy.float64).astype(dtype)


def stacked(array):
    """(m, h) or (K, m, h) as a (K, m, h) view."""
    return array if array.ndim == 3 else array.reshape((1,) + array.shape)


def per_unit(array, K):
    """A per-unit vector ((h,), (1, h) or (K, 1, h)) as a C-ordered (K, h) array: a view where
    it is one, else a copy (a population's parameters are views of its (K, P) block, and a
    kernel vectorizes only over rows it knows to be contiguous). Kernels only read these."""
    return numpy.ascontiguousarray(array.reshape(K, -1))


def columns_of(rows):
    """(a C-contiguous (K, P) array, the column where ``rows`` (K, n) start in it): the array
    ``rows`` is a block of columns of (a population's parameters are views of the optimizer's
    (K, P) array), else ``rows`` itself at 0 where it is C-contiguous; None where it is
    neither. A kernel takes rows as a C-contiguous array and an offset, as it vectorizes only
    over rows it knows to be contiguous (and takes the blocks of one array in one call)."""
    base = rows.base
    if (isinstance(base, numpy.ndarray) and base.ndim == 2 and base.flags.c_contiguous and base.dtype == rows.dtype
            and rows.ndim == 2 and base.shape[0] == rows.shape[0] and rows.strides[1] == rows.itemsize
            and (base.strides[0] == rows.strides[0] or len(rows) == 1)):
        offset, rest = divmod(rows.ctypes.data - base.ctypes.data, rows.itemsize)
        if rest == 0 and 0 <= offset <= base.shape[1] - rows.shape[1]:
            return base, offset
    return (rows, 0) if rows.flags.c_contiguous else None


def _forget_pool():
    global _pool
    _pool = None  # a forked child has no thread of its parent's pool


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _halves(kernel, first_args, second_args):
    """Run ``kernel`` on two halves of the work at once, one on a helper thread (numba releases
    the GIL), and wait for both."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(1, thread_name_prefix="caviar-kernel")
    first = _pool.submit(kernel, *first_args)
    kernel(*second_args)
    first.result()


def run(name, *args):
    """Kernel ``name`` on ``args``; split over two threads by members (every array argument
    with a leading axis of K) when the work is large, K >= 2 and ``THREADS`` allows."""
    kernel = kernels()[name]
    lead = args[0]
    K = lead.shape[0]
    if lead.size < SPLIT or THREADS < 2 or K < 2:
        kernel(*args)
        return
    h = K // 2

    def half(part):
        return [a[part] if isinstance(a, numpy.ndarray) and a.ndim >= 2 and a.shape[0] == K else a for a in args]

    _halves(kernel, half(slice(None, h)), half(slice(h, None)))


_layouts = {}  # update's arguments besides the arrays, by what they are made of: a run's steps repeat them


_last_layout = None  # (K, dtype, n, starts, decays, widths, layout): the last call's, found by identity


def _layout(K, dtype, n, starts, decays, widths=None):
    """(the empty gradients that pad ``n`` to a multiple of ``ARITY``, the gradients' first
    columns, their decays as (n, K) rows in ``dtype`` with 0 where none, whether each has one,
    their weights' widths, the widest, the kernels' constant -0.0, whether any has a decay)
    for ``update``; made once
    for each set of values (decays are keyed by their bytes). A population's steps pass the
    same ``starts`` and ``widths`` lists and decay arrays (which nothing writes to) step after
    step: the last call's layout is found by their identity first, without the key's bytes
    (8 us a step on the default search's 10 x 64-64-64-64-10 group)."""
    global _last_layout
    last = _last_layout
    if (last is not None and last[3] is starts and last[5] is widths and last[0] == K and last[2] == n
            and last[1] == dtype
            and (last[4] is decays or (decays is not None and last[4] is not None and len(decays) == len(last[4])
                                       and all(a is b for a, b in zip(decays, last[4]))))):
        return last[6]
    found = _layout_by_value(K, dtype, n, starts, decays, widths)
    _last_layout = (K, dtype, n, starts, None if decays is None else tuple(decays), widths, found)
    return found


def _layout_by_value(K, dtype, n, starts, decays, widths):
    """``_layout``'s answer by the values of its arguments."""
    key = (K, dtype, n, None if starts is None else tuple(starts),
           None if decays is None else tuple(d if d is None else float(d).hex() if isinstance(d, float)
                                             else (d.dtype.str, d.tobytes()) for d in decays),
           None if widths is None else tuple(widths))
    found = _layouts.get(key)
    if found is not None:
        return found
    pad = -n % ARITY  # empty gradients: every depth of network runs one compiled signature
    pads = (numpy.empty((K, 0), dtype=dtype),) * pad
    total = n + pad
    first = numpy.zeros(total, dtype=numpy.int64)
    if starts is not None:
        first[:n] = starts
    rows = numpy.zeros((total, K), dtype=dtype)  # each gradient's decay per member (0: none)
    with_decay = numpy.zeros(total, dtype=numpy.bool_)
    for i, d in enumerate(decays or ()):
        if d is not None:
            rows[i], with_decay[i] = column(d, K, dtype), True
    hs = numpy.ones(total, dtype=numpy.int64)  # a decayed gradient's weight's columns (its rows' length)
    if widths is not None:
        hs[:n] = [max(1, int(w)) for w in widths]
    if len(_layouts) >= 64:  # a bound: a long session's searches make new ones
        _layouts.clear()
    found = _layouts[key] = (pads, first, rows, with_decay, hs, int(hs.max()), constants(dtype, -0.0),
                             bool(with_decay.any()))
    return found


def update(kind, param, grads, state, columns, decays=None, starts=None, widths=None):
    """Optimizer ``kind``'s kernel, one call for a step's parameters: ``param`` and its
    ``state`` arrays (K, P) updated in place from ``grads``, a list of (K, n_i) C-contiguous
    gradients, the i-th covering the columns ``starts[i]`` .. ``starts[i] + n_i`` (one gradient
    of every column where ``starts`` is None) and taken as ``grad + decays[i] * param`` where
    ``decays[i]`` (the L2 term's factor per member) is given; ``columns`` are the update's
    coefficients as (K,) arrays (``column``). Split over two threads when large (memory-bound
    work gains the second core).

    A gradient with a decay is a weight's, ``widths[i]`` columns wide (one row where
    ``widths`` is None): the kernel also sums the squares of that weight's updated values per
    member, as ``caviar.functional.member_squares`` sums them (the same bits), right after it
    updates that member's weight (while it is in cache), for the next step's L2 term. Returns
    them as a (K, len(grads)) array in the parameters' dtype, entry [k, i] for gradient i with
    a decay (the others are not set), or None where none was summed (no gradient has a decay,
    or one row was split over two threads by columns)."""
    kernel = kernels()[kind]
    K = param.shape[0]
    pads, starts, rows, with_decay, hs, widest, negzero, decayed = _layout(K, param.dtype, len(grads), starts, decays,
                                                                           widths)
    if decays is not None and widths is None:
        hs = numpy.asarray([max(1, g.shape[1]) for g in grads] + [1] * len(pads), dtype=numpy.int64)
        widest = int(hs.max())
    grads = (*grads, *pads)
    # the squares and each thread's column sums: only a gradient with a decay touches them (a
    # single network's update and a population's without L2 get empty ones, of the same types)
    squares = numpy.empty((K, len(grads)) if decayed else (1, 0), dtype=param.dtype)

    def cols():
        return numpy.empty(widest if decayed else 0, dtype=param.dtype)

    if K * sum(g.shape[1] for g in grads) < SPLIT or THREADS < 2:
        kernel(param, grads, starts, rows, with_decay, hs, squares, cols(), negzero, *state, *columns)
        return squares if decayed else None
    if K >= 2:  # whole members on each thread, each with its own columns' sums
        h = K // 2
        _halves(kernel, [param[:h], tuple(g[:h] for g in grads), starts, numpy.ascontiguousarray(rows[:, :h]),
                         with_decay, hs, squares[:h], cols(), negzero, *(a[:h] for a in state),
                         *(c[:h] for c in columns)],
                [param[h:], tuple(g[h:] for g in grads), starts, numpy.ascontiguousarray(rows[:, h:]), with_decay,
                 hs, squares[h:], cols(), negzero, *(a[h:] for a in state), *(c[h:] for c in columns)])
        return squares if decayed else None
    # one row: each gradient's whole rows split in two, a half on each thread; the squares'
    # sums over the rows would be two partial sums, so they are not returned
    cut = [g.shape[1] // 2 // int(w) * int(w) for g, w in zip(grads, hs)]
    _halves(kernel, [param, tuple(g[:, :c] for g, c in zip(grads, cut)), starts, rows, with_decay, hs, squares,
                     cols(), negzero, *state, *columns],
            [param, tuple(g[:, c:] for g, c in zip(grads, cut)), starts + numpy.asarray(cut, dtype=numpy.int64),
             rows, with_decay, hs, numpy.empty_like(squares), cols(), negzero, *state, *columns])
    return None
