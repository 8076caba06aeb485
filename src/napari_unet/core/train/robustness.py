"""Acquisition changes a model meets on images it never saw: optics, pixel size, noise, stain.

A network trained on one microscope's images learns that microscope's blur, sampling, noise
and colours along with the objects. Degrading training patches the way other acquisitions
differ (blur, coarser pixels, photon and camera noise, other stain mixtures) teaches it to
ignore them, as cellpose's and StarDist's training augmentation do. Everything here works on
one patch's image only: labels, weights and distance targets stay as they are.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb_from_hed


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """Draw a factor evenly on a log scale: halving is as likely as doubling."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur every channel of a ``(C, *spatial)`` image: a softer or defocused objective."""
    spatial = (0.0,) + (sigma,) * (image.ndim - 1)
    return ndi.gaussian_filter(image, spatial, mode="mirror").astype(np.float32)


def coarser_pixels(image: np.ndarray, factor: float) -> np.ndarray:
    """Sample ``image`` at ``factor`` times larger pixels, then back to its grid.

    Each coarse pixel integrates its area (a blur of about half its width first), as a camera
    with larger pixels would; the image keeps its shape and its objects their place.
    """
    smoothed = gaussian_blur(image, 0.5 * (factor - 1.0))
    shape = image.shape[1:]
    out = np.empty_like(image, dtype=np.float32)
    for index, channel in enumerate(smoothed):
        small = ndi.zoom(channel, 1.0 / factor, order=1, mode="grid-mirror", grid_mode=True)
        back = [n / m for n, m in zip(shape, small.shape, strict=True)]
        out[index] = ndi.zoom(small, back, order=1, mode="grid-mirror", grid_mode=True)
    return out


def shot_and_read_noise(
    image: np.ndarray, rng: np.random.Generator, photons: float, read_sigma: float
) -> np.ndarray:
    """Photon (Poisson) noise at ``photons`` counts per unit intensity, plus camera read noise.

    On a normalised image (background about 0, objects about 1), few photons make bright
    objects grainy while the background stays clean, unlike the even Gaussian noise of
    :func:`~napari_unet.core.train.augment.random_intensity`.
    """
    counts = rng.poisson(np.clip(image, 0.0, None) * photons)
    low = np.minimum(image, 0.0)  # values below 0 (under the 1st percentile) keep their offset
    noisy = low + counts / photons + rng.normal(0.0, read_sigma, size=image.shape)
    return noisy.astype(np.float32)


def stain_jitter(
    rgb: np.ndarray, rng: np.random.Generator, scale: float, shift: float
) -> np.ndarray:
    """Another staining of an RGB image (``*spatial, 3``): each stain's amount varied.

    Colour deconvolution (Ruifrok & Johnston's matrices, as in :mod:`skimage.color`) into
    hematoxylin, eosin and DAB optical densities, each scaled by ``1 + U(-scale, scale)`` and
    shifted by ``U(-shift, shift)``, then back to RGB in the image's dtype and range (Tellez et
    al. 2018's HED jitter). It runs on the image as given, before normalisation turns colour
    into the model's channels. Without change it returns the image (unlike ``rgb2hed``, whose
    clipping of negative densities is not undone by ``hed2rgb``).
    """
    integer = rgb.dtype.kind in "ui"
    top = float(np.iinfo(rgb.dtype).max) if integer else max(1.0, float(rgb.max()))
    density = -np.log(np.clip(rgb[..., :3].astype(np.float64) / top, 1e-6, 1.0))
    stains = density @ hed_from_rgb
    stains = stains * (1.0 + rng.uniform(-scale, scale, 3)) + rng.uniform(-shift, shift, 3)
    back = np.exp(-np.clip(stains @ rgb_from_hed, 0.0, None)) * top
    if integer:
        back = np.rint(back)
    return np.concatenate([back.astype(rgb.dtype), rgb[..., 3:]], axis=-1)
