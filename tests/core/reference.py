"""A NumPy float32 reference of the fractal core's arithmetic, written from the contract
(`../shared/reference/fractal-core.md`), independent of the Rust code."""

from __future__ import annotations

import numpy as np

F = np.float32
CHANNELS = {"red": 0, "green": 1, "blue": 2}


def iteration_counts(width: int, height: int, c: str = "-0.4,0.6", max_iter: int = 255) -> np.ndarray:
    """(height, width) uint8 counts. Every operation on float32, rounded in the contract's order."""
    re_text, im_text = c.split(",")
    cr, ci = F(re_text), F(im_text)  # the nearest float32 to the decimal
    s = F(3.0) / F(min(width, height))
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    zr = ((xs + F(0.5)) - F(width) * F(0.5)) * s
    zi = ((ys + F(0.5)) - F(height) * F(0.5)) * s
    zr, zi = np.meshgrid(zr, zi)
    n = np.zeros((height, width), dtype=np.int32)
    active = np.ones((height, width), dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(max_iter):
            active &= (zr * zr + zi * zi) <= F(4.0)
            if not active.any():
                break
            t = (zr * zr - zi * zi) + cr
            new_zi = (F(2.0) * zr) * zi + ci
            zr = np.where(active, t, zr).astype(np.float32)
            zi = np.where(active, new_zi, zi).astype(np.float32)
            n += active
    return n.astype(np.uint8)


def expected_pixels(pixels: np.ndarray, channel: str = "green", c: str = "-0.4,0.6", max_iter: int = 255) -> np.ndarray:
    """The input (H, W, 3 or 4) with the chosen channel replaced by the count; the rest kept."""
    out = pixels.copy()
    out[:, :, CHANNELS[channel]] = iteration_counts(pixels.shape[1], pixels.shape[0], c, max_iter)
    return out
