"""Outputs never destroy inputs, are created exclusively, and are checked before any work."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.cli.predict import output_paths
from napari_unet.core.io.files import atomic_write
from napari_unet.core.io.output_checks import check_outputs
from napari_unet.core.models.registry import USER_MODELS_ENV, save_model
from tiny_models import make_model


@pytest.fixture
def images(tmp_path):
    """A folder with ``a.tif`` and ``a_labels.tif``: the second is the first one's output name."""
    folder = tmp_path / "data"
    folder.mkdir()
    for value, name in ((1, "a.tif"), (2, "a_labels.tif")):
        tifffile.imwrite(folder / name, np.full((8, 8), value, np.uint8))
    return folder


def unchanged(folder) -> bool:
    return [int(tifffile.imread(folder / n).max()) for n in ("a.tif", "a_labels.tif")] == [1, 2]


def test_the_input_as_its_own_output_is_refused_even_with_overwrite(images, capsys):
    source = str(images / "a.tif")
    assert main(["predict", source, "-o", source, "--overwrite", "--model", "none"]) == 1
    assert "would replace the input" in capsys.readouterr().err
    assert unchanged(images)


def test_a_folder_run_never_writes_over_a_file_it_reads(images, capsys):
    assert main(["predict", str(images), "-o", str(images), "--overwrite"]) == 1
    assert f"output {images / 'a_labels.tif'} would replace the input" in capsys.readouterr().err
    assert unchanged(images)


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_an_output_linked_to_the_input_is_refused(images, tmp_path, link):
    link(images / "a.tif", tmp_path / "out.tif")
    with pytest.raises(ValueError, match="would replace the input"):
        check_outputs([images / "a.tif"], [tmp_path / "out.tif"], overwrite=True)


def test_an_output_folder_holding_an_input_is_refused(images):
    with pytest.raises(ValueError, match="would replace the input"):
        check_outputs([images / "a.tif"], [images], overwrite=True)


def test_existing_outputs_need_overwrite(images, tmp_path):
    with pytest.raises(FileExistsError, match="overwrite"):
        check_outputs([tmp_path / "x.tif"], [images / "a.tif"], overwrite=False)


def test_outputs_that_cannot_be_written_fail_before_the_model_is_loaded(images, tmp_path, capsys):
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    argv = ["predict", str(images / "a.tif"), "-o", str(blocker / "out"), "--model", "none"]
    assert main(argv) == 1
    assert f"cannot write outputs in {blocker / 'out'}" in capsys.readouterr().err


def test_a_name_taken_during_the_write_is_not_replaced_without_overwrite(tmp_path):
    target = tmp_path / "out.tif"

    def racing_write(temporary: str) -> None:
        target.write_text("the other run's result")  # another run finishes first
        with open(temporary, "w") as file:
            file.write("ours")

    with pytest.raises(FileExistsError, match="exists"):
        atomic_write(target, racing_write, overwrite=False)
    assert target.read_text() == "the other run's result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]  # no temporary left


def test_several_inputs_and_a_tif_output_is_an_error_not_a_folder(images, tmp_path, capsys):
    target = tmp_path / "x.tif"
    assert main(["predict", str(images), "-o", str(target)]) == 1
    assert "2 inputs need an output folder" in capsys.readouterr().err
    assert not target.exists()


def test_output_names_for_tiff_and_ome_zarr_inputs(tmp_path):
    zarr_image = tmp_path / "cells.ome.zarr"
    zarr_image.mkdir()
    inputs = [tmp_path / "a.ome.tif", zarr_image]
    assert [p.name for p in output_paths(inputs, tmp_path / "out", "labels")] == [
        "a_labels.tif",
        "cells_labels.ome.zarr",
    ]
    assert output_paths(inputs, tmp_path / "out", "probabilities")[1].name == (
        "cells_probabilities.tif"
    )
    for single in (tmp_path / "x.zarr", zarr_image / "labels" / "cells", tmp_path / "y.tif"):
        assert output_paths([zarr_image], single, "labels") == [single]
    with pytest.raises(ValueError, match="probabilities are written as OME-TIFF"):
        output_paths([zarr_image], tmp_path / "x.zarr", "probabilities")


def test_info_on_a_folder_says_it_is_a_folder(images, capsys):
    assert main(["info", str(images)]) == 1
    assert f"{images} is a folder, not an image" in capsys.readouterr().err


def test_a_bare_memory_error_still_prints_a_line(monkeypatch, images, capsys):
    def no_memory(path):
        raise MemoryError

    monkeypatch.setattr("napari_unet.core.io.images.describe_file", no_memory)
    assert main(["info", str(images / "a.tif")]) == 1
    assert "info: error: out of memory (try a smaller" in capsys.readouterr().err


def test_evaluating_a_semantic_model_on_instance_masks_is_a_clear_error(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(USER_MODELS_ENV, str(tmp_path / "models"))
    model = make_model()
    model.description.name = "semantic"
    save_model(model, tmp_path / "models" / "semantic")
    for kind, data in (("images", np.ones((32, 32), np.uint8)), ("masks", np.arange(1024))):
        (tmp_path / kind).mkdir()
        tifffile.imwrite(tmp_path / kind / "a.tif", data.reshape(32, 32).astype(np.uint16))
    argv = ["evaluate", "--model", "semantic", "--images", str(tmp_path / "images")]
    assert main([*argv, "--masks", str(tmp_path / "masks")]) == 1
    assert "instance masks (one label per object) need an instances model" in (
        capsys.readouterr().err
    )


def test_a_model_save_racing_another_fails_instead_of_mixing_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"the other save's weights")  # card not yet
    with pytest.raises(FileExistsError, match="exists"):
        save_model(make_model(), folder)
    assert (folder / "weights.safetensors").read_bytes() == b"the other save's weights"
    assert sorted(p.name for p in folder.iterdir()) == ["weights.safetensors"]
