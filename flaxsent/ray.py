"""The public import path of the Ray Data predictor (`flaxsent.ray.FlaxsentPredictor`)."""

from flaxsent.integrations.ray import FlaxsentPredictor

__all__ = ["FlaxsentPredictor"]
