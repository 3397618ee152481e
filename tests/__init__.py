"""The test suite (a package, so tests.helpers is importable by the benchmarks too)."""
