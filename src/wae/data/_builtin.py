"""Imports every built-in data-set module, which registers it."""
from . import celeba, custom, mnist, svhn, synthetic  # noqa: F401
