"""Write a napari-unet model as a bioimage.io package (the spec that bioimageio.core 0.11 pins).

The package carries the weights twice, as the spec asks of PyTorch models: a
``pytorch_state_dict`` whose architecture is :class:`napari_unet.core.models.network.UNet` with the
config as kwargs, and ``torchscript`` traced from it (``parent``). The napari-unet card and
safetensors weights ride along as attachments, so napari-unet re-imports its own packages
without unpickling and with everything the spec cannot say (instance post-processing, the
``dark_background`` flip).
"""

from __future__ import annotations

import json
import os
import re
import string
import tempfile
import unicodedata
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.axes import CanonicalView
from napari_unet.core.bioimageio import CONFIG_KEY, require_bioimageio
from napari_unet.core.bioimageio.scripted import script_unet
from napari_unet.core.io.files import atomic_write, new_folders_removed_on_failure
from napari_unet.core.models.model_types import FLOW_SCALE
from napari_unet.core.models.network import UNet
from napari_unet.core.models.registry import CARD_FILE, WEIGHTS_FILE, Model, load_model, save_model
from napari_unet.core.normalize import fit_normalizer
from napari_unet.core.predict.postprocess import class_channels, instance_source
from napari_unet.names import DEFAULT_PERCENTILES

INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
PACKAGE_FILES = (
    CARD_FILE,
    WEIGHTS_FILE,
    "weights.pt",
    "weights_torchscript.pt",
    "test_input.npy",
    "test_output.npy",
    "sample_input.tif",
    "sample_output.tif",
    "cover.png",
    "README.md",
)
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_+- ()")
"""The characters a bioimage.io model name may hold."""
MAX_NAME_LENGTH = 64
"""The spec allows 128 characters in a name and advises at most 64."""
WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", *(f"{port}{n}" for port in ("COM", "LPT") for n in range(10))]
)
"""File names Windows reserves, whatever their extension."""
MAX_DESCRIPTION_LENGTH = 1024
"""The spec's limit on a description."""
MAX_TEST_SIZE = 256
"""Test tensors are at most this long per axis (or the network's minimum, if larger), so
``bioimageio test`` stays quick."""
DEFAULT_TEST_SHAPE = {2: (160, 192), 3: (96, 96, 112)}
"""The synthetic test image's shape when no sample is given, raised per axis to the nearest
size the network accepts."""

UNET_PAPER = {
    "text": "Ronneberger, Fischer & Brox (2015). U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation. MICCAI 2015, LNCS 9351",
    "doi": "10.1007/978-3-319-24574-4_28",
}
DATA_CITATIONS = {
    "nuclei": {
        "text": "Caicedo et al. (2019). Nucleus segmentation across imaging experiments: the "
        "2018 Data Science Bowl. Nature Methods 16",
        "doi": "10.1038/s41592-019-0612-7",
    },
    "em-membranes": {
        "text": "Cardona et al. (2010). An integrated micro- and macroarchitectural analysis of "
        "the Drosophila brain by computer-assisted serial section electron microscopy. "
        "PLoS Biology 8(10)",
        "doi": "10.1371/journal.pbio.1000502",
    },
}
"""The training data's citations of the built-in models, by model name."""


def export_bioimageio(
    model: str | os.PathLike[str] | Model,
    path: str | os.PathLike[str],
    *,
    sample: np.ndarray | None = None,
    authors: Sequence[str] = ("napari-unet developers",),
    license: str = "BSD-3-Clause",
    cite: Sequence[dict[str, str]] = (),
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a bioimage.io package ``path`` (a ``.zip``), ready for the model zoo.

    Any model name is accepted: the package's name keeps the spec's characters
    (:func:`package_name`) and its description the original name.

    Parameters
    ----------
    model
        A model name, folder or loaded :class:`Model`.
    path
        The ``.zip`` to write, or a folder to write ``<model name>.zip`` into (a file name
        safe on every system, :func:`file_stem`).
    sample
        An image (``YX``/``ZYX``, or with channels first) the test tensors are cropped from;
        a synthetic image of blobs by default.
    authors, license, cite
        Metadata; the U-Net paper and, for built-in models, their data are always cited.
    """
    spec = require_bioimageio()
    from bioimageio.spec.model import v0_5

    model = load_model(model)
    path = package_path(path, model.name)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not isinstance(model.network, UNet):
        raise ValueError(
            f"model {model.name!r} was imported from a bioimage.io package; only napari-unet "
            "U-Nets are exported (share the original package instead)"
        )
    _warn_what_the_package_cannot_say(model)
    network = model.network.eval()
    test_input = _test_input(network, sample)
    test_output = _reference_output(model, test_input)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = _write_files(folder, model, test_input, test_output)
        descr = _model_descr(v0_5, model, network, files, authors, license, cite)
        with new_folders_removed_on_failure([path]):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(  # stored, not deflated: weights hardly compress, deflating took seconds
                path,
                lambda tmp: spec.save_bioimageio_package(
                    descr, output_path=Path(tmp), compression=zipfile.ZIP_STORED
                ),
                overwrite=overwrite,
            )
    return path


def _warn_what_the_package_cannot_say(model: Model) -> None:
    """Warn about steps bioimage.io preprocessing cannot express (napari-unet keeps them)."""
    description = model.description
    if description.normalization.get("dark_background"):
        warnings.warn(
            f"model {model.name!r} flips bright-background images after normalisation; "
            "bioimage.io preprocessing cannot say that, so other tools get the unflipped "
            "image (napari-unet re-imports the package with the flip)",
            UserWarning,
            stacklevel=3,
        )
    if description.normalization.get("rgb") == "hematoxylin":
        warnings.warn(
            f"model {model.name!r} reads colour images as their hematoxylin stain; bioimage.io "
            "preprocessing cannot say that, so other tools must be given that one channel "
            "(napari-unet re-imports the package with the stain separation)",
            UserWarning,
            stacklevel=3,
        )
    if _softmax_free(description):
        warnings.warn(
            f"model {model.name!r} has a {instance_source(description)} output next to its class "
            "logits; a bioimage.io "
            "postprocessing step cannot apply a softmax to part of a tensor, so the package "
            "outputs logits (napari-unet re-imports it with the right activations)",
            UserWarning,
            stacklevel=3,
        )


def _model_descr(
    v0_5: Any,
    model: Model,
    network: UNet,
    files: dict[str, Path],
    authors: Sequence[str],
    license: str,
    cite: Sequence[dict[str, str]],
) -> Any:
    """Describe the package (its ``rdf.yaml``) for the files written into it."""
    description = model.description
    return v0_5.ModelDescr(
        name=package_name(model.name),
        description=_package_description(description.description, model.name),
        authors=[v0_5.Author(name=name) for name in authors],
        cite=[v0_5.CiteEntry(**entry) for entry in _citations(model.name, cite)],
        license=license,
        documentation=v0_5.FileDescr(source=files["README.md"]),
        covers=[v0_5.FileDescr(source=files["cover.png"])],
        tags=["napari-unet", "unet", "segmentation", f"{description.spatial_dims}d"],
        inputs=[_input_descr(v0_5, network, description, files)],
        outputs=[_output_descr(v0_5, network, description, files)],
        weights=_weights_descr(v0_5, network, files),
        attachments=[v0_5.FileDescr(source=files[name]) for name in (CARD_FILE, WEIGHTS_FILE)],
        config={CONFIG_KEY: {"card": CARD_FILE, "weights": WEIGHTS_FILE}},
    )


def package_name(name: str) -> str:
    """Turn any model name into a bioimage.io name: ASCII letters, digits, spaces, ``_+-()``.

    Accents are dropped (``é`` -> ``e``), any other run of characters becomes one ``-``; the
    result is at most :data:`MAX_NAME_LENGTH` long (the spec's advice) and names napari-unet.
    """
    kept = []
    for char in unicodedata.normalize("NFKD", name):
        if char in NAME_CHARACTERS:
            kept.append(char)
        elif not unicodedata.combining(char):
            kept.append("-")
    cleaned = re.sub(r"-+", "-", re.sub(r"\s+", " ", "".join(kept))).strip(" -")
    full = f"napari-unet {cleaned or 'model'}"
    return full[:MAX_NAME_LENGTH].rstrip(" -")


def file_stem(name: str) -> str:
    """Turn any model name into a file name safe on every system: ``[A-Za-z0-9_.-]``."""
    stem = re.sub(r"[^A-Za-z0-9_.]+", "-", package_name(name).removeprefix("napari-unet "))
    stem = stem.strip(".-")[:MAX_NAME_LENGTH] or "model"
    return f"model-{stem}" if stem.split(".")[0].upper() in WINDOWS_DEVICES else stem


def _package_description(description: str, name: str) -> str:
    """Describe the package: the model's text, and its original name if the name changed."""
    text = description or f"napari-unet U-Net {name!r}"
    if package_name(name) != f"napari-unet {name}":
        text = f"{text} (napari-unet model name: {name})"
    if len(text) > MAX_DESCRIPTION_LENGTH:
        text = text[: MAX_DESCRIPTION_LENGTH - 3] + "..."
    return text


def package_path(path: str | os.PathLike[str], model_name: str) -> Path:
    """Return where the package goes: ``path`` (a ``.zip``), or ``<model name>.zip`` in it."""
    text = os.fspath(path)
    path = Path(text).expanduser()
    if path.is_dir() or text.endswith(("/", os.sep)):
        return path / f"{file_stem(model_name)}.zip"
    if path.suffix.lower() != ".zip":
        raise ValueError(
            f"a bioimage.io package is a .zip file, not {path.name!r} (or give a folder, "
            "ending in /, to write <model name>.zip into)"
        )
    return path


def _citations(name: str, extra: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    data = [DATA_CITATIONS[name]] if name in DATA_CITATIONS else []
    return [UNET_PAPER, *data, *extra]


def _spatial_axes(dims: int) -> tuple[str, ...]:
    return ("z", "y", "x")[-dims:]


def _test_input(network: UNet, sample: np.ndarray | None) -> np.ndarray:
    """Crop ``sample`` to a ``(1, C, *spatial)`` float32 test input the network accepts.

    A sample shorter than the network's smallest input is mirrored out to it.
    """
    dims, channels = network.spatial_dims, network.config.in_channels
    if sample is None:
        sample = _synthetic_image(_default_test_shape(network))
    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim == dims:
        sample = sample[np.newaxis]
    if sample.ndim != dims + 1 or sample.shape[0] != channels:
        raise ValueError(
            f"the sample must have {dims} spatial axes and {channels} channel(s) first; "
            f"got shape {sample.shape}"
        )
    smallest = _min_size(network)
    short = [(0, 0)] + [(0, max(0, smallest - length)) for length in sample.shape[1:]]
    sample = np.pad(sample, short, mode="symmetric")  # mirrored out, as the engine does
    crop = []
    for length in sample.shape[1:]:
        size = _largest_valid(network, min(length, _test_size_limit(network)))
        start = (length - size) // 2
        crop.append(slice(start, start + size))
    return np.ascontiguousarray(sample[(slice(None), *crop)][np.newaxis])


def _default_test_shape(network: UNet) -> tuple[int, ...]:
    """Return the synthetic test image's shape: sizes the network accepts, the last the longest.

    Each axis is the smallest accepted size from :data:`DEFAULT_TEST_SHAPE` up; the last
    axis is longer than the one before, so a test output with swapped axes cannot pass.
    """
    wanted = DEFAULT_TEST_SHAPE[network.spatial_dims]
    shape = [_smallest_valid(network, length) for length in wanted]
    if shape[-1] <= shape[-2]:
        shape[-1] = shape[-2] + network.size_multiple
    return tuple(shape)


def _smallest_valid(network: UNet, at_least: int) -> int:
    """Return the smallest input size the network accepts that is at least ``at_least``."""
    size, step = _min_size(network), network.size_multiple
    return size + max(0, -(-(at_least - size) // step)) * step


def _test_size_limit(network: UNet) -> int:
    """Longest test tensor axis: :data:`MAX_TEST_SIZE`, or one step over a larger minimum."""
    return max(MAX_TEST_SIZE, _min_size(network) + network.size_multiple)


def _min_size(network: UNet) -> int:
    """Return the smallest input per axis; for ``"same"`` nets larger than twice the halo."""
    if network.config.padding == "same":
        return network.valid_input_size(2 * network.context + 1)
    return network.valid_input_size(1)


def _largest_valid(network: UNet, limit: int) -> int:
    """Return the largest input size the network accepts up to ``limit`` (at least its minimum)."""
    size = _min_size(network)
    while size + network.size_multiple <= limit:
        size += network.size_multiple
    return size


def _synthetic_image(shape: tuple[int, ...]) -> np.ndarray:
    """Bright blurred blobs on a dark background, as fluorescence nuclei look."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    blobs = ndi.gaussian_filter((rng.random(shape) > 0.995).astype(np.float32), 3)
    return (200 * blobs / blobs.max() + 10 + rng.normal(0, 2, shape)).astype(np.float32)


def _export_normalization(settings: dict[str, Any]) -> dict[str, Any]:
    """Keep the part of the normalisation the spec can express (no flip, no RGB mean)."""
    kind = settings.get("kind", "percentile")
    if kind == "percentile":
        return {"kind": kind, "low": settings["low"], "high": settings["high"]}
    return {"kind": kind}


def _reference_output(model: Model, test_input: np.ndarray) -> np.ndarray:
    """Compute the test output with our own normalisation and network (an independent check)."""
    image = test_input[0]
    axes = "C" + "ZYX"[-model.description.spatial_dims :]
    settings = _export_normalization(model.description.normalization)
    normalizer = fit_normalizer(CanonicalView(image, axes), settings, slice(None))
    shape = (1, -1) + (1,) * (image.ndim - 1)
    normalized = (image - normalizer.shift.reshape(shape)) * normalizer.scale.reshape(shape)
    with torch.inference_mode():
        logits = model.network(torch.from_numpy(normalized.astype(np.float32)))
    return logits.numpy() if _softmax_free(model.description) else logits.softmax(dim=1).numpy()


def _output_words(description: Any) -> str:
    """Say what the output channels hold, for the package's documentation."""
    names = ", ".join(description.class_names)
    if instance_source(description) == "flows":
        return (
            f"The output is {names}: a softmax over the first three channels gives class "
            f"probabilities; the others, divided by {FLOW_SCALE:g}, are unit vectors pointing to "
            "each object's centre (cellpose-style flows)"
        )
    if _softmax_free(description):
        return (
            f"The output is logits of {names}: a softmax over all but the last channel gives "
            "class probabilities, a sigmoid of the last each pixel's distance to its nucleus' "
            "outline (1 at its centre)"
        )
    return f"The output is softmax probabilities of the classes {names}"


def _softmax_free(description: Any) -> bool:
    """Whether outputs stay logits: distance or flow channels cannot share the softmax."""
    return instance_source(description) in ("distance", "flows")


def _write_files(
    folder: Path, model: Model, test_input: np.ndarray, test_output: np.ndarray
) -> dict[str, Path]:
    """Write every file the package holds into ``folder``; return them by name."""
    import tifffile

    # Weights that float16 holds exactly (the built-ins') are stored so: half the bytes.
    state = model.network.state_dict()
    half = all(
        not v.is_floating_point() or torch.equal(v, v.half().float()) for v in state.values()
    )
    save_model(model, folder, half_precision=half)  # the card and safetensors, for napari-unet
    files = {name: folder / name for name in PACKAGE_FILES}
    torch.save(
        {k: v.half() if half and v.is_floating_point() else v for k, v in state.items()},
        files["weights.pt"],
    )
    script_unet(model.network).save(files["weights_torchscript.pt"])
    np.save(files["test_input.npy"], test_input)
    np.save(files["test_output.npy"], test_output)
    tifffile.imwrite(files["sample_input.tif"], test_input)
    tifffile.imwrite(files["sample_output.tif"], test_output)
    classes = class_channels(model.description)
    _write_cover(files["cover.png"], test_input, test_output[:, :classes])
    files["README.md"].write_text(_documentation(model), encoding="utf-8")
    return files


def _write_cover(path: Path, test_input: np.ndarray, test_output: np.ndarray) -> None:
    """Input beside the most likely class, 2:1, as the model zoo shows covers."""
    from imageio.v3 import imwrite

    image = test_input[0].mean(axis=0)
    classes = test_output[0].argmax(axis=0).astype(np.float32)
    if image.ndim == 3:  # a volume: its middle slice
        image, classes = image[image.shape[0] // 2], classes[classes.shape[0] // 2]
    low, high = np.percentile(image, DEFAULT_PERCENTILES)
    gray = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    labels = classes / max(1.0, float(test_output.shape[1] - 1))
    right = _fit(labels, gray.shape)
    imwrite(path, (255 * np.concatenate([gray, right], axis=1)).astype(np.uint8))


def _fit(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre ``image`` in ``shape`` (a ``"valid"`` network's output is smaller)."""
    canvas = np.zeros(shape, np.float32)
    pad = [(n - m) // 2 for n, m in zip(shape, image.shape, strict=True)]
    canvas[tuple(slice(p, p + m) for p, m in zip(pad, image.shape, strict=True))] = image
    return canvas


def _documentation(model: Model) -> str:
    """Write the model card (a built-in's README) plus how to run the package."""
    from napari_unet.core.models.registry import BUILTIN_DIR

    card_readme = BUILTIN_DIR / model.name / "README.md"
    description = model.description
    if card_readme.is_file():
        body = card_readme.read_text(encoding="utf-8")
    else:
        metrics = json.dumps(description.metrics, indent=2) if description.metrics else "none"
        body = (
            f"# {model.name}\n\n{description.description}\n\n## Model card\n\n```json\n"
            f"{json.dumps(description.to_dict(), indent=2)}\n```\n\n"
            f"## Validation\n\nMetrics recorded on the card: {metrics}\n"
        )
    return body + (
        "\n## bioimage.io package\n\n"
        f"Exported by napari-unet. {_output_words(description)}. Input: raw intensities, "
        "normalised by the "
        "preprocessing. napari-unet users get the full model back with "
        "`napari_unet.load_model('this.zip')`; the tiled engine handles any image size.\n"
    )


def _input_descr(v0_5: Any, network: UNet, description: Any, files: dict[str, Path]) -> Any:
    size = v0_5.ParameterizedSize(min=_min_size(network), step=network.size_multiple)
    settings = _export_normalization(description.normalization)
    spatial = _spatial_axes(network.spatial_dims)
    axes = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(channel_names=[f"channel{i}" for i in range(description.in_channels)]),
        *(v0_5.SpaceInputAxis(id=axis, size=size) for axis in spatial),
    ]
    return v0_5.InputTensorDescr(
        id=INPUT_ID,
        description="raw image intensities",
        axes=axes,
        test_tensor=v0_5.FileDescr(source=files["test_input.npy"]),
        sample_tensor=v0_5.FileDescr(source=files["sample_input.tif"]),
        preprocessing=_preprocessing(v0_5, settings, spatial),
    )


def _preprocessing(v0_5: Any, settings: dict[str, Any], spatial: tuple[str, ...]) -> list[Any]:
    """Our normalisation as spec preprocessing: per sample and channel, over space."""
    kind, axes = settings["kind"], list(spatial)
    if kind == "none":
        return []
    if kind == "meanstd":
        kwargs = v0_5.ZeroMeanUnitVarianceKwargs(axes=axes)
        return [v0_5.ZeroMeanUnitVarianceDescr(kwargs=kwargs)]
    low, high = (0.0, 100.0) if kind == "minmax" else (settings["low"], settings["high"])
    kwargs = v0_5.ScaleRangeKwargs(axes=axes, min_percentile=low, max_percentile=high)
    return [v0_5.ScaleRangeDescr(kwargs=kwargs)]


def _output_descr(v0_5: Any, network: UNet, description: Any, files: dict[str, Path]) -> Any:
    same = network.config.padding == "same"
    axes = [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=list(description.class_names))]
    for axis in _spatial_axes(network.spatial_dims):
        offset = 0 if same else -2 * network.context
        size = v0_5.SizeReference(tensor_id=INPUT_ID, axis_id=axis, offset=offset)
        if same and network.context > 0:
            axes.append(v0_5.SpaceOutputAxisWithHalo(id=axis, size=size, halo=network.context))
        else:
            axes.append(v0_5.SpaceOutputAxis(id=axis, size=size))
    if _softmax_free(description):
        what, postprocessing = (
            "logits: softmax the class channels; sigmoid a distance channel, or divide flow "
            f"channels by {FLOW_SCALE:g}",
            [],
        )
    else:
        what = "class probabilities"
        postprocessing = [v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis="channel"))]
    return v0_5.OutputTensorDescr(
        id=OUTPUT_ID,
        description=f"{what} ({description.output_kind} model)",
        axes=axes,
        test_tensor=v0_5.FileDescr(source=files["test_output.npy"]),
        sample_tensor=v0_5.FileDescr(source=files["sample_output.tif"]),
        postprocessing=postprocessing,
    )


def _weights_descr(v0_5: Any, network: UNet, files: dict[str, Path]) -> Any:
    version = torch.__version__.split("+")[0]
    architecture = v0_5.ArchitectureFromLibraryDescr(
        import_from="napari_unet.core.models.network",
        callable="UNet",
        kwargs=network.config.to_dict(),
    )
    return v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=files["weights.pt"], architecture=architecture, pytorch_version=version
        ),
        torchscript=v0_5.TorchscriptWeightsDescr(
            source=files["weights_torchscript.pt"],
            parent="pytorch_state_dict",
            pytorch_version=version,
        ),
    )
