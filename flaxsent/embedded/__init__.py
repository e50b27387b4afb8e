"""The embedded default: the full-size architecture, seeded weights, a generated corpus."""
