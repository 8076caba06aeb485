"""The ``train`` and ``evaluate`` sub-commands: arguments in, one core call, progress out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_unet.cli.option_flags import add_option_flags, options_from_args
from napari_unet.core.train.options import TrainOptions


def register_train(subparsers: Any) -> None:
    """Add ``napari-unet train``: the data here, every training option from ``TrainOptions``."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a U-Net on folders of image/mask TIFF pairs",
        description="Train a U-Net on image/mask TIFF pairs with the same file names.",
    )
    parser.add_argument("--images", required=True, type=Path, help="folder of image TIFFs")
    parser.add_argument("--masks", required=True, type=Path, help="folder of mask TIFFs")
    parser.add_argument("-o", "--out", required=True, type=Path, help="folder to save the model in")
    parser.add_argument("--from", dest="base_model", help="fine-tune this model (name or folder)")
    parser.add_argument(
        "--val-images",
        type=Path,
        help="folder of validation image TIFFs (never trained on; scores every epoch and, "
        "with --from, the base model against the fine-tuned one)",
    )
    parser.add_argument("--val-masks", type=Path, help="folder of the validation masks")
    parser.add_argument(
        "--unlabelled",
        type=Path,
        metavar="FOLDER",
        help="with --from: TIFFs of the same kind without masks; the fine-tuned model's "
        "batch-norm statistics are measured on them and the labelled images",
    )
    add_option_flags(parser, TrainOptions)
    parser.add_argument("--checkpoint-dir", type=Path, help="checkpoints (default OUT/checkpoints)")
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
        options=options_from_args(args, TrainOptions),
        validation=validation,
        base_model=args.base_model,
        checkpoint_dir=args.checkpoint_dir or args.out / "checkpoints",
        unlabelled_images=args.unlabelled,
        progress=report,
        name=args.name or args.out.name,
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
