"""Runnable examples: ``python -m caviar.examples.moons``."""
