"""`flaxsent train`: the model card's recipe (optax), the packed step, the loop and its log."""
