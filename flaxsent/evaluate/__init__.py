"""`flaxsent eval`: labelled files and the model card's metrics."""
