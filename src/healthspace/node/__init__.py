"""The node agent a data holder runs: polls the hub, runs vetted analyses on its own store."""
