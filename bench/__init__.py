"""Benchmarks: each starts its own processes on loopback and prints figures beside a baseline."""
