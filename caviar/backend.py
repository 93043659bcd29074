"""The one place that knows the array library, the dtype policy and the random generators.

Engine code obtains its array namespace here (``xp``, or ``get_array_module(a)`` for the
namespace an array already lives in) so that the same lines run on NumPy and, on a GPU, on
CuPy, which mirrors NumPy's API. Nothing else in caviar imports NumPy-only tricks.

Dtype policy: float32 for training, float64 for checking (gradient checking with
eps = 1e-7 is meaningless in float32, whose resolution is about 1e-7).
"""

from __future__ import annotations

import os

import numpy

xp = numpy
DEFAULT_DTYPE = numpy.float32
CHECK_DTYPE = numpy.float64

try:  # CuPy is optional; only a GPU machine has it.
    import cupy as _cupy
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None


def use(name: str) -> None:
    """Select the array library for new arrays: ``"numpy"`` or ``"cupy"`` (a GPU).

    The choice is also written to ``CAVIAR_BACKEND``, so that worker processes started from
    here (``caviar tune``'s) make the same one.
    """
    global xp
    if name == "numpy":
        xp = numpy
    elif name == "cupy":
        if _cupy is None:
            raise ValueError("backend 'cupy' is not available: CuPy is not installed (pip install cupy-cuda12x, "
                             "or the build for your CUDA)")
        xp = _cupy
    else:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    os.environ["CAVIAR_BACKEND"] = name


BACKENDS = ("numpy", "cupy")


def name() -> str:
    """The array library in use: ``"numpy"`` or ``"cupy"``."""
    return "cupy" if _cupy is not None and xp is _cupy else "numpy"


def use_from_environment() -> None:
    """Select the backend named by ``CAVIAR_BACKEND``, if set (worker processes inherit it)."""
    wanted = os.environ.get("CAVIAR_BACKEND", "").strip()
    if wanted:
        use(wanted)


def get_array_module(*arrays):
    """The namespace (numpy or cupy) that the given arrays live in, like ``cupy.get_array_module``."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return numpy


def as_float_array(data, dtype=None):
    """Convert ``data`` to an array of the namespace in use.

    A floating array keeps its dtype (float64 stays float64, for checks); Python numbers,
    booleans and integer arrays become ``DEFAULT_DTYPE`` unless ``dtype`` is given.
    """
    if isinstance(data, (numpy.ndarray, numpy.generic)) or (_cupy is not None and isinstance(data, _cupy.ndarray)):
        arr, from_array = xp.asarray(data) if isinstance(data, numpy.generic) else data, True
    else:  # Python numbers and lists carry no dtype of their own
        arr, from_array = xp.asarray(data), False
    if dtype is not None:
        return arr if arr.dtype == dtype else arr.astype(dtype)
    if arr.dtype.kind == "f" and from_array:
        return arr
    if arr.dtype.kind == "f":
        return arr.astype(DEFAULT_DTYPE)
    if arr.dtype.kind == "c":
        raise TypeError(f"complex arrays are not supported (dtype {arr.dtype})")
    if arr.dtype.kind not in "biu":
        raise TypeError(f"cannot make a float tensor from data of dtype {arr.dtype}")
    return arr.astype(DEFAULT_DTYPE)


def rng(seed=None):
    """A seeded random generator (``numpy.random.Generator`` on the CPU).

    ``seed`` may be an int, None (fresh entropy) or an existing generator, which is returned.
    """
    if isinstance(seed, numpy.random.Generator):
        return seed
    if _cupy is not None and xp is _cupy:  # pragma: no cover - GPU only
        return _cupy.random.default_rng(seed)
    return numpy.random.default_rng(seed)


def shuffle_rng(seed):
    """The mini-batch order's own stream, apart from the dropout stream ``rng(seed)``, so that the
    members of a population can share one batch order and keep their own dropout masks."""
    return numpy.random.default_rng(None if seed is None else [seed, 1])


def to_device(a):
    """``a`` as an array of the namespace in use (data loaded by NumPy moved to the GPU once)."""
    return xp.asarray(a)


def to_module_of(a, like):
    """``a`` (a NumPy array of per-member values, say) in the namespace that ``like`` lives in."""
    mod = get_array_module(like)
    return a if mod is numpy or isinstance(a, mod.ndarray) else mod.asarray(a)


def to_numpy(a):
    """A NumPy copy of an array from any backend (for printing, saving and plotting)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):  # pragma: no cover - GPU only
        return _cupy.asnumpy(a)
    return numpy.asarray(a)


def scatter_add(target, index, values):
    """``target[index] += values`` where repeated indices accumulate (numpy.add.at)."""
    mod = get_array_module(target)
    if mod is numpy:
        numpy.add.at(target, index, values)
    else:  # pragma: no cover - GPU only
        import cupyx

        cupyx.scatter_add(target, index, values)


def _command_line():
    """True while ``python -m caviar`` or the ``caviar`` script starts: it reports a bad
    CAVIAR_BACKEND itself, as one line and exit code 2."""
    import sys

    first = os.path.basename(sys.argv[0]) if sys.argv else ""
    return first in ("-m", "caviar", "__main__.py")


try:
    use_from_environment()
except ValueError as _exc:  # importing never fails
    if not _command_line():
        import warnings

        warnings.warn(f"CAVIAR_BACKEND: {_exc}; caviar uses numpy (unset CAVIAR_BACKEND, or install CuPy)",
                      RuntimeWarning, stacklevel=2)
