"""Stain separation: the hematoxylin (nuclear) stain of a bright-field RGB image.

In H&E and similar stained tissue, the nuclei are the hematoxylin. Colour deconvolution
(Ruifrok & Johnston 2001, as in scikit-image's ``rgb2hed``) turns the image into one channel
where nuclei are bright on dark, which is what a nuclei model trained on fluorescence knows;
averaging the colours instead mixes the nuclei with the pink eosin of everything else.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2hed


def hematoxylin(rgb: np.ndarray, channel_axis: int) -> np.ndarray:
    """Return the hematoxylin density (float32, channel axis kept with length 1).

    ``rgb`` holds red, green and blue on ``channel_axis`` (a 4th, alpha, channel is ignored).
    Integer images are read over their dtype's range; float images must lie in 0-1, since a
    per-tile rescale would differ from tile to tile.
    """
    colours = np.moveaxis(rgb, channel_axis, -1)[..., :3]
    if colours.dtype.kind == "f" and colours.size and float(colours.max()) > 1.0:
        raise ValueError(
            "hematoxylin input needs an 8- or 16-bit RGB image or floats in 0-1; this float "
            f"image reaches {float(colours.max()):g} (divide it by its maximum first)"
        )
    if colours.dtype.kind == "b":
        colours = colours.astype(np.uint8) * 255
    density = rgb2hed(colours, channel_axis=-1)[..., :1].astype(np.float32)
    return np.moveaxis(density, -1, channel_axis)
