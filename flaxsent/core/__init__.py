"""The model and its engine: config, model, tokenizer, checkpoints, plan, engine, Classifier.

Imports nothing of flaxsent but `errors` and `io`."""
