"""Privacy technology applied on the node: disclosure control, DP, secure aggregation, PSI."""
