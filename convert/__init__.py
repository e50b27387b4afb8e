"""PyTorch <-> Flax checkpoint conversion for DistilBERT (installed as `flaxsent.convert`)."""
