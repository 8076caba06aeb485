"""The robustness augmentation of issue 24: acquisition changes, stain variants, copy-paste."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.models.model_types import ModelDescription
from napari_unet.core.models.network import UNetConfig
from napari_unet.core.train.augment import Augmenter, Sample
from napari_unet.core.train.copy_paste import object_footprints, paste_objects
from napari_unet.core.train.datasets import LabelledImage
from napari_unet.core.train.robustness import (
    coarser_pixels,
    gaussian_blur,
    shot_and_read_noise,
    stain_jitter,
)
from napari_unet.core.train.targets import IGNORE_INDEX, center_distance, instance_target
from napari_unet.core.train.training_data import stained

ACQUISITION_ONLY = Augmenter(
    flips=False,
    elastic_probability=0.0,
    intensity=False,
    blur_probability=1.0,
    coarse_probability=1.0,
    shot_noise_probability=1.0,
)


def discs(size: int, centres: list[tuple[int, int]], radius: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), dtype=np.int32)
    for label, (y, x) in enumerate(centres, start=1):
        mask[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = label
    return mask


def instance_sample(mask: np.ndarray) -> Sample:
    target = instance_target(mask)
    image = (mask > 0).astype(np.float32)[np.newaxis] * 0.8 + 0.1
    return Sample(image, target, target * 1.5 + 1.0, center_distance(mask))


def high_frequency_energy(image: np.ndarray) -> float:
    return float((ndi.laplace(image[0].astype(np.float64)) ** 2).mean())


def test_acquisition_changes_touch_the_image_only():
    sample = instance_sample(discs(64, [(20, 20), (40, 44)]))
    out = ACQUISITION_ONLY(sample, np.random.default_rng(3))
    np.testing.assert_array_equal(out.target, sample.target)
    np.testing.assert_array_equal(out.weights, sample.weights)
    np.testing.assert_array_equal(out.distance, sample.distance)
    assert out.image.dtype == np.float32 and out.image.shape == sample.image.shape
    assert not np.allclose(out.image, sample.image)


def test_blur_and_coarser_pixels_remove_fine_detail_but_keep_the_mean():
    image = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    for degraded in (gaussian_blur(image, 1.5), coarser_pixels(image, 2.5)):
        assert degraded.shape == image.shape
        assert high_frequency_energy(degraded) < 0.2 * high_frequency_energy(image)
        assert degraded.mean() == pytest.approx(image.mean(), abs=0.02)


def test_coarser_pixels_keep_objects_in_place():
    mask = discs(64, [(32, 32)], radius=10)
    image = mask.astype(np.float32)[np.newaxis]
    coarse = coarser_pixels(image, 3.0)
    assert ((coarse[0] > 0.5) == (mask > 0)).mean() > 0.97


def test_photon_noise_grows_with_brightness():
    image = np.zeros((1, 64, 128), dtype=np.float32)
    image[:, :, 64:] = 1.0
    noisy = shot_and_read_noise(image, np.random.default_rng(0), photons=20, read_sigma=0.01)
    dark, bright = noisy[0, :, :64], noisy[0, :, 64:]
    assert bright.mean() == pytest.approx(1.0, abs=0.03)
    assert bright.std() == pytest.approx(np.sqrt(1 / 20), rel=0.15)  # Poisson: var = mean
    assert dark.std() < 0.2 * bright.std()


def test_stain_jitter_changes_colours_within_range_and_is_exact_at_zero():
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 250, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(stain_jitter(rgb, rng, 0.0, 0.0), rgb)
    jittered = stain_jitter(rgb, np.random.default_rng(1), 0.3, 0.05)
    assert jittered.dtype == np.uint8 and jittered.shape == rgb.shape
    assert np.abs(jittered.astype(int) - rgb).mean() > 2


def test_stain_variants_are_made_for_colour_images_and_each_image_keeps_its_share():
    description = ModelDescription(
        name="m",
        architecture=UNetConfig(in_channels=1, out_channels=4, depth=2, base_channels=4),
        class_names=["background", "interior", "boundary", "distance"],
        output_kind="instances",
    )
    mask = discs(32, [(16, 16)])
    rng = np.random.default_rng(0)
    pink, purple = np.array([230, 150, 200]), np.array([90, 40, 140])
    rgb = np.where((mask > 0)[..., None], purple, pink) * rng.uniform(0.7, 1.0, (32, 32, 1))
    rgb = rgb.astype(np.uint8)  # a purple nucleus in pink tissue, both textured
    colour = LabelledImage.build(rgb, mask, description, "instances", False, False)
    gray = LabelledImage.build(
        mask.astype(np.float32), mask, description, "instances", False, False
    )
    augmenter = Augmenter(stain_variants=3)
    variants = stained(colour, description, augmenter)
    assert len(variants) == 4 and len(stained(gray, description, augmenter)) == 4
    assert all(v.target is colour.target for v in variants)  # targets are shared, not copied
    assert len({v.image.tobytes() for v in variants}) == 4  # three other stainings


def test_copy_paste_adds_whole_objects_with_their_targets_on_free_background():
    receiver = instance_sample(discs(96, [(20, 20)]))
    receiver.target[70:, 70:] = IGNORE_INDEX  # not annotated: nothing may land here
    donor = instance_sample(discs(96, [(30, 30), (30, 60), (64, 40)], radius=7))
    out = paste_objects(receiver, [donor], np.random.default_rng(0), 3)
    before = ndi.label(receiver.target == 1)[1]
    after = ndi.label(out.target == 1)[1]
    assert after > before  # new objects, each its own connected interior
    pasted = (out.target != receiver.target) | (out.image != receiver.image)[0]
    assert not pasted[70:, 70:].any() and not pasted[receiver.target > 0].any()
    # every pasted object is a donor object, moved: same classes, distances and image
    for box, shape in object_footprints(out.target):
        if not pasted[box][shape].any():
            continue
        match = [
            b
            for b, s in object_footprints(donor.target)
            if s.shape == shape.shape
            and np.array_equal(s, shape)
            and np.array_equal(donor.distance[b][s], out.distance[box][shape])
        ]
        assert match
    # objects keep a background margin: pasted rims never touch another object
    rims = ndi.label(out.target > 0)[1]
    assert rims == after


def test_copy_paste_without_room_or_objects_changes_nothing():
    full = instance_sample(discs(32, [(16, 16)], radius=15))
    donor = instance_sample(discs(32, [(16, 16)]))
    out = paste_objects(full, [donor], np.random.default_rng(0), 4)
    np.testing.assert_array_equal(out.target, full.target)
    empty = instance_sample(np.zeros((32, 32), dtype=np.int32))
    assert paste_objects(donor, [empty], np.random.default_rng(0), 4) is donor


@pytest.mark.parametrize(
    "changes",
    [{"blur_probability": 1.5}, {"coarse_factor": (0.5, 2.0)}, {"photons": (10.0, 5.0)}],
)
def test_the_augmenter_refuses_impossible_settings(changes):
    with pytest.raises(ValueError, match="Augmenter"):
        Augmenter(**changes)


def test_the_robust_preset_keeps_labels_aligned_with_the_image():
    mask = discs(64, [(20, 20), (40, 44)], radius=8)
    sample = instance_sample(mask)
    for seed in range(5):
        out = Augmenter.robust(paste_probability=0.0)(sample, np.random.default_rng(seed))
        objects = out.target > 0
        if objects.any() and (~objects).any():
            # the nuclei are still where the labels say, whatever the photometric changes
            assert out.image[0][objects].mean() > out.image[0][~objects].mean()
