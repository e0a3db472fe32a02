"""Strategies: what each kind means to the registry (being built, one module per API group)."""
