"""Data augmentation applied identically to an image patch, its target and its loss weights.

U-Net learns from few images because augmentation teaches it the invariances of the data:
orientation (flips and 90-degree rotations), tissue deformation (the paper's elastic
deformation), object size (zoom) and acquisition (intensity scale, shift, gamma and noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi


class Sample(NamedTuple):
    """One training patch; every array but ``image`` (``(C, *spatial)``) is ``(*spatial)``."""

    image: np.ndarray
    target: np.ndarray
    """Class per pixel, ``IGNORE_INDEX`` where not annotated."""
    weights: np.ndarray | None = None
    """The loss weight per pixel (the paper's weight map), if used."""
    distance: np.ndarray | None = None
    """Distance models' target (:func:`~napari_unet.core.train.targets.center_distance`)."""


@dataclass(frozen=True)
class Augmenter:
    """Random transforms with the probabilities and ranges used for training.

    Parameters
    ----------
    elastic_probability
        Chance per patch of the elastic deformation (the costliest transform).
    elastic_grid, elastic_sigma
        Coarse grid points per axis and the std of their displacements in pixels (paper: 3, 10).
    zoom_range, zoom_probability
        Magnify by a factor drawn log-uniformly from ``[1 / zoom_range, zoom_range]`` with this
        chance per patch (``zoom_range`` 1: never). Zoom and deformation share one resampling.
    """

    flips: bool = True
    elastic_probability: float = 0.5
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    intensity: bool = True
    noise_probability: float = 0.3
    zoom_range: float = 1.0
    zoom_probability: float = 0.5

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Return an augmented copy of ``sample``."""
        if self.flips:
            sample = random_flip_rotate(sample, rng)
        elastic = rng.random() < self.elastic_probability
        zoom = self.zoom_range > 1 and rng.random() < self.zoom_probability
        if elastic or zoom:
            coordinates = pixel_coordinates(sample.target.shape)
            if zoom:
                spread = np.log(self.zoom_range)
                zoom_about_centre(coordinates, float(np.exp(rng.uniform(-spread, spread))))
            if elastic:
                add_elastic_field(coordinates, rng, self.elastic_grid, self.elastic_sigma)
            sample = resample(sample, coordinates)
        if self.intensity:
            sample = sample._replace(
                image=random_intensity(sample.image, rng, self.noise_probability)
            )
        return sample._replace(
            image=np.ascontiguousarray(sample.image), target=np.ascontiguousarray(sample.target)
        )


def random_flip_rotate(sample: Sample, rng: np.random.Generator) -> Sample:
    """Flip every spatial axis with probability 1/2 and rotate the last two by k * 90 degrees."""
    spatial = sample.target.ndim
    flips = [axis for axis in range(spatial) if rng.random() < 0.5]
    square = sample.target.shape[-1] == sample.target.shape[-2]
    turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))

    def apply(array: np.ndarray) -> np.ndarray:
        offset = array.ndim - spatial
        array = np.flip(array, [offset + axis for axis in flips]) if flips else array
        return np.rot90(array, turns, axes=(array.ndim - 2, array.ndim - 1))

    return Sample(*(None if array is None else apply(array) for array in sample))


def elastic_deform(
    sample: Sample, rng: np.random.Generator, grid: int = 3, sigma: float = 10.0
) -> Sample:
    """Warp smoothly as the paper does: random displacements on a coarse grid, interpolated.

    Displacement vectors are drawn from ``N(0, sigma^2)`` on a ``grid``-per-axis grid and
    upsampled to every pixel with cubic splines (see :func:`resample` for how each array is
    resampled).
    """
    coordinates = pixel_coordinates(sample.target.shape)
    add_elastic_field(coordinates, rng, grid, sigma)
    return resample(sample, coordinates)


def pixel_coordinates(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Where each output pixel samples the input: the identity, one array per axis."""
    return list(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))


def add_elastic_field(
    coordinates: list[np.ndarray], rng: np.random.Generator, grid: int, sigma: float
) -> None:
    """Displace ``coordinates`` in place by a smooth random field (the paper's deformation)."""
    shape = coordinates[0].shape
    for axis in range(len(shape)):
        coarse = rng.normal(0.0, sigma, size=(grid,) * len(shape))
        coordinates[axis] += ndi.zoom(coarse, [n / grid for n in shape], order=3, mode="nearest")


def zoom_about_centre(coordinates: list[np.ndarray], factor: float) -> None:
    """Magnify by ``factor`` (below 1 shrinks) about the patch centre, in place.

    Objects of one image all have about one size; zooming teaches the sizes of other images of
    the same kind. Shrinking samples beyond the patch, which the mirror border fills.
    """
    for axis, values in enumerate(coordinates):
        centre = (values.shape[axis] - 1) / 2
        values -= centre
        values /= factor
        values += centre


def resample(sample: Sample, coordinates: list[np.ndarray]) -> Sample:
    """Read every array of ``sample`` at ``coordinates``, mirroring at the border.

    The image is resampled with cubic splines, the weights and distances linearly and the
    labels by nearest neighbour, so labels stay crisp and aligned.
    """

    def warp(array: np.ndarray, order: int) -> np.ndarray:
        return ndi.map_coordinates(array, coordinates, order=order, mode="mirror").astype(
            array.dtype
        )

    return Sample(
        np.stack([warp(channel, 3) for channel in sample.image]),
        warp(sample.target, 0),
        *(None if array is None else warp(array, 1) for array in sample[2:]),
    )


def random_intensity(
    image: np.ndarray, rng: np.random.Generator, noise_probability: float = 0.3
) -> np.ndarray:
    """Random gamma, contrast scale, brightness shift and Gaussian noise on a normalised image."""
    low, high = float(image.min()), float(image.max())
    if high > low:
        unit = (image - low) / (high - low)
        image = low + (high - low) * unit ** np.exp(rng.uniform(-0.3, 0.3))
    image = image * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
    if rng.random() < noise_probability:
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.05), size=image.shape)
    return image.astype(np.float32)
