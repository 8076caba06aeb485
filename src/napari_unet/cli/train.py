"""The ``train`` and ``evaluate`` sub-commands: arguments in, one core call, progress out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_unet.names import TARGETS


def register_train(subparsers: Any) -> None:
    """Add ``napari-unet train``."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a U-Net on folders of image/mask TIFF pairs",
        description="Train a U-Net on image/mask TIFF pairs with the same file names.",
    )
    parser.add_argument("--images", required=True, type=Path, help="folder of image TIFFs")
    parser.add_argument("--masks", required=True, type=Path, help="folder of mask TIFFs")
    parser.add_argument("-o", "--out", required=True, type=Path, help="folder to save the model in")
    parser.add_argument("--from", dest="base_model", help="fine-tune this model (name or folder)")
    parser.add_argument("--target", choices=TARGETS, default="instances")
    parser.add_argument(
        "--representation",
        choices=["distance", "boundaries"],
        help="instances: add a distance-to-outline output (generalises better to other kinds "
        "of images) or keep the three classes; default: the --from model's, else boundaries",
    )
    parser.add_argument("--epochs", type=int, default=None, help="passes (default 50)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="train for this long instead (e.g. 5 to fine-tune on 1-3 images)",
    )
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument(
        "--val-images",
        type=Path,
        help="folder of validation image TIFFs (never trained on; scores every epoch and, "
        "with --from, the base model against the fine-tuned one)",
    )
    parser.add_argument("--val-masks", type=Path, help="folder of the validation masks")
    parser.add_argument(
        "--holdout-objects",
        type=float,
        default=None,
        metavar="SHARE",
        help="with --from and no validation images: keep this share of the objects out of "
        "training to check the result (default 0.2, from 8 objects; 0 to train on all)",
    )
    parser.add_argument(
        "--unlabelled",
        type=Path,
        metavar="FOLDER",
        help="with --from: TIFFs of the same kind without masks; the fine-tuned model's "
        "batch-norm statistics are measured on them and the labelled images",
    )
    parser.add_argument("--patch", type=int, default=None, help="patch size in pixels per axis")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="default 1e-3, or 1e-4 with --from"
    )
    # The core checks the loss: importing its list here would load torch for every command.
    parser.add_argument("--loss", default="ce+dice", help="ce, dice or ce+dice (default)")
    parser.add_argument(
        "--weight-map",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the paper's border weights (default: on with --from, off for a new network)",
    )
    parser.add_argument("--sparse", action="store_true", help="mask value 0 = not annotated")
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument(
        "--average-weights",
        type=float,
        default=None,
        metavar="SHARE",
        help="average the weights of this share of the last epochs or minutes "
        "(default: 0.5 with --from, else off)",
    )
    parser.add_argument(
        "--freeze-encoder",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the expanding path only (default: on with --from)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: bf16 on CPUs with bf16 hardware and on CUDA, else fp32",
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        default=None,
        help="keep the --from model's post-processing thresholds instead of tuning them",
    )
    parser.add_argument("--checkpoint-dir", type=Path, help="checkpoints (default OUT/checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--name", help="model name (default: the name of OUT)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model at OUT")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train, printing one line per epoch, and save the best model to ``--out``."""
    from napari_unet.core.models.registry import save_model
    from napari_unet.core.train.finetune_check import FineTuneReport

    if (args.out / "model.json").exists() and not args.overwrite:
        raise FileExistsError(f"a model already exists at {args.out}; pass --overwrite")
    if (args.val_images is None) != (args.val_masks is None):
        raise ValueError("give --val-images and --val-masks together")
    validation = None if args.val_images is None else (args.val_images, args.val_masks)
    with _TrainingBar() as report:
        model = _train(args, validation, report)
        report.phase("saving")
        # Without --overwrite the files are taken exclusively: a racing run cannot replace them.
        save_model(model, args.out, overwrite=args.overwrite)
    check = FineTuneReport.from_metrics(model.description.metrics)
    if check is not None:
        print(f"fine-tuning check: {check.summary()}")
    print(f"saved model {model.name!r} to {args.out}")
    return 0


def _train(args: argparse.Namespace, validation: Any, report: _TrainingBar) -> Any:
    """Call the engine with the parsed arguments."""
    from napari_unet.core.train.loop import train

    return train(
        args.images,
        args.masks,
        target=args.target,
        representation=args.representation,
        base_model=args.base_model,
        epochs=args.epochs,
        minutes=args.minutes,
        steps_per_epoch=args.steps_per_epoch,
        patch_shape=args.patch,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        learning_rate=args.learning_rate,
        loss=args.loss,
        weight_map=args.weight_map,
        sparse=args.sparse,
        augment=args.augment,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        calibrate=args.calibrate,
        checkpoint_dir=args.checkpoint_dir or args.out / "checkpoints",
        resume=args.resume,
        name=args.name or args.out.name,
        progress=report,
        average_weights=args.average_weights,
        freeze_encoder=args.freeze_encoder,
        validation=validation,
        holdout_objects=args.holdout_objects,
        unlabelled_images=args.unlabelled,
    )


class _TrainingBar:
    """A tqdm bar on stderr: the share of the run (or time budget) done, named by its phase.

    Epochs print a line each above it, and after the epochs the bar names each closing phase
    (averaging, batch-norm statistics, validation, calibration, saving), so the time after
    the last step is never silent.
    """

    def __init__(self) -> None:
        self.bar: Any = None

    def __enter__(self) -> _TrainingBar:
        return self

    def __call__(self, update: Any) -> None:
        self.phase(update.phase, update.done)
        if update.val_metrics:
            scores = " ".join(f"{key} {value:.4f}" for key, value in update.val_metrics.items())
            self.bar.write(f"epoch {update.epoch} ({update.done:.0%} done) {scores}", sys.stderr)

    def phase(self, name: str, done: float | None = None) -> None:
        """Name the phase now running; move the bar to ``done`` (share of the run)."""
        if self.bar is None:  # opened at the first update: failed checks print one line only
            from tqdm import tqdm

            bar_format = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}"
            self.bar = tqdm(total=100, file=sys.stderr, bar_format=bar_format, leave=False)
        self.bar.set_description_str(name, refresh=False)
        if done is not None:
            self.bar.update(max(0, round(100 * done) - self.bar.n))
        self.bar.refresh()

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def register_evaluate(subparsers: Any) -> None:
    """Add ``napari-unet evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model on labelled images",
        description="Score a model on image/mask TIFF pairs with the same file names.",
    )
    parser.add_argument("--model", required=True, help="model name or folder")
    parser.add_argument("--images", required=True, type=Path, help="folder of image TIFFs")
    parser.add_argument("--masks", required=True, type=Path, help="folder of mask TIFFs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the metrics as a table (or JSON)."""
    from napari_unet.core.evaluate import evaluate

    results = evaluate(args.images, args.masks, args.model)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for group, metrics in results.items():
        print(group)
        width = max(len(key) for key in metrics)
        for key, value in metrics.items():
            print(
                f"  {key:<{width}}  {value:.4f}"
                if isinstance(value, float)
                else f"  {key:<{width}}  {value}"
            )
    return 0
