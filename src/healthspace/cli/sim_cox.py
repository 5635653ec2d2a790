"""Registered on ``healthspace sim`` (see cli/sim.py)."""
