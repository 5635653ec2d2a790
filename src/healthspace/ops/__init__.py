"""Operating a data space: backups of hub and node state, and their verified restore."""
