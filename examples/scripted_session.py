"""A scripted napari session: open an image, segment it with the engine, save the labels.

It uses the same pieces as the plugin's widgets and menus, so what a script does is what a
user clicking through napari gets: the reader keeps the pixel size, ``segment_layer`` places
the result over the image, and the writer stores the scale as the pixel size.

    python examples/scripted_session.py                       # the nuclei sample, model nuclei
    python examples/scripted_session.py cells.tif --model em-membranes --out cells-labels.tif
    python examples/scripted_session.py --no-show             # no window: CI, batch jobs
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

from napari.layers import Layer

import napari
from napari_unet import segment_layer

SAMPLE = files("napari_unet") / "samples" / "nuclei.tif"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default=str(SAMPLE), help="a TIFF or OME-Zarr image")
    parser.add_argument("--model", default="nuclei", help="built-in or saved model, or a folder")
    parser.add_argument("--out", default="labels.tif", help="where to save the labels")
    parser.add_argument("--no-show", action="store_true", help="close napari when done")
    args = parser.parse_args(argv)

    viewer = napari.Viewer(show=not args.no_show)
    [image] = viewer.open(args.image, plugin="napari-unet-segment")
    labels = viewer.add_layer(Layer.create(*segment_layer(image, args.model)))
    [written] = labels.save(args.out, plugin="napari-unet-segment")
    print(f"{labels.name}: {labels.data.max()} objects, saved to {written}")
    if args.no_show:
        viewer.close()
    else:
        napari.run()
    return Path(written)


if __name__ == "__main__":
    main()
