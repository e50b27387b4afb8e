"""`flaxsent probe`: template and paired probes of how a score moves, and their reports."""
