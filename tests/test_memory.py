"""Training keeps freed memory for reuse (glibc's malloc), so steps do not pay page faults."""

import os
import subprocess
import sys
import textwrap

import pytest

from caviar import memory

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None

FIT = textwrap.dedent("""
    import resource
    import numpy as np
    from caviar.train.population import Population
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((640, 64)).astype(np.float32), rng.integers(0, 10, 640)
    # a short fit of small arrays (under malloc's mmap threshold) first loads what loads once:
    # numba's compiled kernels
    small = Population([64, 64, 10], [{"seed": i, "keep_prob": 0.8, "l2": 0.1} for i in range(2)])
    small.fit(X[:128], y[:128], epochs=1, batch_size=64)
    # (10, 64, 100) activations, over malloc's mmap threshold, allocated and freed every step;
    # without dropout: a step with one (its mask in bools, its product over the ReLU's output)
    # frees too few of them for glibc's own thresholds to churn here (1,429 faults against 1,359)
    pop = Population([64, 100, 100, 100, 10], [{"seed": i} for i in range(10)])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pop.fit(X, y, epochs=6, batch_size=64)  # steps enough that the per-step faults, not start-up, dominate
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults(keep):
    # malloc's mmap threshold pinned at its starting 128 KiB: where glibc raises it by itself
    # depends on the order blocks are freed, which varies from run to run (its defaults gave
    # 1,476 to 38,244 faults in eight runs here); caviar's settings replace it
    env = {**os.environ, "CAVIAR_KEEP_FREED_MEMORY": "1" if keep else "0", "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_training_reuses_freed_memory_instead_of_faulting_in_fresh_pages():
    kept, default = page_faults(True), page_faults(False)
    assert kept * 4 < default, (kept, default)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_applies_once_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setenv("CAVIAR_KEEP_FREED_MEMORY", "0")
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setenv("CAVIAR_KEEP_FREED_MEMORY", "1")
    assert memory.keep_freed_memory() is True
    assert memory._applied is True
