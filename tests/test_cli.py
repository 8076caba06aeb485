import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.io import read_image
from napari_unet.core.models import USER_MODELS_ENV, save_model
from tiny_models import make_model


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A saved tiny instance model, the only model the CLI can see."""
    folder = tmp_path / "models"
    monkeypatch.setenv(USER_MODELS_ENV, str(folder))
    model = make_model(output_kind="instances")
    model.description.name = "tiny"
    save_model(model, folder / "tiny")
    return "tiny"


@pytest.fixture
def image_file(tmp_path, blobs):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(
        path,
        np.stack([blobs, blobs]),
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", "spacing": 3.0, "unit": "um"},
    )
    return path


def test_predict_writes_labels_with_the_input_axes_and_pixel_size(
    tiny, image_file, tmp_path, capsys
):
    target = tmp_path / "out.tif"
    assert main(["predict", str(image_file), "-o", str(target), "--model", tiny, "--quiet"]) == 0
    labels = read_image(target)
    assert labels.is_labels and labels.axes == "ZYX" and labels.shape == (2, 70, 90)
    assert labels.pixel_size_um == pytest.approx({"Z": 3.0, "Y": 0.5, "X": 0.5})
    assert capsys.readouterr().err == ""


def test_predict_folder_and_glob_into_a_folder_with_probabilities(tiny, image_file, tmp_path):
    (tmp_path / "more").mkdir()
    tifffile.imwrite(tmp_path / "more" / "b.tiff", np.zeros((20, 24), np.uint8))
    out = tmp_path / "results"
    code = main(
        [
            "predict",
            str(tmp_path / "*.tif"),
            str(tmp_path / "more"),
            "-o",
            str(out),
            "--model",
            tiny,
            "--output",
            "probabilities",
            "--tile",
            "32",
            "--overlap",
            "8",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "b_probabilities.tif",
        "cells_probabilities.tif",
    ]
    assert read_image(out / "cells_probabilities.tif").axes == "CZYX"


def test_existing_output_is_not_overwritten_without_the_flag(tiny, image_file, tmp_path, capsys):
    target = tmp_path / "out.tif"
    target.write_bytes(b"keep me")
    assert main(["predict", str(image_file), "-o", str(target), "--model", tiny]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("napari-unet predict: error:") and "--overwrite" in error
    assert "\n" not in error and target.read_bytes() == b"keep me"
    assert (
        main(
            [
                "predict",
                str(image_file),
                "-o",
                str(target),
                "--model",
                tiny,
                "--overwrite",
                "--quiet",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["predict", "missing.tif", "-o", "x.tif"], "no such file"),
        (["predict", "IMAGE", "-o", "x.tif", "--model", "nope"], "no model named"),
        (
            ["predict", "IMAGE", "-o", "x.tif", "--axes", "YX", "--model", "tiny"],
            "axes 'YX' name 2 dims",
        ),
        (["info", "missing.tif"], "no such file"),
    ],
)
def test_bad_input_is_a_one_line_error_and_exit_code_1(
    tiny, image_file, tmp_path, capsys, monkeypatch, arguments, message
):
    monkeypatch.chdir(tmp_path)
    arguments = [str(image_file) if a == "IMAGE" else a for a in arguments]
    assert main(arguments) == 1
    error = capsys.readouterr().err.strip()
    assert message in error and error.count("\n") == 0 and "Traceback" not in error
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path, where):
    command = ["predict", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "x.tif")]
    arguments = ["--debug", *command] if where == "before" else [*command, "--debug"]
    with pytest.raises(FileNotFoundError):
        main(arguments)


def test_models_and_info(tiny, image_file, capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("tiny\tinstances\t2D\t1 channel(s)") for line in lines)
    assert main(["info", str(image_file)]) == 0
    out = capsys.readouterr().out
    assert "(2, 70, 90)" in out and "ZYX" in out and "uint16" in out and "Y 0.5 µm" in out


def test_console_script_runs_and_usage_errors_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "napari_unet", "predict"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "usage:" in result.stderr


def test_import_loads_neither_napari_nor_qt_nor_torch():
    modules = "('napari', 'PyQt6', 'qtpy', 'torch')"
    code = f"import sys, napari_unet; print([m for m in {modules} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
