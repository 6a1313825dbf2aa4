"""Configs for the tools our engines are deployed into (DeepStream)."""
