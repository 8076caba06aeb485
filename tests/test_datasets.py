import numpy as np
import pytest
import tifffile

from napari_unet.core.datasets import LabelledImage, PatchSampler, prepare_image, read_pairs

PERCENTILE = {"kind": "percentile", "low": 1.0, "high": 99.8}


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
    prepared = prepare_image(rgb, 2, 1, {"kind": "none"})
    assert prepared.shape == (1, 8, 8)
    np.testing.assert_allclose(prepared[0, 0], np.arange(8) * 10)


def test_dark_background_inverts_only_mostly_bright_images():
    stained = np.full((16, 16), 220.0)
    stained[4:8, 4:8] = 40  # a dark nucleus on a bright background
    settings = {**PERCENTILE, "dark_background": True}
    flipped = prepare_image(stained, 2, 1, settings)[0]
    assert flipped[5, 5] > 0.9 and flipped[0, 0] < 0.1
    fluorescence = 260 - stained  # a bright nucleus on a dark background
    kept = prepare_image(fluorescence, 2, 1, settings)[0]
    np.testing.assert_allclose(kept, flipped, atol=1e-5)


def test_patches_are_centred_on_rare_foreground_often():
    mask = np.zeros((200, 200), dtype=np.uint16)
    mask[100:104, 100:104] = 1  # 16 of 40,000 pixels
    item = LabelledImage.build(
        np.zeros((1, 200, 200), np.float32), mask, "instances", False, False, 3
    )
    sampler = PatchSampler([item], (32, 32), foreground_fraction=0.5)
    rng = np.random.default_rng(0)
    hits = sum((sampler.sample(rng)[1] > 0).any() for _ in range(200))
    assert hits > 80  # uniform placement would hit it about 3 % of the time
