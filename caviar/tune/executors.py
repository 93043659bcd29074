"""Where trials run: in this process, in local worker processes (the default: one per core),
or on a Ray cluster. Work comes as jobs: a job of one trial trains one network, a job of
several (trials that share a shape) trains them as one population. The driver claims each
trial before it starts, so a trial runs once."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time

from .. import backend
from ..train.population import load_kernels
from .objective import run_population, run_population_detached, run_trial, run_trial_detached
from .study import Study


def _worker_init(single_thread, inherited):
    """Die with the driver (so a killed study leaves no orphan training a stale trial) and
    keep BLAS and the compiled kernels to one thread when several workers share the cores.
    A forked worker inherits BLAS's one thread from the driver (``inherited``): setting it
    here would restart OpenBLAS's thread pool, whose threads spin for work for about 0.1 s
    (0.12-0.15 s of CPU in the 64-85 ms after it in a forked child here), taking the other worker's
    core while both start their first job."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: orphans are still fenced off by claim tokens
        pass
    if single_thread:
        from .. import kernels

        if not inherited:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        kernels.THREADS = 1


def _claim(study, job):
    claimed = [(n, study.claim(n)) for n in job]
    return [n for n, t in claimed if t is not None], [t for n, t in claimed if t is not None]


def _late(deadline):
    """True once the time budget is spent: work not started by then stays pending."""
    return deadline is not None and time.time() >= deadline


def _claim_and_run(study_path, job, deadline=None):
    """In a worker: claim the job's trials as it starts them, so trials still queued behind it
    stay pending (and show so) and a trial's run count counts real starts."""
    if _late(deadline):
        return []
    study = Study.open(study_path)
    try:
        numbers, tokens = _claim(study, job)
    finally:
        study.close()
    return _run_job(study_path, numbers, tokens, deadline) if numbers else []


def _run_job(study_path, numbers, tokens, deadline=None):
    if len(numbers) == 1:
        return [run_trial(study_path, numbers[0], tokens[0], deadline)]
    return run_population(study_path, numbers, tokens, deadline)


class InlineExecutor:
    """Jobs one after another in this process (workers=1)."""

    workers = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, study, jobs, on_done, deadline=None):
        for job in jobs:
            if _late(deadline):
                break
            numbers, tokens = _claim(study, job)
            if numbers:
                for result in _run_job(study.path, numbers, tokens, deadline):
                    on_done(result)


def default_workers():
    """One worker per core on the CPU. On a GPU, one: processes that share a GPU take turns on
    it, and populations train slower the more processes share it (the default search on an
    H100 took 5.3 s with one worker and 15.0 s with sixteen, ``benchmarks/tune_population.py``)."""
    return 1 if backend.name() == "cupy" else os.cpu_count() or 1


class LocalExecutor:
    """Jobs in ``workers`` processes on this machine (default: ``default_workers()``). With
    several forked workers, the driver's BLAS runs on one thread while the pool does (the
    workers inherit it); its own limits come back when the pool ends."""

    def __init__(self, workers=None):
        self.workers = int(workers or default_workers())
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.pool = None
        self.limits = None  # the driver's BLAS limits while a pool of forked workers runs

    def __enter__(self):
        # fork on Linux: workers start at once and share the driver's loaded data; spawn elsewhere,
        # and on a GPU, where a forked child cannot use the CUDA state of its parent
        fork = sys.platform.startswith("linux") and backend.name() == "numpy"
        single = self.workers > 1
        if fork:
            load_kernels()  # once here, not once per worker
            if single:  # the workers, forked while the pool runs, inherit BLAS's one thread
                from threadpoolctl import threadpool_limits

                self.limits = threadpool_limits(1)
        try:
            self.pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(
                "fork" if fork else "spawn"), initializer=_worker_init, initargs=(single, fork))
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self):
        if self.limits is not None:
            self.limits.restore_original_limits()
            self.limits = None

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._restore()
        return False

    def run(self, study, jobs, on_done, deadline=None):
        futures = {self.pool.submit(_claim_and_run, study.path, job, deadline): job for job in jobs}
        broken = False
        for future in cf.as_completed(futures):
            try:
                results = future.result()
            except cf.process.BrokenProcessPool:  # a worker died (out of memory, a signal): the trials
                broken = True  # it had started fail; those never started stay pending and run again
                results = [{"number": n, "status": "failed", "value": None}
                           for n in study.fail_running(futures[future], "the worker process died")]
            for result in results:
                on_done(result)
        if broken:
            self.__exit__(None, None, None)
            self.__enter__()


class RayExecutor:
    """Jobs as Ray tasks; results travel back to the driver, which writes the study file, so
    workers need no access to it. ``address`` None starts a local Ray instance."""

    def __init__(self, workers=None, address=None):
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'caviar[ray]'") from None
        self.ray, self.address, self.workers = ray, address, workers

    def __enter__(self):
        kwargs = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
        if self.address:
            kwargs["address"] = self.address
        elif self.workers:
            kwargs["num_cpus"] = int(self.workers)
        self.ray.init(**kwargs)
        self.single = self.ray.remote(num_cpus=1)(run_trial_detached)
        self.population = self.ray.remote(num_cpus=1)(run_population_detached)
        return self

    def __exit__(self, *exc):
        return False

    def run(self, study, jobs, on_done, deadline=None):
        """Jobs go out as the cluster can start them (one per CPU): a trial is claimed when it
        is sent, so trials still queued stay pending and a run count counts real starts."""
        settings = study.settings
        slots = int(self.workers or self.ray.cluster_resources().get("CPU", 1)) or 1
        queue = list(jobs)
        pending = {}

        def send():
            while queue and len(pending) < slots and not _late(deadline):
                numbers, tokens = _claim(study, queue.pop(0))
                if not numbers:
                    continue
                trials = [study.trial(n) for n in numbers]
                ref = (self.single.remote(settings, trials[0], deadline) if len(trials) == 1
                       else self.population.remote(settings, trials, deadline))
                pending[ref] = dict(zip(numbers, tokens))

        send()
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            ref = done[0]
            tokens = pending.pop(ref)
            try:
                results = self.ray.get(ref)
            except Exception as exc:  # the task itself died
                for n, token in tokens.items():
                    study.finish(n, token, "failed", error=f"ray task failed: {exc}")
                    on_done({"number": n, "status": "failed", "value": None})
                send()
                continue
            for result in results if isinstance(results, list) else [results]:
                n = result["number"]
                study.report_epochs([(n, tokens[n], row) for row in result["epochs"]])
                study.finish(n, tokens[n], result["status"], result["value"], result["last_value"], result["best_epoch"],
                             result["error"], duration=result["seconds"], model=result["model"])
                on_done(result)
            send()


def make_executor(kind="local", workers=None, address=None):
    if kind == "ray":
        return RayExecutor(workers, address)
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; expected 'local' or 'ray'")
    if address:
        raise ValueError("--address is for the ray executor")
    workers = int(workers or default_workers())
    return InlineExecutor() if workers == 1 else LocalExecutor(workers)
