import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.io.images import read_image
from napari_unet.core.models.registry import USER_MODELS_ENV, load_model, save_model
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
        "b_probabilities.tif.json",
        "cells_probabilities.tif",
        "cells_probabilities.tif.json",
    ]
    assert read_image(out / "cells_probabilities.tif").axes == "CZYX"
    record = json.loads((out / "cells_probabilities.tif.json").read_text())  # provenance
    assert record["input"] == str(tmp_path / "cells.tif")
    assert record["options"]["tile_shape"] == 32 and record["options"]["overlap"] == 8
    assert record["options"]["output"] == "probabilities"
    assert record["model"]["name"] == load_model(tiny).description.name


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


def _tree(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_an_output_with_a_suffix_we_do_not_write_is_refused_not_made_a_folder(
    tiny, image_file, tmp_path, capsys
):
    before = _tree(tmp_path)
    argv = ["predict", str(image_file), "--model", tiny, "--quiet", "-o"]
    assert main([*argv, str(tmp_path / "out.png")]) == 1
    error = capsys.readouterr().err
    assert "cannot write 'out.png'" in error and ".tif, .tiff" in error and ".ome.zarr" in error
    assert _tree(tmp_path) == before  # no folder named out.png
    assert main([*argv, str(tmp_path / "out.png") + "/"]) == 0  # a folder, when asked for one
    assert _tree(tmp_path / "out.png") == ["cells_labels.tif", "cells_labels.tif.json"]


@pytest.mark.parametrize(
    "bad_option",
    [
        ["--device", "cuda:99"],
        ["--memory", "lots"],
        ["--precision", "fp8"],
        ["--tile", "0"],
        ["--channel", "3"],
        ["--level", "2"],
        ["--axes", "YX"],
        ["--diameter", "-5"],
    ],
)
def test_a_failed_run_leaves_no_folder_it_created(tiny, image_file, tmp_path, bad_option, capsys):
    kept = tmp_path / "kept"
    (kept / "old").mkdir(parents=True)
    for target in (f"{tmp_path / 'new' / 'deeper'}/", str(kept / "new" / "out.tif")):
        before = _tree(tmp_path)
        argv = ["predict", str(image_file), "-o", target, "--model", tiny, *bad_option]
        assert main(argv) == 1, bad_option
        assert capsys.readouterr().err.startswith("napari-unet predict: error:")
        assert _tree(tmp_path) == before  # "new" is gone; "kept" and "kept/old" stay


def test_every_command_says_what_it_does_in_its_help():
    from napari_unet.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert set(commands) >= {"predict", "models", "info", "train", "evaluate", "export"}
    for name, command in commands.items():
        assert command.description and len(command.description) > 60, name
    predict = commands["predict"].format_help()
    assert "Segment TIFF images" not in predict
    assert all(kind in " ".join(predict.split()) for kind in ("OME-TIFF", "OME-Zarr", "ImageJ"))
    assert USER_MODELS_ENV in " ".join(commands["models"].format_help().split())


def _fake_distribution(folder, name: str, version: str) -> None:
    """An installed distribution's metadata, as pip leaves it in site-packages."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_the_unrelated_napari_unet_distribution_is_detected(tiny, tmp_path, monkeypatch, capsys):
    assert main(["models"]) == 0
    assert "warning" not in capsys.readouterr().err
    site = tmp_path / "site-packages"
    _fake_distribution(site, "napari-unet", "1.0.0")
    monkeypatch.syspath_prepend(str(site))
    assert main(["models"]) == 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "napari-unet 1.0.0 is installed beside" in error
    assert "pip uninstall napari-unet napari-unet-segment" in error
