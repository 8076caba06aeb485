"""``python -m napari_unet`` runs the CLI."""

import sys

from napari_unet.cli import main

sys.exit(main())
