"""Governance: usage policies and the pure policy engine, consent tiers, approvals."""
