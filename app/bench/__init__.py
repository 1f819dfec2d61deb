"""Benchmarks and the data they are judged on."""
