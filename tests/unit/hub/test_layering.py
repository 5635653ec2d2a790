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


def test_hub_and_analyses_do_not_import_torch() -> None:
    """PyTorch is an optional extra: the hub combines federated learning with numpy only."""
    code = (
        "import sys, healthspace.hub.app, healthspace.analyses.registry as r; r.names();"
        "import healthspace.sim; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
