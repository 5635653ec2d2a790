"""Running the real CLI against the live federation."""

from __future__ import annotations

import os
import subprocess
import sys


def cli(live, *args, token=None, check=True):
    """``healthspace ARGS`` in a subprocess, as the consumer unless another token is given."""
    env = {**os.environ, "HEALTHSPACE_HUB": live.url,
           "HEALTHSPACE_TOKEN": token or live.consumer_token}
    proc = subprocess.run([sys.executable, "-m", "healthspace", *args], env=env,
                          capture_output=True, text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
