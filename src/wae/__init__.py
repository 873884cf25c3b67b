"""wae — generative auto-encoders trained with optimal transport.

WAE-MMD / WAE-GAN (Tolstikhin et al.), GM-WAE (Gaujac, Feige & Barber), StackedWAE (Gaujac et al.) and GMVAE
(Dilokthanakul et al.) as one library: priors, divergences, networks, models, data, a Lightning training engine,
evaluation, plots and one-command paper reproductions.

The package root is the public facade (the top of the layer order in the README's Development section): importing
it registers the built-in models; ``wae.load``, ``wae.create_model`` and the errors are here.
"""
from . import models as _models  # noqa: F401  (registers the built-in models, so run configs can be typed by name)
from ._version import __version__
from .errors import ConfigError, DataError, TrainingError, WAEError
from .models.registry import create_model

__all__ = ["load", "create_model", "GMWAEClustering", "WAEError", "ConfigError", "DataError", "TrainingError",
           "__version__"]


def __getattr__(name):
    # wae.GMWAEClustering imports scikit-learn and the training engine: only when asked for, so `import wae` stays fast
    if name == "GMWAEClustering":
        from .estimator import GMWAEClustering

        return GMWAEClustering
    raise AttributeError(f"module 'wae' has no attribute {name!r}")


def load(run_dir, device="cpu"):
    """The trained model of a run directory (safetensors + YAML; nothing is unpickled)."""
    from .serialization import load_model

    return load_model(run_dir, device)
