"""Digits drawn the one way the dashboard and TensorBoard both show them: a mosaic of
28x28 tiles, black ink on white, on light red where the model is wrong."""

from __future__ import annotations

import numpy as np

DIGIT_SIDE = 28
CELL = DIGIT_SIDE + 2  # a tile and its 1-pixel border
WRONG_BACKGROUND = (1.0, 0.72, 0.72)


def ink(images) -> np.ndarray:
    """`images` (any shape holding 28x28 digits) as (n, 28, 28) ink in [0, 1], scaled by
    the batch's own range (so standardized inputs draw as well as pixels)."""
    images = np.asarray(images, dtype=np.float64).reshape(-1, DIGIT_SIDE, DIGIT_SIDE)
    if images.size == 0:
        return images
    low, high = images.min(), images.max()
    return (images - low) / max(high - low, 1e-12)


def digit_mosaic(images, wrong, columns: int) -> np.ndarray:
    """An RGB grid of digits (ink in [0, 1]), `columns` wide: black on white, or on light
    red where `wrong`."""
    rows = -(-len(images) // columns)
    mosaic = np.full((rows * CELL, columns * CELL, 3), 0.8)
    for position, (tile_ink, is_wrong) in enumerate(zip(images, wrong)):
        background = np.array(WRONG_BACKGROUND) if is_wrong else np.ones(3)
        row, column = divmod(position, columns)
        mosaic[row * CELL + 1:row * CELL + 1 + DIGIT_SIDE,
               column * CELL + 1:column * CELL + 1 + DIGIT_SIDE] = (
            background * (1.0 - tile_ink[..., None]))
    return mosaic


def tile_corner(position: int, columns: int) -> tuple[int, int]:
    """The (x, y) pixel of the top-left corner inside tile `position`, for its caption."""
    row, column = divmod(position, columns)
    return column * CELL + 2, row * CELL + 2
