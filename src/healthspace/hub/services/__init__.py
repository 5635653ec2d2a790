"""hub/services package."""
