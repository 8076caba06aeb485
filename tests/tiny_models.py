"""Tiny untrained models for the engine tests (imported by the tests and by conftest)."""

from __future__ import annotations

import torch

from napari_unet.core.models.model_types import DISTANCE_CHANNEL, FLOW_CHANNELS, INSTANCE_CLASSES
from napari_unet.core.models.network import UNetConfig
from napari_unet.core.models.registry import Model, ModelDescription


def make_model(
    *,
    spatial_dims: int = 2,
    padding: str = "same",
    depth: int = 2,
    in_channels: int = 1,
    output_kind: str = "semantic",
    norm: str = "batch",
    seed: int = 0,
) -> Model:
    """A small untrained model whose outputs still vary with the input.

    ``output_kind`` is ``"semantic"``, ``"instances"`` (three classes), ``"distance"`` (an
    instance model with the distance output) or ``"flows"`` (with one flow per spatial axis).
    """
    torch.manual_seed(seed)
    classes = {
        "instances": [*INSTANCE_CLASSES],
        "distance": [*INSTANCE_CLASSES, DISTANCE_CHANNEL],
        "flows": [*INSTANCE_CLASSES, *FLOW_CHANNELS[-spatial_dims:]],
    }.get(output_kind)
    if output_kind in ("distance", "flows"):
        output_kind = "instances"
    config = UNetConfig(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=len(classes) if classes else 2,
        depth=depth,
        base_channels=4,
        padding=padding,
        norm=norm,
    )
    description = ModelDescription(
        name=f"tiny-{spatial_dims}d-{padding}",
        architecture=config,
        output_kind=output_kind,
        **({"class_names": classes} if classes else {}),
    )
    model = Model.create(description)
    if norm == "batch":  # give batch norm non-trivial statistics, as after training
        for module in model.network.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    model.network.eval()
    return model
