"""Bisection: a pure engine over a repository seam and a tester seam."""
