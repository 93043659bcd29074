"""Where trials run: in this process, in local worker processes (the default: one per core),
or on a Ray cluster. The driver claims each trial before it starts, so a trial runs once."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys

from .objective import run_trial, run_trial_detached


def _worker_init(single_thread):
    """Die with the driver (so a killed study leaves no orphan training a stale trial) and
    keep BLAS to one thread when several workers share the cores."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: orphans are still fenced off by claim tokens
        pass
    if single_thread:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


class InlineExecutor:
    """Trials one after another in this process (workers=1)."""

    workers = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, study, numbers, on_done):
        for n in numbers:
            token = study.claim(n)
            if token is not None:
                on_done(run_trial(study.path, n, token))


class LocalExecutor:
    """Trials in ``workers`` processes on this machine."""

    def __init__(self, workers=None):
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.pool = None

    def __enter__(self):
        # fork on Linux: workers start at once and share the driver's loaded data; spawn elsewhere
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        self.pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method),
                                           initializer=_worker_init, initargs=(self.workers > 1,))
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)
        return False

    def run(self, study, numbers, on_done):
        futures = {}
        for n in numbers:
            token = study.claim(n)
            if token is not None:
                futures[self.pool.submit(run_trial, study.path, n, token)] = (n, token)
        for future in cf.as_completed(futures):
            n, token = futures[future]
            try:
                on_done(future.result())
            except cf.process.BrokenProcessPool:  # a worker died (out of memory, a signal)
                study.finish(n, token, "failed", error="the worker process died")
                self.__exit__(None, None, None)
                self.__enter__()
                on_done({"number": n, "status": "failed", "value": None})


class RayExecutor:
    """Trials as Ray tasks; results travel back to the driver, which writes the study file, so
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
        self.remote = self.ray.remote(num_cpus=1)(run_trial_detached)
        return self

    def __exit__(self, *exc):
        return False

    def run(self, study, numbers, on_done):
        settings = study.settings
        pending = {}
        for n in numbers:
            token = study.claim(n)
            if token is not None:
                pending[self.remote.remote(settings, study.trial(n))] = (n, token)
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            ref = done[0]
            n, token = pending.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as exc:  # the task itself died
                study.finish(n, token, "failed", error=f"ray task failed: {exc}")
                on_done({"number": n, "status": "failed", "value": None})
                continue
            for row in result["epochs"]:
                study.report_epoch(n, token, **row)
            study.finish(n, token, result["status"], result["value"], result["last_value"], result["best_epoch"],
                         result["error"], duration=result["seconds"])
            on_done(result)


def make_executor(kind="local", workers=None, address=None):
    if kind == "ray":
        return RayExecutor(workers, address)
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; expected 'local' or 'ray'")
    if address:
        raise ValueError("--address is for the ray executor")
    workers = int(workers or os.cpu_count() or 1)
    return InlineExecutor() if workers == 1 else LocalExecutor(workers)
