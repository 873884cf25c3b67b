"""The training engine (Lightning) wrapped thinly around the models."""
from .module import LitAutoEncoder
from .run import train

__all__ = ["LitAutoEncoder", "train"]
