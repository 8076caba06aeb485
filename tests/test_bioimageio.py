"""bioimage.io packages: export, the reference tools' checks, import and the round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from foreign_packages import RDF_0_4, foreign_package, sigmoid, zmuv
from tiny_models import make_model

pytest.importorskip("bioimageio.core")

from bioimageio.spec import load_description

from napari_unet.core.bioimageio.export import export_bioimageio
from napari_unet.core.bioimageio.load import load_bioimageio
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.predictor import Predictor


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_bioimageio(make_model(), tmp_path_factory.mktemp("pkg") / "tiny.zip")


def _probabilities(model, image: np.ndarray, **options) -> np.ndarray:
    predictor = Predictor(model, device="cpu", precision="fp32", **options)
    return predictor.predict(image, output="probabilities")


def test_reference_tools_validate_and_reproduce_the_test_outputs(tiny_package: Path) -> None:
    from bioimageio.core import test_model

    described = load_description(tiny_package)
    assert described.validation_summary.status == "valid-format"
    summary = test_model(tiny_package)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    names = " ".join(d.name for d in summary.details)
    assert "(pytorch_state_dict)" in names and "(torchscript)" in names


def test_package_describes_the_network(tiny_package: Path) -> None:
    model = make_model()
    described = load_description(tiny_package)
    (tensor_in,), (tensor_out,) = described.inputs, described.outputs
    size = tensor_in.axes[-1].size
    assert size.step == model.network.size_multiple
    assert size.min > 2 * model.network.context
    assert tensor_out.axes[-1].halo == model.network.context
    steps = [tensor_in.preprocessing, tensor_out.postprocessing]
    assert [[p.id for p in s if p.id != "ensure_dtype"] for s in steps] == [
        ["scale_range"],
        ["softmax"],
    ]
    assert described.weights.torchscript.parent == "pytorch_state_dict"
    assert any("U-Net" in entry.text for entry in described.cite)
    warnings = [w.msg for d in described.validation_summary.details for w in d.warnings]
    assert [w for w in warnings if "github_user" not in w] == []  # FAIR-complete but GitHub


def test_round_trip_restores_the_model_exactly(tiny_package: Path, blobs: np.ndarray) -> None:
    original, loaded = make_model(), load_model(tiny_package)
    assert loaded.description == original.description
    np.testing.assert_array_equal(_probabilities(loaded, blobs), _probabilities(original, blobs))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_round_trip_through_torchscript(tmp_path: Path, blobs: np.ndarray, padding: str) -> None:
    model = make_model(padding=padding)
    package = export_bioimageio(model, tmp_path / "m.zip")
    loaded = load_bioimageio(package, weight_format="torchscript")
    assert type(loaded.network).__name__ == "PackagedNetwork"
    expected = _probabilities(model, blobs)
    np.testing.assert_allclose(_probabilities(loaded, blobs), expected, atol=1e-5)
    tiled = _probabilities(loaded, blobs, tile_shape=48)
    np.testing.assert_allclose(tiled, _probabilities(model, blobs, tile_shape=48), atol=1e-5)


def test_imported_model_pickles_for_workers(tiny_package: Path, blobs: np.ndarray) -> None:
    import pickle

    loaded = load_bioimageio(tiny_package, weight_format="torchscript")
    copy = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(_probabilities(copy, blobs), _probabilities(loaded, blobs))


def test_state_dict_weights_need_allow_pickle(tiny_package: Path, blobs: np.ndarray) -> None:
    with pytest.raises(PermissionError, match="allow_pickle=True"):
        load_bioimageio(tiny_package, weight_format="pytorch_state_dict")
    loaded = load_bioimageio(tiny_package, weight_format="pytorch_state_dict", allow_pickle=True)
    expected = _probabilities(make_model(), blobs)
    np.testing.assert_allclose(_probabilities(loaded, blobs), expected, atol=1e-5)


def test_builtin_models_export_as_valid_packages(tmp_path: Path) -> None:
    from napari_unet.core.io.images import read_image

    samples = Path(__file__).parent.parent / "src" / "napari_unet" / "samples"
    for name, sample in [("nuclei", "nuclei.tif"), ("em-membranes", "em.tif")]:
        image = read_image(samples / sample).data
        with pytest.warns(UserWarning, match="bright-background") if name == "nuclei" else _none():
            package = export_bioimageio(name, tmp_path / f"{name}.zip", sample=image)
        described = load_description(package)
        assert described.validation_summary.status == "valid-format", name
        assert described.name == f"napari-unet {name}"
        assert len(described.cite) == 2  # the U-Net paper and the training data


def _none():
    import contextlib

    return contextlib.nullcontext()


def test_export_refuses_to_overwrite(tiny_package: Path) -> None:
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bioimageio(make_model(), tiny_package)
    with pytest.raises(ValueError, match=r"\.zip"):
        export_bioimageio(make_model(), tiny_package.with_suffix(".tar"))
    imported = load_bioimageio(tiny_package, weight_format="torchscript")
    with pytest.raises(ValueError, match="imported from a bioimage"):
        export_bioimageio(imported, tiny_package.with_name("again.zip"))


def test_cli_export(tmp_path: Path) -> None:
    from napari_unet.cli import main
    from napari_unet.core.models.registry import save_model

    folder = save_model(make_model(), tmp_path / "tiny")
    out = tmp_path / "tiny.zip"
    assert main(["export", str(folder), str(out)]) == 0
    assert load_model(out).name == make_model().name
    assert main(["export", str(folder), str(out)]) == 1  # exists: refused, one-line error


# -- a U-Net that is not ours -----------------------------------------------------------------


def test_foreign_torchscript_unet_matches_the_module(tmp_path: Path) -> None:
    from bioimageio.spec.model import v0_5

    package = foreign_package(tmp_path, [v0_5.SigmoidDescr()], sigmoid)
    model = load_model(package)
    assert model.description.normalization == {"kind": "meanstd"}
    assert model.description.class_names == ["background", "foreground"]
    image = np.random.default_rng(2).normal(300, 40, (40, 48)).astype(np.float32)
    module = torch.jit.load(tmp_path / "foreign.pt")
    with torch.no_grad():
        direct = sigmoid(module(torch.from_numpy(zmuv(image)[None, :, :, None])).numpy())
    foreground = _probabilities(model, image)[1]  # one tile: the image is a valid size
    np.testing.assert_allclose(foreground, direct[0, :, :, 0], atol=1e-4)
    labels = Predictor(model, device="cpu", precision="fp32").predict(image)
    np.testing.assert_array_equal(labels, direct[0, :, :, 0] > 0.5)
    # Tiles that overlap by twice the declared halo plus a pooling cell add no seams.
    tiled = _probabilities(model, image, tile_shape=24, overlap=10)[1]
    np.testing.assert_allclose(tiled, foreground, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Conversion of channel size")  # the spec's 0.4 converter
def test_format_0_4_packages_are_converted(tmp_path: Path) -> None:
    foreign_package(tmp_path, [], sigmoid)  # writes the module and test tensors
    (tmp_path / "rdf.yaml").write_text(RDF_0_4)
    model = load_model(tmp_path / "rdf.yaml")
    assert model.description.normalization == {"kind": "meanstd"}
    image = np.random.default_rng(2).normal(300, 40, (40, 48)).astype(np.float32)
    module = torch.jit.load(tmp_path / "foreign.pt")
    with torch.no_grad():
        direct = sigmoid(module(torch.from_numpy(zmuv(image)[None, :, :, None])).numpy())
    np.testing.assert_allclose(_probabilities(model, image)[1], direct[0, :, :, 0], atol=1e-4)


def test_foreign_binarize_threshold_decides_the_labels(tmp_path: Path) -> None:
    from bioimageio.spec.model import v0_5

    steps = [v0_5.SigmoidDescr(), v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=0.3))]
    package = foreign_package(tmp_path, steps, lambda raw: (sigmoid(raw) > 0.3) * 1.0)
    image = np.random.default_rng(2).normal(300, 40, (40, 48)).astype(np.float32)
    module = torch.jit.load(tmp_path / "foreign.pt")
    with torch.no_grad():
        direct = sigmoid(module(torch.from_numpy(zmuv(image)[None, :, :, None])).numpy())
    labels = Predictor(load_model(package), device="cpu", precision="fp32").predict(image)
    np.testing.assert_array_equal(labels, direct[0, :, :, 0] > 0.3)


def test_image_outputs_are_refused(tmp_path: Path) -> None:
    package = foreign_package(tmp_path, [], lambda raw: raw * 100)
    with pytest.raises(ValueError, match="not a segmentation"):
        load_model(package)


# -- what cannot run is refused by name ---------------------------------------------------------


def test_statistics_must_cover_all_spatial_axes_and_come_first() -> None:
    from bioimageio.spec.model import v0_5

    from napari_unet.core.bioimageio.processing import UnsupportedPackage, input_steps

    per_row = v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=["x"], max_percentile=99))
    with pytest.raises(UnsupportedPackage, match=r"over axes \['x'\]"):
        input_steps([per_row], ("y", "x"), 1)
    linear = v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=2.0))
    with pytest.raises(UnsupportedPackage, match="after another step"):
        input_steps([linear, v0_5.ZeroMeanUnitVarianceDescr()], ("y", "x"), 1)
    normalization, fixed = input_steps([v0_5.ZeroMeanUnitVarianceDescr(), linear], ("y", "x"), 1)
    assert normalization == {"kind": "meanstd"}
    assert fixed[0](torch.ones(1, 1, 2, 2)).tolist() == [[[[2.0, 2.0], [2.0, 2.0]]]]


def test_outputs_that_are_not_class_scores_are_refused() -> None:
    from bioimageio.spec.model import v0_5

    from napari_unet.core.bioimageio.processing import UnsupportedPackage, output_rule

    probabilities = np.random.default_rng(0).random((1, 2, 8, 8))
    with pytest.raises(UnsupportedPackage, match="output_channel=N"):
        output_rule([v0_5.SigmoidDescr()], 2, probabilities, None)
    assert output_rule([v0_5.SigmoidDescr()], 2, probabilities, 1).channel == 1
    rescale = v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=2.0))
    with pytest.raises(UnsupportedPackage, match="'scale_linear'"):
        output_rule([rescale], 1, probabilities, None)


def testsigmoid_output_becomes_background_and_foreground_logits() -> None:
    from napari_unet.core.bioimageio.processing import OutputRule

    z = torch.tensor([[[[-2.0, 0.5]]]])
    classes = OutputRule("sigmoid", channel=0, threshold=0.3)(z).softmax(dim=1)
    assert classes.shape == (1, 2, 1, 2)
    assert (classes[0, 1, 0] > 0.5).tolist() == (torch.sigmoid(z[0, 0, 0]) > 0.3).tolist()


def test_weight_formats_napari_unet_cannot_run_are_named(tiny_package: Path) -> None:
    from napari_unet.core.bioimageio.load import load_bioimageio

    with pytest.raises(ValueError, match="no 'onnx' weights; it has napari-unet, torchscript"):
        load_bioimageio(tiny_package, weight_format="onnx")


@pytest.mark.parametrize("kind", ["distance", "flows"])
def test_distance_and_flows_models_export_logits_that_the_reference_tools_reproduce(
    tmp_path: Path, blobs: np.ndarray, kind: str
) -> None:
    from bioimageio.core import test_model

    model = make_model(output_kind=kind)
    with pytest.warns(UserWarning, match=f"{kind} output"):
        package = export_bioimageio(model, tmp_path / f"{kind}.zip")
    described = load_description(package)
    assert described.validation_summary.status == "valid-format"
    assert [p.id for p in described.outputs[0].postprocessing if p.id != "ensure_dtype"] == []
    assert test_model(package).status == "passed"
    loaded = load_model(package)
    assert loaded.description.class_names == model.description.class_names
    probabilities = _probabilities(loaded, blobs)
    np.testing.assert_array_equal(probabilities, _probabilities(model, blobs))
    np.testing.assert_allclose(probabilities[:3].sum(axis=0), 1.0, rtol=1e-5)


def test_a_hematoxylin_model_warns_on_export_and_keeps_its_stain_separation(
    tmp_path: Path,
) -> None:
    model = make_model()
    model.description.normalization["rgb"] = "hematoxylin"
    with pytest.warns(UserWarning, match="hematoxylin stain"):
        package = export_bioimageio(model, tmp_path / "stained.zip")
    assert load_model(package).description.normalization["rgb"] == "hematoxylin"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("depth", [2, 3])
def test_test_tensors_meet_the_network_size_constraints_with_or_without_a_sample(
    dims: int, padding: str, depth: int
) -> None:
    from napari_unet.core.bioimageio.export import _min_size, _test_input

    network = make_model(spatial_dims=dims, padding=padding, depth=depth).network.eval()
    smallest, step = _min_size(network), network.size_multiple
    small = np.random.default_rng(depth).random((7,) * (dims - 1) + (11,)).astype(np.float32)
    for sample in (None, small):
        test_input = _test_input(network, sample)
        spatial = test_input.shape[2:]
        assert all(n >= smallest and (n - smallest) % step == 0 for n in spatial), spatial
        if sample is None:
            assert spatial[-1] > spatial[-2]  # swapped axes cannot pass the reference test
        with torch.inference_mode():
            assert network(torch.from_numpy(test_input)).shape[2:] == tuple(
                n - (2 * network.context if padding == "valid" else 0) for n in spatial
            )
    # a sample under the minimum is mirrored out to it, itself in the corner
    np.testing.assert_array_equal(test_input[(0, 0, *(slice(n) for n in small.shape))], small)
