"""`effdet-rt demo`: the whole flow on real (or synthetic) data, ending in one comparison table."""
