"""Benchmark harness: embedded corpus, parity, throughput and reports."""
