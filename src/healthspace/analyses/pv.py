"""Placeholder: filled in by its implementation."""
