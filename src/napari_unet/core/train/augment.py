"""Data augmentation applied identically to an image patch, its target and its loss weights.

U-Net learns from few images because augmentation teaches it the invariances of the data:
orientation (flips and 90-degree rotations), tissue deformation (the paper's elastic
deformation), object size (zoom) and acquisition (intensity scale, shift, gamma and noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.train.robustness import (
    coarser_pixels,
    gaussian_blur,
    log_uniform,
    shot_and_read_noise,
)


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

    The defaults are those of fine-tuning and of the built-in models' first recipes;
    :meth:`robust` adds the acquisition changes of :mod:`~napari_unet.core.train.robustness`
    and copy-paste, for base models meant to work on images of kinds they never saw.

    Parameters
    ----------
    elastic_probability
        Chance per patch of the elastic deformation (the costliest transform).
    elastic_grid, elastic_sigma
        Coarse grid points per axis and the std of their displacements in pixels (paper: 3, 10).
    zoom_range, zoom_probability
        Magnify by a factor drawn log-uniformly from ``[1 / zoom_range, zoom_range]`` with this
        chance per patch (``zoom_range`` 1: never). Zoom and deformation share one resampling.
    gamma_range, contrast_range
        Gamma ``exp(U(-gamma_range, gamma_range))`` and contrast factor drawn from
        ``contrast_range``, with ``intensity``.
    blur_probability, blur_sigma
        Chance of a Gaussian blur whose sigma (pixels) is drawn from ``blur_sigma``.
    coarse_probability, coarse_factor
        Chance of sampling the patch at pixels larger by a factor drawn from ``coarse_factor``
        and back (a lower-resolution camera or objective).
    shot_noise_probability, photons, read_noise
        Chance of photon noise at a count per unit intensity drawn log-uniformly from
        ``photons``, plus Gaussian read noise of std up to ``read_noise``.
    stain_variants, stain_scale, stain_shift
        RGB training images are also seen under this many other stainings (hematoxylin,
        eosin and DAB amounts varied by these; see
        :func:`~napari_unet.core.train.robustness.stain_jitter`), made when the data is
        prepared since normalisation turns colour into the model's channels.
    paste_probability, paste_count
        Chance that up to ``paste_count`` objects of the batch's other patches are pasted on
        a patch's background (instance training only; :mod:`~napari_unet.core.train.copy_paste`).
    """

    flips: bool = True
    elastic_probability: float = 0.5
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    intensity: bool = True
    noise_probability: float = 0.3
    zoom_range: float = 1.0
    zoom_probability: float = 0.5
    gamma_range: float = 0.3
    contrast_range: tuple[float, float] = (0.8, 1.2)
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    coarse_probability: float = 0.0
    coarse_factor: tuple[float, float] = (1.5, 3.0)
    shot_noise_probability: float = 0.0
    photons: tuple[float, float] = (5.0, 100.0)
    read_noise: float = 0.03
    stain_variants: int = 0
    stain_scale: float = 0.25
    stain_shift: float = 0.03
    paste_probability: float = 0.0
    paste_count: int = 6

    def __post_init__(self) -> None:
        chances = {k: v for k, v in vars(self).items() if k.endswith("_probability")}
        wrong = [f"{k}={v}" for k, v in chances.items() if not 0.0 <= v <= 1.0]
        ranges = {"blur_sigma": self.blur_sigma, "coarse_factor": self.coarse_factor}
        ranges |= {"photons": self.photons, "contrast_range": self.contrast_range}
        wrong += [f"{k}={v}" for k, v in ranges.items() if not 0.0 < v[0] <= v[1]]
        if self.zoom_range < 1.0 or self.coarse_factor[0] < 1.0:
            wrong.append(f"zoom_range={self.zoom_range}, coarse_factor={self.coarse_factor}")
        if wrong:
            raise ValueError(
                "Augmenter: chances lie in 0-1, ranges are (low, high) with 0 < low <= high, "
                f"zoom and coarse factors are at least 1; got {', '.join(wrong)}"
            )

    @classmethod
    def robust(cls, **changes: Any) -> Augmenter:
        """Return the base-training preset (issue 24; docs/training.md), with ``changes``.

        It adds 0.5-2x zoom, wider gamma and contrast, blur, coarser pixels, photon noise,
        stain variants and copy-paste to the defaults.
        """
        preset: dict[str, Any] = {
            "zoom_range": 2.0,
            "gamma_range": 0.6,
            "contrast_range": (0.6, 1.5),
            "blur_probability": 0.2,
            "coarse_probability": 0.2,
            "shot_noise_probability": 0.2,
            "stain_variants": 4,
            "paste_probability": 0.3,
        }
        return cls(**{**preset, **changes})

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Return an augmented copy of ``sample``."""
        if self.flips:
            sample = random_flip_rotate(sample, rng)
        sample = self._geometry(sample, rng)
        image = self._optics(sample.image, rng)
        if self.intensity:
            image = random_intensity(
                image, rng, self.noise_probability, self.gamma_range, self.contrast_range
            )
        if self.shot_noise_probability and rng.random() < self.shot_noise_probability:
            photons = log_uniform(rng, *self.photons)
            image = shot_and_read_noise(image, rng, photons, rng.uniform(0.0, self.read_noise))
        return sample._replace(
            image=np.ascontiguousarray(image), target=np.ascontiguousarray(sample.target)
        )

    def _geometry(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Zoom and elastic deformation, in one resampling of every array."""
        elastic = rng.random() < self.elastic_probability
        zoom = self.zoom_range > 1 and rng.random() < self.zoom_probability
        if not (elastic or zoom):
            return sample
        coordinates = pixel_coordinates(sample.target.shape)
        if zoom:
            zoom_about_centre(coordinates, log_uniform(rng, 1 / self.zoom_range, self.zoom_range))
        if elastic:
            add_elastic_field(coordinates, rng, self.elastic_grid, self.elastic_sigma)
        return resample(sample, coordinates)

    def _optics(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Blur and coarser pixels (each only when its chance is set)."""
        if self.blur_probability and rng.random() < self.blur_probability:
            image = gaussian_blur(image, rng.uniform(*self.blur_sigma))
        if self.coarse_probability and rng.random() < self.coarse_probability:
            image = coarser_pixels(image, rng.uniform(*self.coarse_factor))
        return image


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
    image: np.ndarray,
    rng: np.random.Generator,
    noise_probability: float = 0.3,
    gamma_range: float = 0.3,
    contrast_range: tuple[float, float] = (0.8, 1.2),
) -> np.ndarray:
    """Random gamma, contrast scale, brightness shift and Gaussian noise on a normalised image."""
    low, high = float(image.min()), float(image.max())
    if high > low:
        unit = (image - low) / (high - low)
        image = low + (high - low) * unit ** np.exp(rng.uniform(-gamma_range, gamma_range))
    image = image * rng.uniform(*contrast_range) + rng.uniform(-0.1, 0.1)
    if rng.random() < noise_probability:
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.05), size=image.shape)
    return image.astype(np.float32)
