"""The docks' option fields, labelled and explained by the engine's option tables.

Each field's label is its CLI flag's word and its tooltip the option's help, both read from
:class:`~napari_unet.core.predict.options.PredictOptions`' field metadata, as ``napari-unet
predict`` builds its flags; the dock adds only what is its own (what 0 means in a spin box,
which layers a picker applies to). Values are checked by the engine, once, when the dock makes
its one ``PredictOptions`` (:func:`prediction_options`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import Field
from typing import Any

from magicgui.widgets import ComboBox, SpinBox, Widget

from napari_unet.core.predict.options import PredictOptions, option_fields

DIAMETER_NOTE = "0 uses the image as it is"
AS_THE_CARD_SAYS = [("as the model's card says", None), ("on", True), ("off", False)]
"""An on/off option left to the model: ``None`` takes its card's choice."""
Table = Iterable[Field[Any]]
"""An options class's fields, with each option's flag and help in their metadata."""
UNITS = {"PX": "px", "MIN": "min"}
"""How a metavar reads as a unit in a field's label (``--tile PX``: ``tile (px)``)."""


def option_metadata(name: str, table: Table | None = None) -> Mapping[str, Any]:
    """Return the table's entry for option ``name`` (flag, help, metavar, choices).

    ``table`` is an options class's fields (the Train dock's: ``TrainOptions``); by default
    the prediction options.
    """
    for option in option_fields() if table is None else table:
        if option.name == name:
            return option.metadata
    raise KeyError(f"the option table has no option {name!r}")


def option_label(name: str, zero: str | None = None, table: Table | None = None) -> str:
    """Label a field with its flag's word and unit: ``tile (px, 0 = auto)``."""
    meta = option_metadata(name, table)
    notes = [UNITS[meta["metavar"]]] if meta.get("metavar") in UNITS else []
    notes += [f"0 = {zero}"] if zero else []
    word = meta["flag"].removeprefix("--")
    return f"{word} ({', '.join(notes)})" if notes else word


def option_tooltip(name: str, note: str = "", table: Table | None = None) -> str:
    """Return the option's help, with what the dock adds after it."""
    text = option_metadata(name, table)["help"]
    return f"{text}; {note}" if note else text


def option_field(
    name: str,
    widget: type[Widget],
    *,
    zero: str | None = None,
    note: str = "",
    table: Table | None = None,
    **kwargs: Any,
) -> Widget:
    """Make the field of option ``name``: its label and tooltip (and choices) from the table."""
    choices = option_metadata(name, table).get("choices")
    if choices and "choices" not in kwargs:
        kwargs["choices"] = list(choices)
    label, tooltip = option_label(name, zero, table), option_tooltip(name, note, table)
    return widget(label=label, tooltip=tooltip, **kwargs)


def prediction_fields(channel_choices: Any, device_choices: Any) -> dict[str, Widget]:
    """Make the dock's prediction fields, by the name the dock gives them."""
    return {
        "channel": option_field(
            "channel",
            ComboBox,
            choices=channel_choices,
            note="RGB layers: all channels (their mean for a one-channel model) or one",
        ),
        "diameter": option_field(
            "diameter", SpinBox, zero="as it is", min=0, max=10_000, note=DIAMETER_NOTE
        ),
        "device": option_field("device", ComboBox, choices=device_choices),
        "precision": option_field("precision", ComboBox),
        "tta": option_field("test_time_augmentation", ComboBox, choices=AS_THE_CARD_SAYS),
        "tile_size": option_field(
            "tile_shape",
            SpinBox,
            zero="auto",
            min=0,
            max=4096,
            step=16,
            note="0 takes what the memory allows",
        ),
        "overlap": option_field(
            "overlap",
            SpinBox,
            zero="auto",
            min=0,
            max=1024,
            note="0 follows the network's receptive field",
        ),
    }


def diameter_tooltip(model_name: str, diameter_px: float) -> str:
    """Say which object size a model was trained at, after the option's help."""
    return option_tooltip(
        "diameter", f"{model_name} was trained on objects of {diameter_px:g} px; {DIAMETER_NOTE}"
    )


def prediction_options(
    fields: Mapping[str, Widget], *, output: str, rgb: bool, sized: bool
) -> PredictOptions:
    """Make the one checked ``PredictOptions`` of the fields; raise the engine's ``ValueError``.

    A field a layer or model does not use gives nothing: the channel of a layer that is not
    RGB, the diameter of a model that states no training object size; 0 means "choose".
    """
    return PredictOptions(
        output=output,
        channel=fields["channel"].value if rgb else None,
        diameter=(fields["diameter"].value or None) if sized else None,
        device=fields["device"].value,
        precision=fields["precision"].value,
        test_time_augmentation=fields["tta"].value,
        tile_shape=fields["tile_size"].value or None,
        overlap=fields["overlap"].value or None,
    )
