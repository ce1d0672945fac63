"""Benchmarks whose numbers go in the README and closing notes (never timed assertions)."""
