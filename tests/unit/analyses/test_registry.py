"""The analysis registry loads its built-ins exactly once, whoever asks first."""

from __future__ import annotations

import subprocess
import sys

# A fresh interpreter: in this test process the registry is long loaded. Eight threads look
# analyses up at the same moment, as the request threads of a hub that has just restarted
# and receives several nodes' saved results at once.
_RACE = """
import threading
from healthspace.analyses import registry

barrier = threading.Barrier(8)
seen, errors = [], []

def look_up(name):
    barrier.wait()
    try:
        seen.append(registry.get(name).name)
    except Exception as exc:
        errors.append(repr(exc))

names = ["glm", "km", "cox", "summary", "cohort_count", "pv", "fl_train", "drg_weights"]
threads = [threading.Thread(target=look_up, args=(n,)) for n in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(seen) == sorted(names), errors, len(registry.names()))
"""


def test_concurrent_first_lookups_see_every_builtin() -> None:
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _RACE], capture_output=True, text=True,
                              check=True, timeout=120)
        ok, _, count = done.stdout.strip().partition(" [] ")
        assert ok == "True", done.stdout + done.stderr
        assert int(count) >= 15
