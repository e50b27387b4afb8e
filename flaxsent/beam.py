"""The public import path of the Beam handler: `from flaxsent.beam import FlaxsentModelHandler`."""

from flaxsent.integrations.beam import FlaxsentModelHandler

__all__ = ["FlaxsentModelHandler"]
