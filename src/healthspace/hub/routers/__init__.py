"""hub/routers package."""
