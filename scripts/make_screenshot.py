"""Regenerate docs/screenshot.png: napari with the Segment widget docked and its result shown.

One command, with or without a display (it restarts itself under ``xvfb-run`` when there is
none; needs the ``xvfb`` Debian package):

    python scripts/make_screenshot.py [--model nuclei] [--sample nuclei] [--out docs/screenshot.png]

It clicks through the real widget (model picked, Run pressed, worker awaited), so the picture
shows what a user gets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--sample", default="nuclei", choices=["nuclei", "em"])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--size", default="1500x900", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", "-s", "-screen 0 1920x1200x24", sys.executable, *sys.argv]
        os.execvp(command[0], command)

    from qtpy.QtWidgets import QApplication

    import napari
    from napari_unet._napari.job_widget import PLUGIN_NAME

    viewer = napari.Viewer(show=True, title=PLUGIN_NAME)
    width, height = (int(n) for n in args.size.split("x"))
    viewer.window.resize(width, height)
    viewer.open_sample(PLUGIN_NAME, args.sample)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, "Segment")
    widget.model.value = args.model
    widget.start()
    while widget.running:
        QApplication.processEvents()
        time.sleep(0.05)
    labels = viewer.layers[-1]
    labels.contour = 2  # outlines over the image show both the nuclei and their segmentation
    viewer.reset_view()
    QApplication.processEvents()
    viewer.window.screenshot(args.out, canvas_only=False, flash=False)
    print(f"{widget.status.value}; wrote {args.out}")
    viewer.close()
    return Path(args.out)


if __name__ == "__main__":
    main()
