"""Reproduce the two built-in models from ../shared/data (resumable; run from the repo root).

    python scripts/train_builtin_models.py train em-membranes   # checkpoints in runs/em-membranes
    python scripts/train_builtin_models.py train nuclei   # after its stages (see RECIPES)
    python scripts/train_builtin_models.py export nuclei   # tune, evaluate, write the package copy
    python scripts/train_builtin_models.py train unseen-distance   # the "unseen kind" split

``train`` resumes from ``runs/<name>/last.pt`` when it exists. ``export`` takes the best
checkpoint, tunes the post-processing thresholds on the validation split, measures the
validation metrics and writes ``src/napari_unet/models/<name>/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet.core.models.registry import Model, load_model, save_model
from napari_unet.core.models.widen import widen
from napari_unet.core.train.augment import Augmenter
from napari_unet.core.train.checkpoint import BEST_DIR, CHECKPOINT_FILE
from napari_unet.core.train.loop import TrainingProgress, train

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
RUNS = Path(os.environ.get("NAPARI_UNET_RUNS", REPO / "runs"))
"""Checkpoints of every run (``NAPARI_UNET_RUNS`` puts them elsewhere, e.g. outside the repo)."""
PACKAGE_MODELS = REPO / "src" / "napari_unet" / "models"
SCRIPT = "python scripts/train_builtin_models.py"
NETWORK = {"depth": 4, "padding": "same", "norm": "batch"}


def isbi_split(split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """ISBI 2012 slices 0-24 (train) or 25-29 (val); labels 0 = membrane, 1 = interior."""
    volume = tifffile.imread(DATA / "isbi2012" / "train-volume.tif")
    labels = (tifffile.imread(DATA / "isbi2012" / "train-labels.tif") > 127).astype(np.uint8)
    slices = range(25) if split == "train" else range(25, 30)
    return [volume[z] for z in slices], [labels[z] for z in slices]


def isbi_train_val() -> tuple[tuple[list, list], tuple[list, list]]:
    """The EM recipes' data: training slices 0-24 and validation slices 25-29."""
    return isbi_split("train"), isbi_split("val")


def dsb_split(split: str) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """DSB 2018 images, instance masks and modality names of one split."""
    with open(DATA / "dsb2018" / "index.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    folder = DATA / "dsb2018" / split
    images = [tifffile.imread(folder / "images" / f"{row['id']}.tif") for row in rows]
    masks = [tifffile.imread(folder / "masks" / f"{row['id']}.tif") for row in rows]
    return images, masks, [row["modality"] for row in rows]


def sampled(pairs: tuple[list, list], count: int) -> tuple[list, list]:
    """Every n-th pair, ``count`` in all: a smaller validation set to pick epochs with."""
    step = max(1, len(pairs[0]) // count)
    return pairs[0][::step][:count], pairs[1][::step][:count]


UNSEEN_KIND = "histology"
"""The "unseen kind" split: models trained without these images are scored on all of them."""


def dsb_without_unseen_kind() -> tuple[tuple[list, list], tuple[list, list]]:
    """DSB training images except histology; 20 validation images that are not histology."""
    images, masks, kinds = dsb_split("train")
    val_images, val_masks, val_kinds = dsb_split("val")
    keep = [i for i, kind in enumerate(kinds) if kind != UNSEEN_KIND]
    val_keep = [i for i, kind in enumerate(val_kinds) if kind != UNSEEN_KIND][:20]
    return (
        ([images[i] for i in keep], [masks[i] for i in keep]),
        ([val_images[i] for i in val_keep], [val_masks[i] for i in val_keep]),
    )


DESCRIPTIONS = {
    "em-membranes": "Cell membranes versus cell interior in serial-section electron microscopy "
    "(the U-Net paper's ISBI 2012 task).",
    "nuclei": "Nuclei as separate objects in fluorescence, brightfield and stained-tissue "
    "images (Data Science Bowl 2018).",
}

NUCLEI_TRAINING = {
    "target": "instances",
    "normalization": {
        "kind": "percentile",
        "low": 1.0,
        "high": 99.8,
        "rgb": "mean",
        "dark_background": True,
    },
    "weight_map": True,
    "epochs": 34,
    "steps_per_epoch": 80,
    "batch_size": 8,
    "patch_shape": 192,
    "learning_rate": 2e-3,
}

EM_TRAINING = {
    "target": "semantic",
    "class_names": ["membrane", "interior"],
    "weight_map": True,
    "epochs": 30,
    "steps_per_epoch": 40,
    "batch_size": 4,
    "patch_shape": 256,
    "learning_rate": 2e-3,
}

# A stage starts from the last weights of the stage named in "from" (widened first when it
# has "widen"), so each later stage is a fine-tune rather than a new run from scratch.
RECIPES = {
    # Stage 1: a 16-channel network with the paper's weight map (about 40 minutes) ...
    "em-membranes-base": {
        "data": isbi_train_val,
        "architecture": {**NETWORK, "base_channels": 16},
        "train": EM_TRAINING,
    },
    # ... stage 2: 60 more epochs whose last two thirds are averaged (core.averaging).
    "em-membranes": {
        "data": isbi_train_val,
        "from": "em-membranes-base",
        "train": {**EM_TRAINING, "epochs": 60, "learning_rate": 1e-3, "average_weights": 0.67},
    },
    # The bf16 check (docs/training.md): stage 1 again, trained in fp32.
    "em-membranes-base-fp32": {
        "data": isbi_train_val,
        "architecture": {**NETWORK, "base_channels": 16},
        "train": {**EM_TRAINING, "precision": "fp32"},
    },
    # A wider, longer stage 2 (24 channels, weights stored in float16).
    "em-membranes-wide": {
        "data": isbi_train_val,
        "from": "em-membranes-base",
        "widen": {"base_channels": 24, "noise": 0.01},
        "half_precision": True,
        "train": {**EM_TRAINING, "epochs": 80, "learning_rate": 1e-3, "average_weights": 0.67},
    },
    # Stage 1: a 16-channel network (about 85 minutes on 2 CPU cores) ...
    "nuclei-narrow": {
        "data": lambda: (dsb_split("train")[:2], dsb_split("val")[:2]),
        "architecture": {**NETWORK, "base_channels": 16},
        "train": NUCLEI_TRAINING,
    },
    # ... stage 2: widened to 24 channels without changing its output (core.widen), then
    # fine-tuned (about 100 minutes); 4.4 M weights stored in float16 (8.7 MB) ...
    "nuclei-boundaries": {
        "data": lambda: (dsb_split("train")[:2], dsb_split("val")[:2]),
        "from": "nuclei-narrow",
        "widen": {"base_channels": 24, "noise": 0.01},
        "half_precision": True,
        "train": {**NUCLEI_TRAINING, "epochs": 25, "learning_rate": 1e-3},
    },
    # Tried, not shipped (docs/training.md): stage 2 with a distance output added to its
    # last layer (the three classes keep their weights), fine-tuned on all the data briefly.
    "nuclei-distance": {
        "data": lambda: (dsb_split("train")[:2], sampled(dsb_split("val")[:2], 25)),
        "from": "nuclei-boundaries",
        "train": {
            **NUCLEI_TRAINING,
            "representation": "distance",
            "epochs": 8,
            "learning_rate": 5e-4,
        },
    },
    # ... stage 3: a distance output added to its last layer, then 5,760 steps under bf16
    # (about 150 minutes on one thread of an AMX Xeon), the second half's weights averaged.
    "nuclei": {
        "data": lambda: (dsb_split("train")[:2], sampled(dsb_split("val")[:2], 25)),
        "from": "nuclei-boundaries",
        "half_precision": True,
        "train": {
            **NUCLEI_TRAINING,
            "representation": "distance",
            "epochs": 36,
            "steps_per_epoch": 160,
            "learning_rate": 1e-3,
            "average_weights": 0.5,
        },
    },
    # The representation comparison on the "unseen kind" split (docs/training.md): the same
    # 16-channel network and schedule, trained without histology, scored on histology.
    "unseen-boundaries": {
        "data": dsb_without_unseen_kind,
        "architecture": {**NETWORK, "base_channels": 16},
        "train": {**NUCLEI_TRAINING, "epochs": 18},
    },
    "unseen-distance": {
        "data": dsb_without_unseen_kind,
        "architecture": {**NETWORK, "base_channels": 16},
        "train": {**NUCLEI_TRAINING, "epochs": 18, "representation": "distance"},
    },
    # Flows vs distance (issue 24): the same run and seed with cellpose-style flows.
    "unseen-flows": {
        "data": dsb_without_unseen_kind,
        "architecture": {**NETWORK, "base_channels": 16},
        "train": {**NUCLEI_TRAINING, "epochs": 18, "representation": "flows"},
    },
    # The robustness augmentation (issue 24): the same run and seed, with blur, coarser pixels,
    # photon noise, 0.5-2x zoom, wider gamma and contrast, stain variants and copy-paste.
    "unseen-distance-robust": {
        "data": dsb_without_unseen_kind,
        "architecture": {**NETWORK, "base_channels": 16},
        "train": {
            **NUCLEI_TRAINING,
            "epochs": 18,
            "representation": "distance",
            "augment": Augmenter.robust(),
        },
    },
    # ... and with the acquisition changes only (no copy-paste, zoom as the defaults: none).
    "unseen-distance-acquisition": {
        "data": dsb_without_unseen_kind,
        "architecture": {**NETWORK, "base_channels": 16},
        "train": {
            **NUCLEI_TRAINING,
            "epochs": 18,
            "representation": "distance",
            "augment": Augmenter.robust(zoom_range=1.0, paste_probability=0.0),
        },
    },
}


def printed_progress(started: float) -> Callable[[TrainingProgress], None]:
    """A progress callback that prints every tenth step and every validation."""

    def report(update: TrainingProgress) -> None:
        if update.val_metrics or update.step % 10 == 0:
            minutes = (time.monotonic() - started) / 60
            print(
                f"[{minutes:6.1f} min] epoch {update.epoch}/{update.epochs} step "
                f"{update.step}/{update.steps_per_epoch} loss {update.train_loss:.4f} "
                f"{json.dumps(update.val_metrics) if update.val_metrics else ''}",
                flush=True,
            )

    return report


def run_training(name: str, threads: int) -> None:
    torch.set_num_threads(threads)
    recipe = RECIPES[name]
    (images, masks), validation = recipe["data"]()
    base_model = final_model(recipe["from"]) if "from" in recipe else None
    widening = recipe.get("widen")
    if base_model is not None and widening is not None:
        base_model = widen(base_model, widening["base_channels"], noise=widening["noise"])
    train(
        images,
        masks,
        validation=validation,
        architecture=recipe.get("architecture"),
        base_model=base_model,
        name=name,
        checkpoint_dir=RUNS / name,
        resume=True,
        progress=printed_progress(time.monotonic()),
        **recipe["train"],
    )


def run_export(name: str, threads: int, last: bool = False) -> None:
    from napari_unet.core.evaluate import (
        calibrate_binary_decision,
        evaluate,
        tune_instance_postprocess,
    )

    torch.set_num_threads(threads)
    model = final_model(name) if last else load_model(RUNS / name / BEST_DIR)
    model.description.name = name  # the run may have been trained under another stage name
    half_precision = RECIPES[name].get("half_precision", False)
    if name == "em-membranes":
        offset = calibrate_binary_decision(model, *isbi_split("train"))
        model.description.provenance["decision_offset_tuned_on_train"] = offset
        model.description.pixel_size_um = 0.004  # ISBI 2012: 4 x 4 nm pixels, 50 nm sections
    model = as_shipped(model, half_precision)
    if name == "nuclei":
        images, masks, modalities = dsb_split("val")
        model.description.postprocess = tune_instance_postprocess(model, images, masks)
        metrics = evaluate(images, masks, model, groups=modalities)
    else:
        metrics = evaluate(*isbi_split("val"), model)
    model.description.metrics = {"validation": metrics}
    model.description.description = DESCRIPTIONS[name]
    model.description.provenance = {
        **model.description.provenance,
        "reproduce": " && ".join(
            [f"{SCRIPT} train {stage}" for stage in training_stages(name)]
            + [f"{SCRIPT} export {name}{' --last' if last else ''}"]
        ),
        "recipe": {
            **RECIPES[name]["train"],
            **{key: RECIPES[name][key] for key in ("from", "widen") if key in RECIPES[name]},
        },
    }
    folder = save_model(model, PACKAGE_MODELS / name, overwrite=True, half_precision=half_precision)
    (folder / "README.md").write_text(model_card(model), encoding="utf-8")
    print(json.dumps(metrics, indent=2))


def training_stages(name: str) -> list[str]:
    """The runs that ``name`` builds on, first to last (itself included)."""
    earlier = RECIPES[name].get("from")
    return (training_stages(earlier) if earlier else []) + [name]


def final_model(name: str) -> Model:
    """The last (fully annealed) weights of a run, rather than its best validation epoch.

    A run that averaged its weights saved the average as its best model; that is its result.
    """
    model = load_model(RUNS / name / BEST_DIR)
    model.description.name = name  # so a later stage records which stage it started from
    if not (RUNS / name / CHECKPOINT_FILE).is_file():
        return model  # the checkpoint is gone (e.g. only the shipped model was kept)
    state = torch.load(RUNS / name / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    if state.get("average") is None:
        model.network.load_state_dict(state["network"])
    model.description.provenance["epochs_trained"] = state["run"]["epoch"]
    return model


def as_shipped(model: Model, half_precision: bool) -> Model:
    """The model as its package copy will load, so the card's metrics are those of the file."""
    if not half_precision:
        return model
    with tempfile.TemporaryDirectory() as folder:
        return load_model(save_model(model, Path(folder) / model.name, half_precision=True))


DATA_NOTES = {
    "em-membranes": (
        "ISBI 2012 EM segmentation challenge training volume (serial-section TEM, Drosophila "
        "first-instar larva ventral nerve cord, Cardona et al. 2010), 30 slices of 512x512; "
        "labels 1 = cell interior, 0 = membrane. Trained on slices 0-24, validated on 25-29."
    ),
    "nuclei": (
        "Kaggle Data Science Bowl 2018 stage1_train with community mask fixes (CC0): 398 "
        "training and 100 validation images of fluorescence, brightfield and histology (RGB, "
        "averaged to gray) nuclei, split by the SHA-1 of the sample id. Mostly bright images "
        "(histology, brightfield) are inverted after normalisation so nuclei are bright."
    ),
}


def model_card(model: Model) -> str:
    """The model's README: what it is for, its data, how to reproduce it, and its scores."""
    card = model.description
    lines = [
        f"# {card.name}",
        "",
        card.description,
        "",
        "## Data",
        "",
        DATA_NOTES[card.name],
        "",
        "## Network",
        "",
        f"U-Net {json.dumps(card.architecture.to_dict())}, output {card.output_kind} "
        f"({', '.join(card.class_names)}); input normalisation {json.dumps(card.normalization)}"
        + ("; weights stored in float16." if RECIPES[card.name].get("half_precision") else "."),
    ]
    if card.class_names[-1] == "distance":
        lines += [
            "",
            "The last output regresses each pixel's distance to its nucleus' outline, divided by "
            "the nucleus' largest (1 at its centre, lowest on its outline, 0 outside). Seeds are "
            "where it exceeds `seed_threshold` inside the foreground (interior + boundary "
            "probability above `foreground_threshold`); a watershed on it then splits touching "
            "nuclei along the valley between their centres.",
        ]
    if card.postprocess:
        lines += [
            "",
            "Instance post-processing, tuned on the validation split: "
            f"{json.dumps(card.postprocess)}.",
        ]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        *card.provenance["reproduce"].split(" && "),
        "```",
        "",
        f"Training recipe: {json.dumps(card.provenance['recipe'])}.",
        "",
        "## Validation metrics",
        "",
        "| split | " + " | ".join(METRIC_COLUMNS[card.name]) + " |",
        "|---|" + "---|" * len(METRIC_COLUMNS[card.name]),
    ]
    for group, values in card.metrics["validation"].items():
        cells = [
            f"{values[key]:.3f}" if isinstance(values[key], float) else str(values[key])
            for key in METRIC_COLUMNS[card.name]
        ]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    if card.name == "em-membranes":
        rand = card.metrics["validation"]["overall"]["rand_error"]
        lines += ["", PAPER_NOTE.format(rand=rand)]
    offset = card.provenance.get("decision_offset_tuned_on_train")
    if offset is not None:
        lines += [
            "",
            "The decision between the two classes was calibrated on the training slices 0-24: a "
            f"logit offset of {offset:+.1f} towards the second class, added to the last layer's "
            "bias, undoes the bias of the class-balanced weight map.",
        ]
    return "\n".join(lines) + "\n"


PAPER_NOTE = (
    "Next to the paper: Ronneberger et al. (2015) report an adapted Rand error of 0.0382 "
    "(warping error 0.000353) on the ISBI 2012 *test* stack, whose labels are hidden and "
    "scored by the challenge server. This model's adapted Rand error is {rand:.3f} on slices "
    "25-29 of the *training* stack, computed by `napari_unet.core.metrics.membrane_scores` "
    "(skimage's adapted Rand error, pixels that are membrane in the truth ignored, as the "
    "challenge did). The two are not the same data or the same scorer, so they are close in "
    "kind, not comparable to the digit; the paper's network was also 16x larger (31 M "
    "weights against 1.9 M) and trained on a GPU."
)

METRIC_COLUMNS = {
    "em-membranes": ["pixel_error", "iou_interior", "iou_membrane", "rand_error", "vi", "n_images"],
    "nuclei": ["ap50", "map", "precision50", "recall50", "f1_50", "n_images"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "export"])
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--last", action="store_true", help="export the last, not the best epoch")
    args = parser.parse_args()
    if args.action == "export" and args.model not in DESCRIPTIONS:
        parser.error(f"{args.model} is a training stage, not a built-in model")
    if args.action == "train":
        run_training(args.model, args.threads)
    else:
        run_export(args.model, args.threads, args.last)


if __name__ == "__main__":
    main()
