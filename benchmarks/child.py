"""Running one side of a benchmark in a process of its own (so its time and memory are its
own), which prints its figures as JSON on its last line."""

from __future__ import annotations

import json
import subprocess


def json_of(command, what, env=None):
    """Run ``command``; the JSON of the last line it prints. A failure stops the benchmark with
    the child's error output."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
