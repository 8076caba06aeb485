import json

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiff_pairs(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for index in range(3):
        mask = np.zeros((32, 32), dtype=np.uint16)
        mask[4:14, 4:14], mask[18:28, 16:26] = 1, 2
        image = (mask > 0) * 200 + rng.integers(0, 40, mask.shape)
        tifffile.imwrite(tmp_path / "images" / f"{index}.tif", image.astype(np.uint8))
        tifffile.imwrite(tmp_path / "masks" / f"{index}.tif", mask)
    return tmp_path


def test_train_one_short_epoch_then_evaluate_and_predict_with_the_result(tiff_pairs, capsys):
    out = tiff_pairs / "model"
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    code = main(
        [
            "train",
            *folders,
            "--out",
            str(out),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--patch",
            "32",
        ]
    )
    assert code == 0 and (out / "model.json").is_file() and (out / "weights.safetensors").is_file()
    assert "saved model 'model'" in capsys.readouterr().out

    assert main(["evaluate", "--model", str(out), *folders, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["overall"]["n_images"] == 3 and 0 <= results["overall"]["ap50"] <= 1

    labels = tiff_pairs / "labels.tif"
    image = str(tiff_pairs / "images" / "0.tif")
    assert main(["predict", image, "--model", str(out), "-o", str(labels)]) == 0
    assert tifffile.imread(labels).shape == (32, 32)


def test_train_refuses_to_overwrite_an_existing_model(tiff_pairs, capsys):
    (tiff_pairs / "model").mkdir()
    (tiff_pairs / "model" / "model.json").write_text("{}")
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    assert main(["train", *folders, "--out", str(tiff_pairs / "model")]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_train_can_average_the_weights_of_the_last_epochs(tiff_pairs, capsys):
    out = tiff_pairs / "averaged"
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    settings = ["--epochs", "2", "--steps-per-epoch", "1", "--patch", "32", "--batch-size", "2"]
    assert main(["train", *folders, "--out", str(out), *settings, "--average-weights", "1"]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["metrics"]["validation"]["averaged_epochs"] == 2


def test_train_names_a_file_with_nan_and_exits_1_before_training(tiff_pairs, capsys):
    image = tifffile.imread(tiff_pairs / "images" / "1.tif").astype(np.float32)
    image[3, 3] = np.nan
    tifffile.imwrite(tiff_pairs / "images" / "1.tif", image)
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    assert main(["train", *folders, "--out", str(tiff_pairs / "model"), "--epochs", "1"]) == 1
    error = capsys.readouterr().err
    assert "1.tif contains 1 NaN or infinite values" in error and len(error.splitlines()) == 1
    assert not (tiff_pairs / "model").exists()


def test_semantic_training_on_object_labels_names_the_values(tiff_pairs, capsys):
    mask = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    tifffile.imwrite(tiff_pairs / "masks" / "0.tif", mask)
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    out = ["--out", str(tiff_pairs / "model"), "--target", "semantic"]
    assert main(["train", *folders, *out]) == 1
    assert "1024 values (0, 1, 2, 3, 4, 5, ..., 1023)" in capsys.readouterr().err


def test_fine_tune_for_a_few_seconds_into_a_distance_model(tiff_pairs, tmp_path, capsys):
    from napari_unet.core.models.registry import load_model, save_model
    from tiny_models import make_model

    base = save_model(make_model(output_kind="instances"), tmp_path / "base")
    out = tiff_pairs / "tuned"
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    settings = ["--minutes", "0.02", "--patch", "32", "--batch-size", "2"]
    command = ["train", *folders, "--from", str(base), "--out", str(out), *settings]
    assert main([*command, "--representation", "distance"]) == 0
    tuned = load_model(out)
    assert tuned.description.class_names[-1] == "distance"
    assert tuned.description.provenance["fine_tuned_from"] == "tiny-2d-same"
    assert "% done" in capsys.readouterr().err  # progress by share of the time budget


def test_a_fine_tune_prints_the_base_and_its_own_score_on_the_validation_images(
    tiff_pairs, tmp_path, capsys, monkeypatch
):
    from napari_unet.core.models.registry import USER_MODELS_ENV, load_model, save_model
    from tiny_models import make_model

    monkeypatch.setenv(USER_MODELS_ENV, str(tmp_path / "user"))
    base = save_model(make_model(output_kind="instances"), tmp_path / "base")
    out = tmp_path / "user" / "tuned"
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    held_out = [
        "--val-images",
        str(tiff_pairs / "images"),
        "--val-masks",
        str(tiff_pairs / "masks"),
    ]
    settings = ["--minutes", "0.05", "--patch", "32", "--batch-size", "2", "--from", str(base)]
    assert main(["train", *folders, *held_out, *settings, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    check = load_model(out).description.metrics["fine_tuning"]
    assert check["held_out"] == "3 validation images"
    assert 0 <= check["base_score"] <= 1 and 0 <= check["score"] <= 1
    line = (
        f"fine-tuning check: AP@0.5 on 3 validation images: tiny-2d-same "
        f"{check['base_score']:.3f}, fine-tuned {check['score']:.3f}"
    )
    assert line in printed.out
    assert ("WORSE" in printed.out) == (check["score"] < check["base_score"])
    for phase in ("scoring the base model", "re-estimating batch-norm statistics", "saving"):
        assert phase in printed.err  # the bar names the phases after the epochs
    assert main(["models"]) == 0  # the saved model's own description, not its base's
    listed = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("tuned"))
    assert "Fine-tuned from tiny-2d-same on 3 images, 6 objects" in listed
    assert f"fine-tuned {check['score']:.3f}" in listed


def test_val_images_need_their_masks(tiff_pairs, capsys):
    folders = ["--images", str(tiff_pairs / "images"), "--masks", str(tiff_pairs / "masks")]
    out = ["--out", str(tiff_pairs / "model"), "--val-images", str(tiff_pairs / "images")]
    assert main(["train", *folders, *out]) == 1
    assert "give --val-images and --val-masks together" in capsys.readouterr().err
