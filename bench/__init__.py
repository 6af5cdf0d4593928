"""Benchmarks that print tables; never part of the unit-test timing. See bench/README.md."""
