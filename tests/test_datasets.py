import numpy as np
import pytest
import tifffile

from napari_unet.core.train.datasets import (
    LabelledImage,
    PatchSampler,
    read_pairs,
    semantic_class_count,
)
from tiny_models import make_model

PERCENTILE = {"kind": "percentile", "low": 1.0, "high": 99.8}
SEMANTIC = ("semantic", False, False)


def test_folders_pair_images_and_masks_by_file_name(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for name, value in (("b.tif", 2), ("a.tif", 1)):
        tifffile.imwrite(tmp_path / "images" / name, np.full((4, 4), value, np.uint8))
        tifffile.imwrite(tmp_path / "masks" / name, np.full((4, 4), value, np.uint8))
    images, masks = read_pairs(tmp_path / "images", tmp_path / "masks")
    assert [int(image[0, 0]) for image in images] == [1, 2]
    assert [int(mask[0, 0]) for mask in masks] == [1, 2]


def test_a_missing_mask_is_reported_by_name(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    tifffile.imwrite(tmp_path / "images" / "lonely.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"lonely\.tif"):
        read_pairs(tmp_path / "images", tmp_path / "masks")


def test_colour_is_averaged_to_gray_for_a_one_channel_model():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(8) * 30
    model = make_model()
    model.description.normalization = {"kind": "none"}
    item = LabelledImage.build(rgb, np.zeros((8, 8), np.uint8), model.description, *SEMANTIC)
    assert item.image.shape == (1, 8, 8) and item.axes == "YXC"
    np.testing.assert_allclose(item.image[0, 0], np.arange(8) * 10)


def test_dark_background_inverts_only_mostly_bright_images():
    stained = np.full((16, 16), 220.0)
    stained[4:8, 4:8] = 40  # a dark nucleus on a bright background
    model = make_model()
    model.description.normalization = {**PERCENTILE, "dark_background": True}
    mask = np.zeros((16, 16), np.uint8)
    flipped = LabelledImage.build(stained, mask, model.description, *SEMANTIC).image[0]
    assert flipped[5, 5] > 0.9 and flipped[0, 0] < 0.1
    fluorescence = 260 - stained  # a bright nucleus on a dark background
    kept = LabelledImage.build(fluorescence, mask, model.description, *SEMANTIC).image[0]
    np.testing.assert_allclose(kept, flipped, atol=1e-5)


def test_patches_are_centred_on_rare_foreground_often():
    mask = np.zeros((200, 200), dtype=np.uint16)
    mask[100:104, 100:104] = 1  # 16 of 40,000 pixels
    model = make_model(output_kind="instances")
    item = LabelledImage.build(
        np.zeros((200, 200), np.float32), mask, model.description, "instances", False, False
    )
    sampler = PatchSampler([item], (32, 32), foreground_fraction=0.5)
    rng = np.random.default_rng(0)
    hits = sum((sampler.sample(rng)[1] > 0).any() for _ in range(200))
    assert hits > 80  # uniform placement would hit it about 3 % of the time


def nan_image() -> np.ndarray:
    image = np.ones((8, 8), np.float32)
    image[2, 3] = np.nan
    return image


GOOD_MASK = np.zeros((8, 8), np.uint8)
BAD_PAIRS = {
    "NaN": (nan_image(), GOOD_MASK, r"image 1 contains 1 NaN or infinite values"),
    "infinity": (np.full((8, 8), np.inf), GOOD_MASK, "NaN or infinite"),
    "text": (np.full((8, 8), "a"), GOOD_MASK, "dtype <U1"),
    "float mask": (np.ones((8, 8)), np.zeros((8, 8), np.float32), "integer labels"),
    "negative mask": (
        np.ones((8, 8)),
        np.full((8, 8), -2, np.int16),
        r"negative values \(down to -2",
    ),
    "channels first": (np.ones((3, 8, 8)), GOOD_MASK, r"\(3, 8, 8\) but its mask has \(8, 8\)"),
    "smaller mask": (np.ones((8, 8)), np.zeros((8, 7), np.uint8), "spatial shape"),
    "masked": (np.ma.masked_less(np.eye(8), 1), GOOD_MASK, "image 1 .*is a masked array"),
}


@pytest.mark.parametrize(("image", "mask", "message"), BAD_PAIRS.values(), ids=BAD_PAIRS.keys())
def test_bad_training_data_is_refused_with_the_problem_named(image, mask, message):
    with pytest.raises(ValueError, match=message):
        read_pairs([np.ones((8, 8)), image], [GOOD_MASK, mask])


def test_a_bad_file_is_named_by_its_path(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    tifffile.imwrite(tmp_path / "images" / "holes.tif", nan_image())
    tifffile.imwrite(tmp_path / "masks" / "holes.tif", GOOD_MASK)
    with pytest.raises(ValueError, match=r"holes\.tif contains 1 NaN"):
        read_pairs(tmp_path / "images", tmp_path / "masks")


def test_masks_of_object_labels_are_not_taken_for_thousands_of_classes():
    objects = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    with pytest.raises(
        ValueError, match=r"4096 values \(0, 1, 2, 3, 4, 5, \.\.\., 4095\).*instances"
    ):
        semantic_class_count([objects], sparse=False)
    binary = np.where(objects % 2, 255, 0).astype(np.uint8)
    with pytest.raises(ValueError, match=r"2 values \(0, 255\).*divide it by 255"):
        semantic_class_count([binary], sparse=False)
    assert semantic_class_count([binary // 255], sparse=False) == 2
    assert semantic_class_count([binary // 255 * 3], sparse=True) == 3
