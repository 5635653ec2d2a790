"""healthspace: a trusted health data space — data stays on premises, vetted computations move."""

__version__ = "0.1.0"
