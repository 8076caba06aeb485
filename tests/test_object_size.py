from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.transform import resize

from napari_unet._napari.sample_data import SAMPLES_DIR
from napari_unet.cli import main
from napari_unet.core.io.images import read_image
from napari_unet.core.metrics import instance_scores
from napari_unet.core.models.registry import save_model
from napari_unet.core.predict.object_size import (
    ResampledArray,
    nearest_back,
    predict_at_object_size,
    rescale_factor,
)
from napari_unet.core.predict.predictor import Predictor, segment
from tiny_models import make_model

DSB_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "val"
NUCLEI_SAMPLE_ID = "e7a3a7c99483c243742b6cfa74e81cd48f126dcef004016ad0151df6c16a6243"


def test_resampled_view_is_bilinear_and_reads_agree_where_they_overlap(rng) -> None:
    image = rng.random((2, 37, 53)).astype(np.float32)
    view = ResampledArray(image, {1: 2.5, 2: 0.6})
    assert view.shape == (2, 92, 32)
    whole = view[:, :, :]
    expected = resize(image, view.shape, order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    np.testing.assert_array_equal(view[1, 10:40, 5:20], whole[1, 10:40, 5:20])
    np.testing.assert_array_equal(view[:, ::7, ::3], whole[:, ::7, ::3])


def test_labels_come_back_by_nearest_neighbour_with_their_values() -> None:
    labels = np.zeros((60, 90), np.uint16)
    labels[10:40, 30:60] = 7
    back = nearest_back(labels, {0: 20, 1: 30})
    assert back.shape == (20, 30)
    assert set(np.unique(back)) == {0, 7}
    assert (back == 7).sum() == 10 * 10


def test_diameter_needs_a_model_that_states_its_object_size() -> None:
    description = make_model().description
    with pytest.raises(ValueError, match="does not state the object size"):
        rescale_factor(10, description)
    description.object_diameter_px = 20.0
    assert rescale_factor(10, description) == 2.0
    with pytest.raises(ValueError, match="positive number"):
        rescale_factor(0, description)


def test_prediction_at_object_size_returns_the_image_grid(blobs) -> None:
    model = make_model(output_kind="instances")
    model.description.object_diameter_px = 20.0
    predictor = Predictor(model, device="cpu")
    labels = predict_at_object_size(predictor, blobs, None, 10.0, output="semantic")
    assert labels.shape == blobs.shape
    np.testing.assert_array_equal(segment(blobs, model, diameter=10.0, output="semantic"), labels)
    out = np.zeros((3, *blobs.shape), np.float32)
    probabilities = predict_at_object_size(predictor, blobs, "YX", 40.0, "probabilities", out)
    assert probabilities is out
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)


def test_cli_diameter_writes_labels_on_the_input_grid(blobs, tmp_path, capsys) -> None:
    model = make_model(output_kind="instances")
    model.description.object_diameter_px = 20.0
    folder = save_model(model, tmp_path / "sized")
    tifffile.imwrite(tmp_path / "blobs.tif", blobs)
    target = tmp_path / "labels.tif"
    arguments = ["predict", str(tmp_path / "blobs.tif"), "-o", str(target), "--quiet"]
    assert main([*arguments, "--model", str(folder), "--diameter", "30"]) == 0
    assert tifffile.imread(target).shape == blobs.shape
    assert main([*arguments, "--model", "em-membranes", "--diameter", "30", "--overwrite"]) == 1
    assert "does not state the object size" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_nuclei_sample_rescaled_keeps_its_ap_with_a_diameter(scale, nuclei_sample) -> None:
    image, truth, diameter, predictor, unscaled = nuclei_sample
    shape = (round(image.shape[0] * scale), round(image.shape[1] * scale))
    scaled = resize(image, shape, order=1, preserve_range=True, anti_aliasing=False)
    scaled_truth = resize(truth, shape, order=0, preserve_range=True, anti_aliasing=False)
    labels = predictor.predict(scaled, axes="YX", diameter=diameter * scale)
    assert labels.shape == shape
    ap = instance_scores(scaled_truth.astype(np.int32), labels)["ap50"]
    assert abs(ap - unscaled) <= 0.05, (ap, unscaled)


@pytest.fixture(scope="module")
def nuclei_sample():
    """The bundled nuclei sample, its ground truth (when the data are here), the nuclei model."""
    masks = DSB_VAL / "masks" / f"{NUCLEI_SAMPLE_ID}.tif"
    if not masks.is_file():
        pytest.skip(f"ground truth of the nuclei sample not found at {masks}")
    image = read_image(SAMPLES_DIR / "nuclei.tif").data.astype(np.float32)
    truth = tifffile.imread(masks)[: image.shape[0], : image.shape[1]].astype(np.int32)
    areas = np.bincount(truth.ravel())[1:]
    diameter = float(np.median(2 * np.sqrt(areas[areas > 0] / np.pi)))
    predictor = Predictor("nuclei", device="cpu")
    unscaled = instance_scores(truth, predictor.predict(image, axes="YX"))["ap50"]
    return image, truth, diameter, predictor, unscaled
