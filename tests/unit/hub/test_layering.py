"""The hub shares only core (and the vetted catalogues) with nodes and clients."""

from __future__ import annotations

import subprocess
import sys


def test_hub_never_imports_node_or_client() -> None:
    code = (
        "import sys, healthspace.hub.app, healthspace.hub.serve, healthspace.hub.bootstrap;"
        "print(sorted(m for m in sys.modules if m.startswith(('healthspace.node', "
        "'healthspace.client'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
