"""napari layer data to and from the core engine, without Qt.

The reader, the sample data, the Segment dock and scripted sessions share this module, so each
front end makes layers the same way (where they sit: :mod:`.placement`; training on painted
layers: :mod:`.training_layers`).

:func:`segment_layer` is the documented scripted-session entry point (also
``napari_unet.segment_layer``): it segments an Image layer with
:func:`napari_unet.core.predict.segment` and returns a napari ``LayerDataTuple`` placed exactly
over the image (same scale, translate and affine), so
``viewer.add_layer(Layer.create(*segment_layer(layer)))`` or a magicgui function returning
``napari.types.LayerDataTuple`` shows it where it belongs.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet._napari.model_choices import model_label
from napari_unet._napari.placement import (
    Mode,
    Placement,
    file_placement,
    layer_axes,
    layer_placement,
    plane_through,
)
from napari_unet.core.io import OmeZarrImage
from napari_unet.core.predict.options import PredictOptions, with_options
from napari_unet.core.progress import CancelToken, ProgressCallback
from napari_unet.core.provenance import KEY as PROVENANCE_KEY
from napari_unet.core.provenance import provenance_record
from napari_unet.names import DEFAULT_MODEL, Output, image_stem

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_unet.core.io import ImageFile
    from napari_unet.core.models.registry import Model, ModelDescription

LayerDataTuple = tuple[Any, dict[str, Any], str]

RESULT_SUFFIXES = {"semantic": " classes", "probabilities": " probabilities"}
"""What follows ``<image> (<model>)`` in a result's name; instances have no suffix."""

BACKGROUND_CLASS = "background"

CLASS_COLORS = ("green", "magenta", "cyan", "yellow", "red", "blue")
"""Colours of the classes in class order: napari colormaps for probability layers, their
brightest colour for semantic labels, so a class has one colour in both."""


def image_file_layer(image: ImageFile) -> LayerDataTuple:
    """Make an Image layer (channels split, or RGB) or, for label images, a Labels layer.

    An OME-Zarr with several resolution levels becomes a multiscale layer of its lazy levels.
    """
    meta = {"name": image_stem(image.path), **file_placement(image).meta()}
    axes = image.axes.upper()
    data = image.data
    if isinstance(image, OmeZarrImage) and len(image.levels[image.level :]) > 1:
        data, meta["multiscale"] = image.levels[image.level :], True
    if image.is_labels:
        return data, meta, "labels"
    if "C" in axes:
        channels = image.data.shape[axes.index("C")]
        if axes.endswith("C") and channels in (3, 4) and image.data.dtype == np.uint8:
            meta["rgb"] = True
        else:
            meta["channel_axis"] = axes.index("C")
    return data, meta, "image"


def result_layer(
    result: Any,
    output: Output,
    name: str,
    placement: Placement,
    description: ModelDescription | None = None,
) -> LayerDataTuple:
    """Show labels as a Labels layer, probabilities as an Image layer with a leading class axis.

    A list of arrays (the levels of a label pyramid) becomes a multiscale Labels layer.
    Semantic labels get one colour per class (see :func:`class_display`) from ``description``.
    """
    if output == "probabilities":
        meta = {"name": name, **placement.with_leading_axis("class").meta()}
        return result, {**meta, "colormap": "magma", "contrast_limits": (0.0, 1.0)}, "image"
    meta = {"name": name, **placement.meta()}
    if isinstance(result, list):
        meta["multiscale"] = True
    if output == "semantic" and description is not None:
        meta.update(class_display(description))
    return result, meta, "labels"


def result_name(image_name: str, model_name: str, output: str) -> str:
    """Name a result after its image, its model and its kind of output.

    Each kind keeps its own layer: switching between instances and semantic output then
    adds the other layer instead of overwriting the first.
    """
    return f"{image_name} ({model_name}){RESULT_SUFFIXES.get(output, '')}"


def semantic_class_names(description: ModelDescription) -> list[str]:
    """Name the classes of semantic labels (a distance model's last output is no class)."""
    from napari_unet.core.predict.postprocess import class_channels

    return list(description.class_names[: class_channels(description)])


def is_background(class_name: str) -> bool:
    """Whether a class means "nothing here", drawn transparent like napari's label 0."""
    return class_name == BACKGROUND_CLASS


def class_display(description: ModelDescription) -> dict[str, Any]:
    """Colour every class of semantic labels, class 0 included when it is not background.

    napari draws a Labels layer's background value transparent, 0 unless told otherwise, so
    ``em-membranes`` (0 = membrane) would show no membranes. The data keep the engine's class
    values (as the CLI and the API write them); the background value moves to the background
    class, or past the last class when there is none, and ``features`` name each class (napari
    shows the name under the cursor).
    """
    from napari.utils.colormaps import DirectLabelColormap, ensure_colormap

    names = semantic_class_names(description)
    colors = {
        value: "transparent"
        if is_background(name)
        else ensure_colormap(CLASS_COLORS[value % len(CLASS_COLORS)]).colors[-1]
        for value, name in enumerate(names)
    }
    background = next((v for v, name in enumerate(names) if is_background(name)), len(names))
    return {
        "colormap": DirectLabelColormap(
            color_dict={**colors, None: "transparent"}, background_value=background
        ),
        "features": {"index": list(range(len(names))), "class": names},
    }


def segment_layer(
    layer: Image,
    model: str | Path | Model = DEFAULT_MODEL,
    *,
    options: PredictOptions | None = None,
    mode: Mode | None = None,
    level: int = 0,
    position: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    store: str | Path | None = None,
    **changes: Any,
) -> LayerDataTuple:
    """Segment a napari Image layer and return the result as a ``LayerDataTuple``.

    Scripted sessions and the Segment widget both call this, so a script reproduces exactly
    what the widget shows. The result is named ``"<image> (<model>)"`` for instances, with
    `` classes`` or `` probabilities`` after it for the other outputs (:func:`result_name`),
    placed over the image (same scale, translate and affine, times the level's downsampling
    for multiscale), and its ``metadata["napari_unet"]`` holds the provenance record (model,
    version, options, source layer) that the plugin's writer saves beside the file.

    Parameters
    ----------
    layer
        An Image layer; numpy, dask or zarr data are all read lazily by the engine, tile by tile.
    model
        A built-in or saved model name, a model folder, or a loaded :class:`Model`.
    options, changes
        A :class:`~napari_unet.core.predict.options.PredictOptions` and any of its fields as
        keywords on top (``output``, ``channel``, ``diameter``, ``device``, ``tile_shape``...),
        checked by the engine before the model loads. ``output="probabilities"`` gives an
        Image layer with a leading class axis.
    mode
        ``"2D"`` segments each plane on its own; ``"3D"`` treats the axis before Y as Z, so
        objects keep one label across slices. ``None`` follows the layer's axis labels.
    level
        For a multiscale layer, which level to segment (0 = full resolution).
    position
        A world position (e.g. ``viewer.dims.point``): segment only the plane (2D) or volume
        (3D) through it, as a quick preview on big stacks. ``None`` segments everything.
    progress, cancel
        Passed to :func:`napari_unet.core.predict.segment`.
    store
        For a multiscale layer, the OME-Zarr path (``.ome.zarr``) that receives the labels
        (default: a temporary folder, deleted when Python exits). Labels of a multiscale layer
        are written there block by block and come back as a lazy multiscale Labels layer, so
        the full level is never held in memory (probabilities and previews still are).
    """
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.predict.predictor import segment

    options = with_options(options, changes)  # the engine's checks, before the model loads
    label = model_label(model)
    model = load_model(model)  # once, for the engine and the result's name and colours
    data = layer.data[level] if layer.multiscale else layer.data
    axes = layer_axes(layer, mode)
    placement = layer_placement(layer, level)
    if position is not None:
        data, placement = plane_through(layer, data, axes, placement, level, position)
    record = provenance_record(model, options, layer.name, axes)
    run = {"options": options, "axes": axes, "progress": progress, "cancel": cancel}
    if layer.multiscale and position is None and options.output != "probabilities":
        result = segment_into_pyramid(data, model, placement, store, record, **run)
    else:
        result = segment(data, model, **run)
    kind = model.description.output_kind if options.output == "labels" else options.output
    name = result_name(layer.name, label, kind)
    data, meta, layer_kind = result_layer(result, kind, name, placement, model.description)
    return data, {**meta, "metadata": {PROVENANCE_KEY: record}}, layer_kind


def segment_into_pyramid(
    data: Any,
    model: str | Path | Model,
    placement: Placement,
    store: str | Path | None,
    provenance: dict[str, Any] | None = None,
    **run: Any,
) -> Any:
    """Segment into a new OME-Zarr label image; return its levels, or its one level if small.

    Levels are lazy zarr arrays. The engine writes level 0 through ``out=`` block by block
    and the pyramid is built one chunk at a time, so memory stays bounded at any image size.
    ``provenance`` goes into the label image's attributes, as the CLI writes it.
    """
    from napari_unet.core.io import create_labels
    from napari_unet.core.predict.predictor import segment

    axes = run["axes"]
    label_axes = axes.replace("C", "")
    shape = tuple(n for n, letter in zip(data.shape, axes, strict=True) if letter != "C")
    pixel_size_um = {
        letter: scale
        for letter, scale, unit in zip(label_axes, placement.scale, placement.units, strict=True)
        if letter in "ZYX" and unit == "micrometer"
    }
    target = Path(store) if store is not None else _temporary_store()
    with create_labels(target, shape, label_axes, pixel_size_um=pixel_size_um) as labels:
        segment(data, model, out=labels.array, **run)
        levels = labels.finish(provenance)
    return levels if len(levels) > 1 else levels[0]


def _temporary_store() -> Path:
    """Make a folder for one result's labels, deleted when Python exits (layers read it)."""
    folder = Path(tempfile.mkdtemp(prefix="napari-unet-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder / "labels.ome.zarr"
