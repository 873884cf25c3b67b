"""wae — generative auto-encoders trained with optimal transport.

WAE-MMD / WAE-GAN (Tolstikhin et al.), GM-WAE (Gaujac, Feige & Barber), StackedWAE (Gaujac et al.) and GMVAE
(Dilokthanakul et al.) as one library: priors, divergences, networks, models, data, a Lightning training engine,
evaluation, plots and one-command paper reproductions.
"""
from .errors import ConfigError, DataError, TrainingError, WAEError

__version__ = "0.1.0"
__all__ = ["load", "create_model", "WAEError", "ConfigError", "DataError", "TrainingError", "__version__"]


def load(run_dir, device="cpu"):
    """The trained model of a run directory (safetensors + YAML; nothing is unpickled)."""
    from .io import load_model

    return load_model(run_dir, device)


def create_model(name, data_shape, config=None, **overrides):
    from .models.registry import create_model as _create

    return _create(name, data_shape, config, **overrides)
