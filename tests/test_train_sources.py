"""Fine-tuning's other sources (issue 24): unlabelled images for the batch-norm statistics and
rehearsal of the base model's data."""

import numpy as np
import pytest
import torch

from napari_unet.core.models.network import UNet, UNetConfig
from napari_unet.core.models.registry import ModelDescription
from napari_unet.core.train.loop import train
from napari_unet.core.train.targets import IGNORE_INDEX
from napari_unet.core.train.training_data import TrainingData, rehearsal_patches

TINY = {"depth": 2, "base_channels": 4, "norm": "batch"}


def discs(size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of four bright discs and their instance mask."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint16)
    for label, (y, x) in enumerate([(12, 12), (12, 36), (36, 12), (36, 36)], start=1):
        mask[(yy - y) ** 2 + (xx - x) ** 2 < 40] = label
    noise = np.random.default_rng(seed).normal(0, 10, mask.shape)
    return (mask > 0) * 200.0 + noise, mask


def data(**sources) -> TrainingData:
    architecture = UNetConfig(out_channels=3, depth=2, base_channels=4)
    description = ModelDescription(
        name="m",
        architecture=architecture,
        output_kind="instances",
        class_names=["background", "interior", "boundary"],
    )
    empty = np.zeros((48, 48), np.uint16)  # a labelled image of background only
    return TrainingData.build(
        ([discs()[0]], [empty]),
        ([], []),
        description,
        UNet(architecture),
        target="instances",
        sparse=False,
        weight_map=True,
        augmenter=None,
        patch_shape=32,
        batch_size=8,
        steps_per_epoch=1,
        **sources,
    )


def test_rehearsal_fills_its_share_of_each_training_batch_and_never_the_statistics():
    image, mask = discs(seed=1)
    prepared = data(rehearsal=([image], [mask]), rehearsal_share=0.25)
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = prepared.draw(rng)
        has_objects = [bool((sample.target == 1).any()) for sample in batch]
        assert has_objects == [False] * 6 + [True] * 2  # the labelled image has none
        assert not any((s.target == 1).any() for s in prepared.draw(rng, statistics=True))


def test_unlabelled_images_join_the_statistics_only():
    prepared = data(unlabelled=[discs(seed=2)[0], discs(seed=3)[0]])
    rng = np.random.default_rng(0)
    unlabelled = [(s.target == IGNORE_INDEX).all() for _ in range(5) for s in prepared.draw(rng)]
    assert not any(unlabelled)
    statistics = [
        (s.target == IGNORE_INDEX).all() for _ in range(5) for s in prepared.draw(rng, True)
    ]
    assert 0 < sum(statistics) < len(statistics)  # both kinds of image, drawn at random


@pytest.mark.parametrize("share", [0.0, 1.0, -0.5])
def test_the_rehearsal_share_is_a_fraction_of_the_batch(share):
    with pytest.raises(ValueError, match="rehearsal_share"):
        rehearsal_patches(share, 8)
    assert rehearsal_patches(0.1, 4) == 1 and rehearsal_patches(0.9, 4) == 3


def first_statistics(model) -> torch.Tensor:
    return next(m for m in model.network.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_unlabelled_images_set_the_batch_norm_statistics_of_the_result():
    image, mask = discs()
    base = train([image], [mask], architecture=TINY, epochs=0, val_fraction=0, name="base")
    flat = [np.full((48, 48), 7.0) for _ in range(6)]  # blank fields: nothing varies

    def tuned(**extra):
        return train(
            [image], [mask], base_model=base, epochs=1, steps_per_epoch=2, batch_size=4, **extra
        )

    plain = first_statistics(tuned()).running_var
    with_unlabelled = first_statistics(tuned(unlabelled_images=flat)).running_var
    # six of the seven images are blank: the first layer's outputs vary far less over them
    assert with_unlabelled.mean() < 0.5 * plain.mean()
    with pytest.raises(ValueError, match="average_weights"):
        tuned(unlabelled_images=flat, average_weights=0)


def test_the_cli_fine_tunes_with_a_folder_of_unlabelled_images(tmp_path, capsys):
    import tifffile

    from napari_unet.cli import main
    from napari_unet.core.models.registry import load_model, save_model
    from tiny_models import make_model

    for folder in ("images", "masks", "unlabelled", "empty"):
        (tmp_path / folder).mkdir()
    image, mask = discs()
    tifffile.imwrite(tmp_path / "images" / "a.tif", image.astype(np.float32))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", mask)
    tifffile.imwrite(tmp_path / "unlabelled" / "b.tif", discs(seed=5)[0].astype(np.float32))
    base = save_model(make_model(output_kind="instances"), tmp_path / "base")
    command = [
        "train",
        *("--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks")),
        *("--from", str(base), "--minutes", "0.02", "--patch", "32", "--batch-size", "2"),
    ]
    tuned = tmp_path / "tuned"
    assert main([*command, "--out", str(tuned), "--unlabelled", str(tmp_path / "unlabelled")]) == 0
    assert load_model(tuned).description.provenance["fine_tuned_from"] == "tiny-2d-same"
    empty = ["--out", str(tmp_path / "other"), "--unlabelled", str(tmp_path / "empty")]
    assert main([*command, *empty]) != 0
    assert "no TIFF images" in capsys.readouterr().err
