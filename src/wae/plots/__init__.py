"""Figures (matplotlib, Agg backend); every file is written atomically."""
from .figures import (
    MAX_GRID,
    heatmap,
    image_grid,
    save_figure,
    save_image_grid,
    save_reconstructions,
    scatter_2d,
    training_curves,
)

__all__ = ["MAX_GRID", "heatmap", "image_grid", "save_figure", "save_image_grid", "save_reconstructions", "scatter_2d",
           "training_curves"]
