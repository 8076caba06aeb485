from pathlib import Path

import numpy as np
import pytest

import napari_unet
from label_helpers import matched_share
from napari_unet.core.io.images import read_image
from napari_unet.core.predict.distributed import connect
from napari_unet.core.predict.predictor import Predictor
from tiny_models import make_model

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
SAMPLE = Path(napari_unet.__file__).parent / "samples" / "nuclei.tif"


@pytest.fixture(scope="module")
def client():
    with connect(workers=2) as client:
        yield client
        client.cluster.close()


def test_a_two_process_cluster_gives_the_single_process_result(client, tmp_path):
    image = read_image(SAMPLE).data[:200, :240]
    source = zarr.create_array(
        store=tmp_path / "in.zarr", shape=image.shape, chunks=(50, 60), dtype=image.dtype
    )
    source[:] = image
    settings = {"block_shape": (1, 100, 120), "halo": 32}
    here = Predictor("nuclei", **settings).predict(source)
    out = zarr.create_array(
        store=tmp_path / "out.zarr", shape=image.shape, chunks=(100, 120), dtype=np.uint16
    )
    calls = []
    Predictor("nuclei", **settings).predict(
        source, out=out, client=client, progress=lambda done, total: calls.append(done)
    )
    share, one_to_one = matched_share(here, out[:])
    assert here.max() > 10 and share >= 0.995 and one_to_one
    assert calls[-1] == 4  # 2 x 2 blocks
    semantic = Predictor("nuclei", **settings).predict(source, output="semantic", client=client)
    np.testing.assert_array_equal(
        semantic, Predictor("nuclei", **settings).predict(source, output="semantic")
    )


def test_an_em_stack_joined_in_3d_on_a_cluster_gives_the_single_process_result(
    client, tmp_path, shared_data
):
    """The slice-to-slice joining rule holds on a cluster too, across blocks in Z and XY."""
    volume = read_image(shared_data / "isbi2012" / "train-volume.tif").data[:6, :256, :256]
    source = zarr.create_array(
        store=tmp_path / "em.zarr", shape=volume.shape, chunks=(3, 128, 128), dtype=volume.dtype
    )
    source[:] = volume
    settings = {"block_shape": (3, 128, 128)}
    here = Predictor("em-membranes", **settings).predict(source, axes="ZYX", output="instances")
    out = zarr.create_array(
        store=tmp_path / "labels.zarr", shape=volume.shape, chunks=(3, 128, 128), dtype=np.uint32
    )
    Predictor("em-membranes", **settings).predict(
        source, axes="ZYX", output="instances", out=out, client=client
    )
    share, one_to_one = matched_share(here, out[:])
    assert here.max() > 50 and share >= 0.99 and one_to_one
    planes = Predictor("em-membranes").predict(volume, axes="TYX", output="instances")
    counts = [[np.unique(plane[plane > 0]).size for plane in stack] for stack in (planes, out[:])]
    assert counts[0] == counts[1]  # each slice keeps its own cells: none fused through Z


def test_numpy_inputs_are_refused_for_a_cluster(client):
    with pytest.raises(ValueError, match="workers read and write stores themselves"):
        Predictor(make_model()).predict(np.zeros((32, 32), np.float32), client=client)
