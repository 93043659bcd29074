"""Keep freed memory for reuse while training (glibc's malloc).

Training allocates and frees arrays of the same sizes every mini-batch. By default glibc
serves every block over 128 KiB with fresh pages from ``mmap`` (raising that threshold only
after it has seen such a block freed) and hands freed heap back to the operating system, so
a step can pay thousands of page faults: the first population of the default ``caviar tune``
search took 150,000 minor faults and 1.85 s, the same population again 2,600 faults and
1.55 s (``ru_minflt`` around ``train_population``). Since a population's step writes its
dropout and several gradients over arrays it has (``caviar.train.step``), it frees fewer, and
glibc's own thresholds keep more of them: ``benchmarks/page_faults.py`` gives 17,802 faults
and 0.55 s with malloc's defaults against 11,809 and 0.53 s (10 x 64-100-100-100-10 with
dropout); without dropout 1,476 to 38,244 (eight runs: where glibc raises its threshold varies)
against 1,367 to 1,483, and 56,600 to 58,600 with the threshold held at 128 KiB
(``tests/test_memory.py``).
PyTorch avoids this cost with its caching allocator; caviar asks malloc to behave like one:
blocks up to 32 MiB come from the heap, and up to 128 MiB of freed heap is kept rather than
returned.

Applied once per process when training starts (``fit``, ``Population.fit``), only where
glibc's ``mallopt`` exists. ``CAVIAR_KEEP_FREED_MEMORY=0`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 128 << 20), (M_TOP_PAD, 64 << 20))

_applied = None  # None: not tried yet; then True or False


def keep_freed_memory():
    """Apply ``SETTINGS`` with ``mallopt`` once; True if malloc accepted them."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("CAVIAR_KEEP_FREED_MEMORY", "1") != "0" and sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):  # not glibc
                return _applied
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _applied = all(mallopt(option, value) == 1 for option, value in SETTINGS)
    return _applied
