"""Batched inference: images read and preprocessed on background threads while the engine runs."""
