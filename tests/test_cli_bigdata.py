from pathlib import Path

import numpy as np
import pytest

import napari_unet
from label_helpers import matched_share
from napari_unet.cli import main
from napari_unet.core.io.images import read_image

zarr = pytest.importorskip("zarr")
ome_writer = pytest.importorskip("ome_zarr.writer")
SAMPLE = Path(napari_unet.__file__).parent / "samples" / "nuclei.tif"


@pytest.fixture
def ome_image(tmp_path):
    """The nuclei sample twice over as a 2-level OME-Zarr image with a 0.5 µm pixel size."""
    data = np.tile(read_image(SAMPLE).data, (1, 2))[:256, :448]
    root = zarr.open_group(tmp_path / "cells.ome.zarr", mode="w")
    ome_writer.write_image(
        data,
        root,
        axes="yx",
        scale={"y": 0.5, "x": 0.5},
        axes_units={"y": "micrometer", "x": "micrometer"},
        scale_factors=(2,),
        storage_options={"chunks": (64, 64)},
    )
    return tmp_path / "cells.ome.zarr"


def test_ome_zarr_in_and_out_blockwise_matches_a_tiff_run_in_one_block(ome_image, tmp_path):
    zarr_out, tiff_out = tmp_path / "labels.ome.zarr", tmp_path / "labels.tif"
    args = ["predict", str(ome_image), "--quiet", "--memory", "3GB"]
    assert main([*args, "-o", str(zarr_out), "--block", "128"]) == 0
    assert main([*args, "-o", str(tiff_out), "--block", "4096"]) == 0
    blocked, whole = read_image(zarr_out), read_image(tiff_out)
    assert blocked.pixel_size_um == whole.pixel_size_um == {"Y": 0.5, "X": 0.5}
    assert [level.shape for level in blocked.levels][:2] == [(256, 448), (128, 224)]
    share, one_to_one = matched_share(np.asarray(whole.data), np.asarray(blocked.data))
    assert np.asarray(whole.data).max() > 20 and share >= 0.99 and one_to_one


def test_labels_go_into_the_image_container(ome_image):
    target = ome_image / "labels" / "nuclei"
    assert main(["predict", str(ome_image), "-o", str(target), "--quiet"]) == 0
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    group = zarr.open_group(ome_image / "labels", mode="r")
    assert dict(group.attrs).get("ome", dict(group.attrs))["labels"] == ["nuclei"]
    node = next(iter(Reader(parse_url(str(target)))()))
    assert node.data[0].shape == (256, 448) and np.asarray(node.data[0]).max() > 20


def test_a_missing_level_and_cluster_runs_on_tiff_are_clear_errors(ome_image, tmp_path, capsys):
    assert main(["predict", str(ome_image), "-o", str(tmp_path / "a.tif"), "--level", "7"]) != 0
    assert "level" in capsys.readouterr().err
    args = ["predict", str(SAMPLE), "-o", str(tmp_path / "b.tif"), "--workers", "2"]
    assert main(args) != 0
    assert "need OME-Zarr inputs" in capsys.readouterr().err
    assert not (tmp_path / "a.tif").exists() and not (tmp_path / "b.tif").exists()


def test_a_block_failing_on_a_worker_fails_the_run_and_leaves_no_output(
    ome_image, tmp_path, capsys
):
    chunk = next(path for path in (ome_image / "s0").rglob("*") if path.is_file())
    chunk.write_bytes(b"not a compressed chunk")
    target = tmp_path / "labels.ome.zarr"
    args = ["predict", str(ome_image), "-o", str(target), "--workers", "2", "--quiet"]
    assert main(args) != 0
    assert capsys.readouterr().err.strip()
    assert not target.exists() and not list(tmp_path.glob(".labels.ome.zarr*"))
