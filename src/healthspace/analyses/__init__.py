"""The vetted analysis catalogue: each analysis is a node-side ``local`` and a ``combine``."""
