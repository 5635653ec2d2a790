"""Federated learning: models that train on a node's rows, evaluation sums, DP for updates.

Everything here is pure computation on numpy arrays (PyTorch, for the MLP, is imported only
when an MLP trains or scores); ``healthspace.analyses.fl_train`` wires it into the protocol.
"""
