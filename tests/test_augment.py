import numpy as np
import pytest

from napari_unet.core.train.augment import (
    Augmenter,
    Sample,
    elastic_deform,
    pixel_coordinates,
    random_flip_rotate,
    random_intensity,
    resample,
    zoom_about_centre,
)


def blobs(size: int = 64) -> np.ndarray:
    labels = np.zeros((size, size), dtype=np.int16)
    labels[10:30, 12:25] = 1
    labels[35:55, 30:50] = 2
    return labels


def test_elastic_deformation_keeps_labels_aligned_with_the_image():
    labels = blobs()
    image = (labels > 0).astype(np.float32)[np.newaxis]
    warped_image, warped_labels, warped_weights, warped_distance = elastic_deform(
        Sample(image, labels, labels.astype(np.float32), labels * 0.5),
        np.random.default_rng(1),
        grid=3,
        sigma=10,
    )
    assert not np.array_equal(warped_labels, labels)  # it did move
    agree = (warped_image[0] > 0.5) == (warped_labels > 0)
    assert agree.mean() > 0.98
    assert set(np.unique(warped_labels)) <= {0, 1, 2}  # nearest neighbour: no new labels
    assert np.abs(warped_weights - warped_labels).mean() < 0.05
    assert np.abs(warped_distance - warped_labels * 0.5).mean() < 0.03  # distances move too


def test_zoom_magnifies_objects_and_keeps_labels_aligned():
    labels = np.zeros((64, 64), dtype=np.int16)
    labels[24:40, 24:40] = 1
    image = labels.astype(np.float32)[np.newaxis]
    coordinates = pixel_coordinates(labels.shape)
    zoom_about_centre(coordinates, 1.5)
    zoomed = resample(Sample(image, labels), coordinates)
    assert (zoomed.target == 1).sum() / (labels == 1).sum() == pytest.approx(1.5**2, rel=0.1)
    assert ((zoomed.image[0] > 0.5) == (zoomed.target > 0)).mean() > 0.99
    coordinates = pixel_coordinates(labels.shape)
    zoom_about_centre(coordinates, 0.5)
    shrunk = resample(Sample(image, labels), coordinates)
    assert (shrunk.target == 1).sum() > 0 and shrunk.target.shape == labels.shape


def test_the_augmenter_zooms_only_when_given_a_range():
    labels = blobs()
    image = labels.astype(np.float32)[np.newaxis]
    plain = Augmenter(flips=False, elastic_probability=0, intensity=False)
    zooming = Augmenter(
        flips=False, elastic_probability=0, intensity=False, zoom_range=2, zoom_probability=1
    )
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(plain(Sample(image, labels), rng).target, labels)
    assert not np.array_equal(zooming(Sample(image, labels), rng).target, labels)


def test_flips_and_rotations_move_image_labels_and_weights_together():
    labels = blobs()
    image = labels.astype(np.float32)[np.newaxis]
    for seed in range(6):
        out_image, out_labels, out_weights, out_distance = random_flip_rotate(
            Sample(image, labels, labels * 2.0, labels * 3.0), np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(out_image[0], out_labels)
        np.testing.assert_array_equal(out_weights, out_labels * 2.0)
        np.testing.assert_array_equal(out_distance, out_labels * 3.0)


def test_intensity_changes_values_but_keeps_their_order():
    image = np.linspace(0, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    out = random_intensity(image, np.random.default_rng(0), noise_probability=0)
    assert not np.allclose(out, image)
    assert (np.diff(out.ravel()) > 0).all()


def test_augmenter_returns_contiguous_arrays_of_the_input_shape():
    labels = blobs()
    image = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    out = Augmenter(elastic_probability=1.0)(Sample(image, labels), np.random.default_rng(0))
    assert out.image.shape == image.shape and out.target.shape == labels.shape
    assert out.image.flags.c_contiguous and out.target.flags.c_contiguous
    assert out.weights is None and out.distance is None
