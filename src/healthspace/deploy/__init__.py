"""Deployment: hub and node config files (TOML + environment), ``init`` of a service's files."""
