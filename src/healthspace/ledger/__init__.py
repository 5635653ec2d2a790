"""Tamper-evident audit ledger: hash-chained entries, signed RFC 6962 Merkle checkpoints, verify."""
