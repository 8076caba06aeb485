"""Scenarios with the real built-in models and real data: export, bilevel masks, CLI outputs.

Export: ``napari-unet export <model> <model>.zip`` exactly as the README gives it (no
``--sample``), for both built-ins and for a saved, fine-tuned copy; the packages are then
checked with bioimage.io's own tools. ``em-membranes`` gets bioimageio.core's full
``test_model`` (both weight formats, the test output and six sizes/batches, about 16 s on 2
cores); ``nuclei`` (26 s) and the fine-tuned model get the format validation and the
reproduction of the test output through bioimageio.core's pipeline, the part of
``test_model`` that checks our preprocessing and weights (about 4 s).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.io.images import read_image
from napari_unet.core.models.registry import USER_MODELS_ENV, load_model, save_model

bioimageio_core = pytest.importorskip("bioimageio.core")


def _export_with_the_readme_command(name: str, package: Path) -> None:
    """``napari-unet export <name> <package>``: no sample, default authors and licence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nuclei's dark-background note
        assert main(["export", name, str(package)]) == 0
    assert package.stat().st_size > 1_000_000  # weights twice, test tensors, cover


def _reproduction_errors(package: Path) -> dict[str, float]:
    """Largest difference between bioimageio.core's output and the packaged test output.

    The same steps as ``test_model``'s "Reproduce test outputs from test inputs", per
    weight format: the declared preprocessing, the network, the declared postprocessing.
    """
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample, get_test_output_sample

    described = bioimageio_core.load_description(package)
    errors = {}
    for weight_format in ("torchscript", "pytorch_state_dict"):
        sample, expected = get_test_input_sample(described), get_test_output_sample(described)
        with create_prediction_pipeline(
            bioimageio_model=described, weight_format=weight_format
        ) as pipeline:
            pipeline.apply_preprocessing(sample)
            result = pipeline.predict_sample_without_blocking(
                sample,
                skip_preprocessing=True,
                skip_postprocessing=True,
                skip_input_padding=True,
                skip_output_cropping=True,
            )
            pipeline.apply_postprocessing(result)
        ((member, want),) = expected.members.items()
        got = result.members[member]
        assert got.tagged_shape == want.tagged_shape, weight_format
        errors[weight_format] = float(np.abs(got.data.values - want.data.values).max())
    return errors


def _test_input_shape(package: Path) -> tuple[int, ...]:
    with zipfile.ZipFile(package) as archive:
        return np.load(io.BytesIO(archive.read("test_input.npy"))).shape


def test_em_membranes_exports_with_no_sample_and_passes_bioimageio_test(tmp_path: Path) -> None:
    package = tmp_path / "em.zip"
    _export_with_the_readme_command("em-membranes", package)
    described = bioimageio_core.load_description(package)
    assert described.validation_summary.status == "valid-format"
    summary = bioimageio_core.test_model(package)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    reproduced = [d for d in summary.details if d.name.startswith("Reproduce test outputs")]
    assert len(reproduced) == 2  # both weight formats reproduce the test output


def test_nuclei_exports_with_no_sample_and_reproduces_its_test_output(tmp_path: Path) -> None:
    package = tmp_path / "nuclei.zip"
    _export_with_the_readme_command("nuclei", package)
    described = bioimageio_core.load_description(package)
    assert described.validation_summary.status == "valid-format"
    network = load_model("nuclei").network
    size = described.inputs[0].axes[-1].size
    assert (size.min, size.step) == (192, network.size_multiple)  # the README export's failure
    assert _test_input_shape(package) == (1, 1, 192, 208)  # was 160 x 192, under the minimum
    errors = _reproduction_errors(package)
    assert max(errors.values()) < 1e-4, errors  # float32 noise: 2.4e-6 when measured


def test_a_fine_tuned_model_exports_with_no_sample(tmp_path: Path, monkeypatch) -> None:
    """A saved user model: float32 weights changed from the base, its own name, no card README."""
    monkeypatch.setenv(USER_MODELS_ENV, str(tmp_path / "models"))
    model = load_model("nuclei")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # what a few fine-tuning steps do: every weight moves a little
        for weight in model.network.parameters():
            weight.add_(1e-3 * torch.randn(weight.shape, generator=generator))
    model.description.name = "nuclei-mine"
    save_model(model, tmp_path / "models" / "nuclei-mine")
    package = tmp_path / "mine.zip"
    _export_with_the_readme_command("nuclei-mine", package)
    described = bioimageio_core.load_description(package)
    assert described.validation_summary.status == "valid-format"
    assert described.name == "napari-unet nuclei-mine"
    assert _test_input_shape(package) == (1, 1, 192, 208)
    errors = _reproduction_errors(package)
    assert max(errors.values()) < 1e-4, errors
    probabilities = [
        load_model(source).network(torch.ones(1, 1, 192, 192)).detach()
        for source in ("nuclei-mine", package)
    ]
    torch.testing.assert_close(*probabilities)  # re-imported exactly, float32 weights kept


DSB_ID = "c89ac06daef5c819309f03d6a35792d1a8a66abb8cb3414013ffe71d3dd9fe96"
"""A 256 x 256 fluorescence validation image of DSB 2018 with 38 nuclei."""


def _write_bilevel(path: Path, mask: np.ndarray) -> Path:
    """Save foreground as an uncompressed 1-bit TIFF, as Fiji and many scripts save masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, mask > 0, bitspersample=1)
    return path


def test_a_bilevel_dsb_mask_reads_back_identically_and_trains(
    shared_data: Path, tmp_path: Path
) -> None:
    from napari_unet.core.train.datasets import read_pairs, semantic_class_count

    dsb = shared_data / "dsb2018" / "val"
    objects = tifffile.imread(dsb / "masks" / f"{DSB_ID}.tif")
    path = _write_bilevel(tmp_path / "masks" / "a.tif", objects)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].bitspersample == 1
    assert path.stat().st_size < objects.size / 7  # packed bits: 8.4 KB for 65,536 pixels
    image = read_image(path)
    assert image.data.dtype == np.bool_ and image.axes == "YX"
    np.testing.assert_array_equal(image.data, objects > 0)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.tif").write_bytes((dsb / "images" / f"{DSB_ID}.tif").read_bytes())
    images, masks = read_pairs(tmp_path / "images", tmp_path / "masks")
    assert masks[0].shape == images[0].shape
    assert np.count_nonzero(masks[0]) == np.count_nonzero(objects)  # 4.6% of the pixels
    assert semantic_class_count(masks, sparse=False) == 2  # background and nuclei


def test_bilevel_em_labels_score_as_the_same_labels_in_bytes(
    shared_data: Path, tmp_path: Path
) -> None:
    """ISBI labels (255 interior, 0 membrane) as 1-bit evaluation labels for em-membranes."""
    from napari_unet.core.evaluate import evaluate

    volume = read_image(shared_data / "isbi2012" / "train-volume.tif")
    labels = read_image(shared_data / "isbi2012" / "train-labels.tif")
    crop = (27, slice(128, 384), slice(128, 384))  # a held-out slice of the built-in
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "s.tif", volume.data[crop])
    _write_bilevel(tmp_path / "bits" / "s.tif", labels.data[crop])
    (tmp_path / "bytes").mkdir()
    tifffile.imwrite(tmp_path / "bytes" / "s.tif", (labels.data[crop] > 0).astype(np.uint8))
    scores = {
        kind: evaluate(tmp_path / "images", tmp_path / kind, "em-membranes")["overall"]
        for kind in ("bits", "bytes")
    }
    assert scores["bits"] == scores["bytes"], scores
    assert scores["bits"]["iou_interior"] > 0.85, scores  # 0.881 measured
    assert scores["bits"]["pixel_error"] < 0.12, scores  # 0.093 measured


def test_nuclei_on_a_tiff_without_pixel_size_writes_an_ome_zarr_claiming_no_unit(
    shared_data: Path, tmp_path: Path, capsys
) -> None:
    from napari_unet.core.io.omezarr import read_multiscale

    source = shared_data / "dsb2018" / "val" / "images" / f"{DSB_ID}.tif"
    assert read_image(source).pixel_size_um == {}
    out = tmp_path / "nuclei.ome.zarr"
    assert main(["predict", str(source), "-o", str(out), "--quiet"]) == 0
    labels = read_image(out)
    assert labels.pixel_size_um == {}  # was {"Y": 1.0, "X": 1.0}
    assert all("unit" not in axis for axis in read_multiscale(out).axes_metadata)
    truth = tifffile.imread(shared_data / "dsb2018" / "val" / "masks" / f"{DSB_ID}.tif")
    found = len(np.unique(labels.data[:])) - 1
    assert abs(found - truth.max()) <= 0.15 * truth.max(), (found, truth.max())  # 38 for 38
    assert main(["predict", str(source), "-o", str(tmp_path / "nuclei.png")]) == 1
    assert "cannot write 'nuclei.png'" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["nuclei.ome.zarr"]


def test_a_bilevel_nuclei_mask_scores_its_connected_regions_as_objects(
    shared_data: Path, tmp_path: Path
) -> None:
    """A 1-bit mask holds no object ids: its regions are the objects, with a warning."""
    from napari_unet.core.evaluate import evaluate

    dsb = shared_data / "dsb2018" / "val"
    objects = tifffile.imread(dsb / "masks" / f"{DSB_ID}.tif")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.tif").write_bytes((dsb / "images" / f"{DSB_ID}.tif").read_bytes())
    _write_bilevel(tmp_path / "bits" / "a.tif", objects)
    (tmp_path / "ids").mkdir()
    tifffile.imwrite(tmp_path / "ids" / "a.tif", objects)
    with pytest.warns(UserWarning, match="1-bit mask"):
        bits = evaluate(tmp_path / "images", tmp_path / "bits", "nuclei")["overall"]
    ids = evaluate(tmp_path / "images", tmp_path / "ids", "nuclei")["overall"]
    assert ids["ap50"] > 0.85  # 0.949 measured
    assert bits["ap50"] > ids["ap50"] - 0.1, (bits, ids)  # was 0.000: one object of all nuclei
