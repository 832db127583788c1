"""Benchmarks: our provisioning path beside the naive per-user script, on the local sandbox."""
