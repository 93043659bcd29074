"""Queueing a command for a live run (``caviar control`` and the dashboard): a JSON file in
``RUN/control/pending`` that the run's ``caviar.train.controls.Controller`` applies before its
next mini-batch, answering in ``RUN/control/done``."""

from __future__ import annotations

import os
import time
import uuid

from ..train.controls import (ACTIONS, ControlError, check_request, checkpoints, is_run, owner_alive, read_json,
                              write_json)

__all__ = ["ACTIONS", "ControlError", "checkpoints", "is_run", "read_json", "send", "write_json"]


def send(run_dir, action, value=None, wait=10.0):
    """Queue a command for a live run; wait up to ``wait`` seconds for the run to apply it and
    return its result ({'ok': bool, 'message': ...}), or None if it is still pending."""
    run_dir = os.fspath(run_dir)
    if not is_run(run_dir):
        raise ControlError(f"no caviar run at {run_dir!r}")
    value = check_request(action, value)
    state = read_json(os.path.join(run_dir, "state.json"), {})
    if state.get("status") in ("finished", "stopped", "failed", "diverged"):
        raise ControlError(f"the run at {run_dir!r} is {state['status']}; only a live run takes controls")
    if not owner_alive(state):  # killed: a command queued now would reach the next run instead
        raise ControlError(f"the run at {run_dir!r} is not running (its process {state.get('pid')} is gone)")
    pending = os.path.join(run_dir, "control", "pending")
    os.makedirs(pending, exist_ok=True)
    command_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    write_json(os.path.join(pending, command_id + ".json"), {"id": command_id, "action": action, "value": value,
                                                            "sent": time.time()})
    done = os.path.join(run_dir, "control", "done", command_id + ".json")
    deadline = time.time() + wait
    while time.time() < deadline:
        result = read_json(done)
        if result is not None:
            return result
        time.sleep(0.02)
    return None
