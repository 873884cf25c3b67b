"""Figures (matplotlib, Agg backend); every file is written atomically."""
from .figures import (
    heatmap,
    image_grid,
    save_figure,
    save_image_grid,
    scatter_2d,
    training_curves,
)

__all__ = ["heatmap", "image_grid", "save_figure", "save_image_grid", "scatter_2d", "training_curves"]
