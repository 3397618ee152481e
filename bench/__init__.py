"""Benchmarks (a package: run the scripts from the checkout with PYTHONPATH=.)."""
