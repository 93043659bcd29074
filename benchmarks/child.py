"""Running one side of a benchmark in a process of its own (so its time and memory are its
own), which prints its figures as JSON."""

from __future__ import annotations

import json
import subprocess


def json_of(command, what, env=None):
    """Run ``command``; the JSON it prints (all of its output, as ``caviar --json`` prints, or
    else its last line). A failure stops the benchmark with the child's error output."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr[-3000:]}")
    text = result.stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.splitlines()[-1])
