"""hub/db package."""
