"""Kernel builds at any commit, cached; the demo history."""
