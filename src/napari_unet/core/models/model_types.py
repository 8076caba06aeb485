"""The model and its card: what every loader returns (napari-unet folders, bioimage.io packages).

Kept apart from the registry (:mod:`napari_unet.core.models.registry`), so that importers of other
formats build models without importing the registry that dispatches to them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from safetensors.torch import load_file

from napari_unet.core.models.card_checks import check_finite
from napari_unet.core.models.network import UNet, UNetConfig
from napari_unet.names import DEFAULT_PERCENTILES

FORMAT_VERSION = 1

OutputKind = Literal["semantic", "instances"]

INSTANCE_CLASSES = ("background", "interior", "boundary")
"""The classes every instance model outputs first."""
DISTANCE_CHANNEL = "distance"
"""Name of the extra output of *distance* instance models (each pixel's distance to its outline)."""

FLOW_CHANNELS = ("flow_z", "flow_y", "flow_x")
"""Names of the extra outputs of *flows* models, the last ``spatial_dims`` of them: vectors
to each object's centre (the gradient of ``core.train.targets.center_potential``)."""
FLOW_SCALE = 5.0
"""Flows models output unit flows times this (as cellpose does), so errors weigh in the loss."""


@dataclass
class ModelDescription:
    """The model card: what the network expects, what it outputs, and where it came from.

    ``output_kind="instances"`` means the network outputs three classes
    (background, interior, boundary), and for *distance* models a fourth channel (each
    pixel's distance to its object's outline) or for *flows* models one channel per spatial
    axis (vectors to each object's centre), that post-processing turns into one label per
    object.
    ``normalization`` is e.g. ``{"kind": "percentile", "low": 1.0, "high": 99.8}``.
    ``postprocess`` holds tuned thresholds so every front end uses the same ones.
    ``object_diameter_px`` is the typical object size in the training images (median
    equivalent diameter, pixels): a ``diameter`` at prediction rescales images to it.
    ``test_time_augmentation``: prediction averages over the eight flips and transposes of
    the YX plane by default (8x the time), set where that measured better.
    """

    name: str
    architecture: UNetConfig
    output_kind: OutputKind = "semantic"
    class_names: list[str] = field(default_factory=lambda: ["background", "foreground"])
    normalization: dict[str, Any] = field(
        default_factory=lambda: {
            "kind": "percentile",
            "low": DEFAULT_PERCENTILES[0],
            "high": DEFAULT_PERCENTILES[1],
        }
    )
    postprocess: dict[str, Any] = field(default_factory=dict)
    pixel_size_um: float | None = None
    object_diameter_px: float | None = None
    test_time_augmentation: bool = False
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.output_kind not in ("semantic", "instances"):
            raise ValueError(
                f"output_kind must be 'semantic' or 'instances', not {self.output_kind!r}"
            )
        if len(self.class_names) != self.architecture.out_channels:
            raise ValueError(
                f"model {self.name!r} names {len(self.class_names)} classes but its network "
                f"outputs {self.architecture.out_channels} channels"
            )
        flows = 3 + self.architecture.spatial_dims
        if self.output_kind == "instances" and self.architecture.out_channels not in (3, 4, flows):
            raise ValueError(
                "an 'instances' model must output 3 channels (background, interior, boundary), "
                f"4 with a distance to the objects' outlines, or {flows} with flows"
            )

    @property
    def spatial_dims(self) -> int:
        """2 for a 2D model, 3 for a 3D model."""
        return self.architecture.spatial_dims

    @property
    def in_channels(self) -> int:
        """Number of image channels the network expects."""
        return self.architecture.in_channels

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        values = asdict(self)
        values["architecture"] = self.architecture.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelDescription:
        """Build from a parsed ``model.json``."""
        version = values.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"model format version {version} is newer than this napari-unet supports "
                f"({FORMAT_VERSION}); upgrade napari-unet"
            )
        known = {f.name for f in fields(cls)}
        kwargs = {key: value for key, value in values.items() if key in known}
        kwargs["architecture"] = UNetConfig.from_dict(values["architecture"])
        return cls(**kwargs)


@dataclass
class Model:
    """A network together with its card; what ``load_model`` returns."""

    description: ModelDescription
    network: UNet

    @property
    def name(self) -> str:
        """The model's name as shown in model lists."""
        return self.description.name

    @classmethod
    def create(cls, description: ModelDescription) -> Model:
        """Initialise a fresh network for ``description`` (for training from scratch)."""
        return cls(description, UNet(description.architecture))


def network_from_weights(architecture: UNetConfig, weights: Path, device: str) -> UNet:
    """Build ``architecture``'s network from a safetensors file: plain tensors, none unpickled.

    Every tensor must be finite; a model folder and napari-unet's own bioimage.io package load
    their weights through here alike.
    """
    state = load_file(weights, device=device)
    check_finite(state)
    network = UNet(architecture)
    network.load_state_dict(state)
    return network.to(device).eval()
