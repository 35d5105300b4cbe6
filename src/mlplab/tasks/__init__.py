"""Hydra entry points: thin wiring from configs to the science layer."""
