"""Filter pruning (TAO's min-weight method) and the pruned architecture record carried by checkpoints."""
