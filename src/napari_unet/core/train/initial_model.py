"""The model a training run starts from: a fresh U-Net, or a copy of a model to fine-tune.

Fine-tuning keeps every learned weight it can: a model that gains outputs (a boundary model
that gains a distance, or semantic masks with more classes) keeps its features and the
outputs both share, and only the new outputs of its last layer start afresh.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from napari_unet.core.models.model_types import (
    DISTANCE_CHANNEL,
    FLOW_CHANNELS,
    INSTANCE_CLASSES,
)
from napari_unet.core.models.network import UNet, UNetConfig
from napari_unet.core.models.registry import Model, ModelDescription, load_model
from napari_unet.core.predict.postprocess import FLOW_DEFAULTS, INSTANCE_DEFAULTS, instance_source
from napari_unet.core.train.datasets import semantic_class_count
from napari_unet.names import (
    DEFAULT_PERCENTILES,
    REPRESENTATIONS,
    Representation,
    Target,
)

DEFAULT_NORMALIZATION = {
    "kind": "percentile",
    "low": DEFAULT_PERCENTILES[0],
    "high": DEFAULT_PERCENTILES[1],
    "rgb": "mean",
}


def representation_channels(representation: Representation, spatial_dims: int) -> list[str]:
    """Names of the outputs an instance representation adds after the three classes."""
    if representation == "distance":
        return [DISTANCE_CHANNEL]
    if representation == "flows":
        return list(FLOW_CHANNELS[-spatial_dims:])
    return []


def instance_defaults(representation: Representation | None) -> dict[str, Any]:
    """Return the post-processing settings a new instance model starts with, until tuned."""
    return dict(FLOW_DEFAULTS if representation == "flows" else INSTANCE_DEFAULTS)


def initial_model(
    base_model: str | os.PathLike[str] | Model | None,
    architecture: UNetConfig | dict[str, Any] | None,
    target: Target,
    masks: list[np.ndarray],
    sparse: bool,
    class_names: Sequence[str] | None,
    name: str,
    representation: Representation | None = None,
) -> Model:
    """Choose the model to start from: a copy of ``base_model`` renamed, or a fresh network.

    ``target`` and ``representation`` come checked (:class:`~.options.TrainOptions`).
    """
    base = load_model(base_model) if base_model is not None else None
    if base is not None and target == "instances" and base.description.output_kind != "instances":
        raise ValueError(f"base model {base.name!r} is semantic; it cannot learn instances")
    if target == "instances" and representation is None:
        # the base model's, else the better one in-domain
        inherited = instance_source(base.description) if base is not None else None
        representation = inherited if inherited in REPRESENTATIONS else "boundaries"
    names = _output_names(base, target, masks, sparse, class_names, representation)
    if base is not None:
        return _fine_tuning_copy(base, target, names, name)
    return _new_model(architecture, target, masks, names, name, representation)


def _output_names(
    base: Model | None,
    target: Target,
    masks: list[np.ndarray],
    sparse: bool,
    class_names: Sequence[str] | None,
    representation: Representation | None,
) -> list[str]:
    """Name the outputs: instance classes and their representation's, or semantic classes."""
    if target == "instances":
        assert representation is not None
        return [*INSTANCE_CLASSES, *representation_channels(representation, masks[0].ndim)]
    needed = semantic_class_count(masks, sparse)
    if class_names is not None:
        if needed > len(class_names):
            raise ValueError(
                f"the masks hold {needed} classes but class_names names {len(class_names)}: "
                f"{list(class_names)}"
            )
        return list(class_names)
    inherited = base.description.class_names if base is not None else []
    return list(inherited) if len(inherited) >= needed else [f"class {k}" for k in range(needed)]


def _fine_tuning_copy(base: Model, target: Target, names: list[str], name: str) -> Model:
    """Copy ``base`` under ``name``; outputs that change start afresh, shared ones are kept."""
    card = ModelDescription.from_dict(base.description.to_dict())
    state = base.network.state_dict()
    kept_head: dict[str, Any] = {}
    if card.architecture.out_channels != len(names):
        # other outputs: keep the learned features and the outputs both models share
        # (the classes of a boundary model that gains a distance), start the rest afresh
        common = min(len(card.class_names), len(names))
        shared = target == "instances" and card.class_names[:common] == names[:common]
        card.architecture = UNetConfig.from_dict(
            {**card.architecture.to_dict(), "out_channels": len(names)}
        )
        kept_head = {k: v[:common] for k, v in state.items() if k.startswith("head.") and shared}
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    card.class_names = names
    network = UNet(card.architecture)
    network.load_state_dict(state, strict=False)
    with torch.no_grad():
        for key, value in kept_head.items():
            network.get_parameter(key)[: len(value)] = value
    card.name, card.metrics = name, {}
    card.provenance = {**card.provenance, "fine_tuned_from": base.name}
    return Model(card, network)


def _new_model(
    architecture: UNetConfig | dict[str, Any] | None,
    target: Target,
    masks: list[np.ndarray],
    names: list[str],
    name: str,
    representation: Representation | None,
) -> Model:
    """Build a fresh network: depth 4 (3 in 3D), 16 base channels, same padding, batch norm."""
    spatial_dims = 3 if masks[0].ndim == 3 else 2
    defaults = {
        "spatial_dims": spatial_dims,
        "in_channels": 1,
        "out_channels": len(names),
        "depth": 4 if spatial_dims == 2 else 3,
        "base_channels": 16,
        "padding": "same",
        "norm": "batch",
    }
    if isinstance(architecture, UNetConfig):
        architecture = architecture.to_dict()
    config = UNetConfig.from_dict({**defaults, **(architecture or {})})
    card = ModelDescription(
        name=name,
        architecture=config,
        output_kind="instances" if target == "instances" else "semantic",
        class_names=names,
        normalization=dict(DEFAULT_NORMALIZATION),
        postprocess=instance_defaults(representation) if target == "instances" else {},
        provenance={"trained_with": "napari_unet.core.train.loop.train"},
    )
    return Model.create(card)
