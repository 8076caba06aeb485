import numpy as np

from napari_unet.core.augment import (
    Augmenter,
    elastic_deform,
    random_flip_rotate,
    random_intensity,
)


def blobs(size: int = 64) -> np.ndarray:
    labels = np.zeros((size, size), dtype=np.int16)
    labels[10:30, 12:25] = 1
    labels[35:55, 30:50] = 2
    return labels


def test_elastic_deformation_keeps_labels_aligned_with_the_image():
    labels = blobs()
    image = (labels > 0).astype(np.float32)[np.newaxis]
    warped_image, warped_labels, warped_weights = elastic_deform(
        (image, labels, labels.astype(np.float32)), np.random.default_rng(1), grid=3, sigma=10
    )
    assert not np.array_equal(warped_labels, labels)  # it did move
    agree = (warped_image[0] > 0.5) == (warped_labels > 0)
    assert agree.mean() > 0.98
    assert set(np.unique(warped_labels)) <= {0, 1, 2}  # nearest neighbour: no new labels
    assert np.abs(warped_weights - warped_labels).mean() < 0.05


def test_flips_and_rotations_move_image_labels_and_weights_together():
    labels = blobs()
    image = labels.astype(np.float32)[np.newaxis]
    for seed in range(6):
        out_image, out_labels, out_weights = random_flip_rotate(
            (image, labels, labels * 2.0), np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(out_image[0], out_labels)
        np.testing.assert_array_equal(out_weights, out_labels * 2.0)


def test_intensity_changes_values_but_keeps_their_order():
    image = np.linspace(0, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    out = random_intensity(image, np.random.default_rng(0), noise_probability=0)
    assert not np.allclose(out, image)
    assert (np.diff(out.ravel()) > 0).all()


def test_augmenter_returns_contiguous_arrays_of_the_input_shape():
    labels = blobs()
    image = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    out_image, out_labels, weights = Augmenter(elastic_probability=1.0)(
        (image, labels, None), np.random.default_rng(0)
    )
    assert out_image.shape == image.shape and out_labels.shape == labels.shape
    assert out_image.flags.c_contiguous and out_labels.flags.c_contiguous and weights is None
