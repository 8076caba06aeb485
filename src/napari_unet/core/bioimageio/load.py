"""Load a bioimage.io model package as a :class:`Model` the tiled engine runs.

Safe by default: napari-unet's own packages load from their safetensors attachment and card,
foreign ones from ``torchscript`` (TorchScript code run by torch, no Python unpickling).
``pytorch_state_dict`` weights are a pickle and need architecture code imported or run from
the package, so they load only with ``allow_pickle=True``. Every package first passes the
checks of :mod:`napari_unet.core.bioimageio.package` (bounded, local, no download), and its
size rules are checked before any tensor is made.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core.bioimageio import CONFIG_KEY, require_bioimageio
from napari_unet.core.bioimageio.adapter import PackagedNetwork, SizeRule, from_layout
from napari_unet.core.bioimageio.package import CheckedPackage, checked_package
from napari_unet.core.bioimageio.processing import (
    UnsupportedPackage,
    input_steps,
    output_rule,
)
from napari_unet.core.models.card_checks import INT_RANGES, check_weights, read_card
from napari_unet.core.models.model_types import Model, ModelDescription, network_from_weights
from napari_unet.core.models.network import UNetConfig

RUNNABLE = ("torchscript", "pytorch_state_dict")
MAX_AXIS_SIZE = 4096
"""Largest input ``min`` or ``step`` per axis accepted: tiles are sized in the hundreds."""
MAX_TILE_PIXELS = 2**26
"""Largest smallest-input a package may ask for (``min ** dims``): 256 MB per float channel."""
NATIVE = "napari-unet"
"""Pseudo weight format: the safetensors attachment of a package napari-unet exported."""


def load_bioimageio(
    source: str | os.PathLike[str],
    device: str = "cpu",
    *,
    weight_format: str | None = None,
    allow_pickle: bool = False,
    output_channel: int | None = None,
) -> Model:
    """Load a bioimage.io model (``.zip``, folder or its ``rdf.yaml``) for the tiled engine.

    Parameters
    ----------
    weight_format
        ``"napari-unet"``, ``"torchscript"`` or ``"pytorch_state_dict"``; by default the
        first of these the package has (state dicts only with ``allow_pickle``).
    allow_pickle
        Load ``pytorch_state_dict`` weights: a pickle, and architecture code from the
        package or an installed library. Only for packages you trust.
    output_channel
        For outputs of several independent channels (e.g. foreground and boundaries), the
        one segmented as the foreground.
    """
    require_bioimageio()
    from bioimageio.spec.model import v0_5

    with checked_package(source) as package:
        descr = _description(package)
        if not isinstance(descr, v0_5.ModelDescr):
            raise ValueError(
                f"{source} is not a valid bioimage.io model: {descr.validation_summary}"
            )
        fmt = _weight_format(descr, weight_format, allow_pickle, source)
        if fmt == NATIVE:
            return _native(package, descr, device)
        try:
            return _foreign(package, descr, fmt, device, output_channel)
        except UnsupportedPackage as error:
            raise UnsupportedPackage(f"cannot run bioimage.io model {source}: {error}") from None


def _description(package: CheckedPackage) -> Any:
    """Build the description from the checked content: local root, no I/O checks, no cache.

    ``bioimageio.spec`` fetches a URL it is given (and checks hashes only with I/O checks
    on); it gets only the content :func:`checked_package` cleared, so it has nothing to fetch.
    """
    from bioimageio.spec import ValidationContext, build_description

    context = ValidationContext(
        root=package.root,
        file_name=package.rdf_name,
        perform_io_checks=False,
        disable_cache=True,
        log_warnings=False,
    )
    try:
        return build_description(package.content, context=context, format_version="latest")
    except Exception as error:
        raise ValueError(f"{package.source} is not a valid bioimage.io model: {error}") from error


def _weight_format(descr: Any, wanted: str | None, allow_pickle: bool, source: Any) -> str:
    """Pick the weights to load, refusing pickles without ``allow_pickle``."""
    present = [name for name in RUNNABLE if getattr(descr.weights, name) is not None]
    if _native_files(descr):
        present.insert(0, NATIVE)
    if wanted is not None:
        if wanted not in present:
            raise UnsupportedPackage(
                f"{source} has no {wanted!r} weights; it has {', '.join(present) or 'none'}"
            )
        present = [wanted]
    for name in present:
        if name != "pytorch_state_dict" or allow_pickle:
            return name
    if present:
        raise PermissionError(
            f"the pytorch_state_dict weights of {source} are a pickle, loaded with code the "
            "package names; pass allow_pickle=True only if you trust the package"
        )
    others = [name for name, entry in descr.weights if entry is not None]
    raise UnsupportedPackage(
        f"cannot run bioimage.io model {source}: napari-unet runs {' or '.join(RUNNABLE)} "
        f"weights; it has {', '.join(others)}"
    )


def _native_files(descr: Any) -> dict[str, Any] | None:
    """Find the card and safetensors attachments of a package napari-unet exported."""
    config = (descr.config.model_extra or {}).get(CONFIG_KEY)
    if not isinstance(config, dict):
        return None
    attached = {_file_name(item.source): item for item in descr.attachments}
    names = (config.get("card"), config.get("weights"))
    if not all(name in attached for name in names):
        return None
    return {"card": attached[names[0]], "weights": attached[names[1]]}


def _file_name(source: Any) -> str:
    return str(getattr(source, "path", source)).replace("\\", "/").rsplit("/", 1)[-1]


def _native(package: CheckedPackage, descr: Any, device: str) -> Model:
    """Load our own package: the exact card and weights we exported, no pickle involved.

    The card and weights pass the checks of a model folder's (``core.card_checks``).
    """
    files = _native_files(descr)
    assert files is not None
    card = package.local_path(files["card"], "the napari-unet card attachment")
    weights = package.local_path(files["weights"], "the napari-unet weights attachment")
    try:
        description = ModelDescription.from_dict(read_card(card))
        check_weights(weights, description.architecture)
        network = network_from_weights(description.architecture, weights, device)
    except Exception as error:  # json, card and safetensors each raise their own types
        raise ValueError(
            f"the napari-unet model inside {package.source} is invalid: {error}"
        ) from error
    return Model(description, network)


def _foreign(
    package: CheckedPackage, descr: Any, fmt: str, device: str, channel: int | None
) -> Model:
    source = package.source
    if len(descr.inputs) != 1:
        raise UnsupportedPackage(f"it has {len(descr.inputs)} inputs; napari-unet runs one")
    tensor_in, tensor_out = descr.inputs[0], descr.outputs[0]
    spatial = _spatial(tensor_in, "input")
    channels_in = _channels(tensor_in, "input")
    layout_in = [str(a.id) for a in tensor_in.axes]
    layout_out = [str(a.id) for a in tensor_out.axes]
    if _spatial(tensor_out, "output") != spatial:
        raise UnsupportedPackage(f"output axes {layout_out} do not match input axes {layout_in}")
    sizes = _size_rule(tensor_in, tensor_out, spatial)  # checked before any tensor is made
    channels_out = _channels(tensor_out, "output")
    normalization, fixed = input_steps(tensor_in.preprocessing, spatial, channels_in)
    test_output = (
        None
        if tensor_out.test_tensor is None
        else _canonical(_load_array(package, tensor_out.test_tensor), layout_out, spatial)
    )
    rule = output_rule(tensor_out.postprocessing, channels_out, test_output, channel)
    classes = rule.classes or channels_out
    module = _load_module(package, descr, fmt, device)
    config = UNetConfig(
        spatial_dims=len(spatial),
        in_channels=channels_in,
        out_channels=classes,
        depth=0,
        base_channels=_first_width(module, len(spatial)),
        padding="same" if sizes.same else "valid",  # the engine tiles by this
    )
    batch = next((a for a in tensor_in.axes if str(a.type) == "batch"), None)
    network = PackagedNetwork(
        module,
        config,
        sizes,
        (layout_in, layout_out),
        fixed,
        rule,
        batch_of_one=batch is None or batch.size == 1,
    )
    names = _class_names(tensor_out, classes, rule.classes is not None)
    description = ModelDescription(
        name=descr.name,
        architecture=config,
        class_names=names,
        normalization=normalization,
        description=descr.description,
        provenance={"bioimageio": {"source": str(source), "weights": fmt, "id": _id(descr)}},
    )
    return Model(description, network.eval())


def _id(descr: Any) -> str | None:
    """Return the package's bioimage.io id (e.g. ``affable-shark``), if it has one."""
    return None if descr.id is None else str(descr.id)


def _spatial(tensor: Any, which: str) -> tuple[str, ...]:
    """Name the tensor's spatial axes (``y, x`` or ``z, y, x``); refuse time and index axes."""
    spatial = []
    for axis in tensor.axes:
        kind = str(axis.type)
        if kind == "space":
            spatial.append(str(axis.id))
        elif kind not in ("batch", "channel"):
            raise UnsupportedPackage(f"its {which} has a {kind} axis ({axis.id})")
    if sorted(spatial) not in (["x", "y"], ["x", "y", "z"]):
        raise UnsupportedPackage(f"its {which} has spatial axes {spatial}; expected y, x (and z)")
    return ("z", "y", "x")[-len(spatial) :]


def _channels(tensor: Any, which: str) -> int:
    """Count the tensor's channels, refusing more than a model card may have."""
    axis = next((a for a in tensor.axes if str(a.type) == "channel"), None)
    count = 1 if axis is None else len(axis.channel_names)
    limit = INT_RANGES["in_channels" if which == "input" else "out_channels"][1]
    if count > limit:
        raise UnsupportedPackage(f"its {which} has {count} channels; napari-unet runs {limit}")
    return count


def _class_names(tensor: Any, classes: int, single: bool) -> list[str]:
    if single:
        return ["background", "foreground"]
    axis = next(a for a in tensor.axes if str(a.type) == "channel")
    return [str(name) for name in axis.channel_names][:classes]


def _size_rule(tensor_in: Any, tensor_out: Any, spatial: tuple[str, ...]) -> SizeRule:
    """One size rule for all spatial axes, from the input's and output's axis sizes."""
    inputs = {str(a.id): a for a in tensor_in.axes}
    outputs = {str(a.id): a for a in tensor_out.axes}
    rules = set()
    for name in spatial:
        size, out = inputs[name].size, outputs[name]
        if isinstance(size, int):
            size_min, step = size, None
        else:
            size_min, step = size.min, size.step
        if step is None:
            raise UnsupportedPackage(
                f"input axis {name} has the fixed size {size_min}; the tiled engine needs "
                "sizes min + n * step"
            )
        reference = out.size
        if isinstance(reference, int) or str(reference.axis_id) != name or out.scale != 1:
            raise UnsupportedPackage(f"output axis {name} is not the input's {name} at scale 1")
        if reference.offset % 2:
            raise UnsupportedPackage(f"output axis {name} has an odd offset {reference.offset}")
        rules.add(SizeRule(size_min, step, reference.offset, getattr(out, "halo", 0)))
    if len(rules) != 1:
        raise UnsupportedPackage(f"its spatial axes have different size rules: {rules}")
    rule = rules.pop()
    check_size_rule(rule, len(spatial))
    return rule


def check_size_rule(rule: SizeRule, dims: int) -> None:
    """Refuse sizes no tile can meet, before any tensor is made (names the field at fault)."""
    for field, value, low in (("min", rule.min, 1), ("step", rule.step, 1), ("halo", rule.halo, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UnsupportedPackage(
                f"its input size {field} {value!r} is not a whole number >= {low}"
            )
    if not isinstance(rule.offset, int) or isinstance(rule.offset, bool):
        raise UnsupportedPackage(f"its output size offset {rule.offset!r} is not a whole number")
    largest = max(rule.min, rule.step, rule.halo, abs(rule.offset))
    if largest > MAX_AXIS_SIZE or rule.min**dims > MAX_TILE_PIXELS:
        raise UnsupportedPackage(
            f"its sizes (min {rule.min}, step {rule.step}, halo {rule.halo}, offset "
            f"{rule.offset}) ask for tiles larger than napari-unet makes ({MAX_AXIS_SIZE} "
            f"per axis, {MAX_TILE_PIXELS} pixels)"
        )
    if rule.min + rule.offset - (0 if rule.same else 2 * rule.halo) <= 0:
        raise UnsupportedPackage(
            f"its halo {rule.halo} and offset {rule.offset} leave no output pixel of its "
            f"smallest input {rule.min}"
        )


def _load_array(package: CheckedPackage, file: Any) -> np.ndarray:
    """Read a ``.npy`` test tensor without unpickling, after checking its header's size."""
    data = package.read(file, "the output test tensor")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(stream)
    except (ValueError, TypeError) as error:
        raise UnsupportedPackage(f"its output test tensor is not a .npy array: {error}") from None
    declared = math.prod(shape) * dtype.itemsize
    if declared > len(data) - stream.tell():
        raise UnsupportedPackage(
            f"its output test tensor declares shape {shape} ({declared} bytes) in a file of "
            f"{len(data)} bytes"
        )
    stream.seek(0)
    return np.load(stream, allow_pickle=False)


def _canonical(array: np.ndarray, layout: list[str], spatial: tuple[str, ...]) -> np.ndarray:
    """Bring an array in ``layout`` to ``(batch, channel, *spatial)``."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return from_layout(tensor, layout, ("batch", "channel", *spatial)).numpy()


def _load_module(package: CheckedPackage, descr: Any, fmt: str, device: str) -> nn.Module:
    """Load the packaged module from files checked to be in the package (and their hashes)."""
    if fmt == "torchscript":
        data = io.BytesIO(package.read(descr.weights.torchscript, "weights.torchscript"))
        return torch.jit.load(data, map_location=device).eval()
    from bioimageio.core.backends.pytorch_backend import load_torch_model

    weights = descr.weights.pytorch_state_dict
    package.local_path(weights, "weights.pytorch_state_dict")
    if hasattr(weights.architecture, "source"):  # code from a file: checked like the weights
        package.local_path(weights.architecture, "weights.pytorch_state_dict.architecture")
    return load_torch_model(weights, devices=[device]).eval()


def _first_width(module: nn.Module, dims: int) -> int:
    """Guess the base width (the first convolution's): the engine's memory estimate uses it."""
    for parameter in module.parameters():
        if parameter.ndim == dims + 2:
            return max(1, min(512, int(parameter.shape[0])))
    return 32
