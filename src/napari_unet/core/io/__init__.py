"""Image files in and results out: TIFF/OME-TIFF and OME-Zarr behind one door.

The rest of the package comes in through this door (``from napari_unet.core.io import ...``):
:func:`read_image` and :func:`write_labels` (:mod:`.images`) dispatch on the path to TIFF
(:mod:`.images`) or OME-Zarr (:mod:`.omezarr`), both building on :class:`ImageFile`
(:mod:`.image_file`); OME-Zarr label pyramids are written level by level with
:func:`create_labels`. :mod:`.file_checks` checks what a file claims before anything is
allocated, :mod:`.output_checks` checks a run's outputs before it starts, :mod:`.files` writes
atomically and :mod:`.results` streams a prediction to disk block by block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_unet._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ImageFile": ".image_file",
        "OmeZarrImage": ".omezarr",
        "create_labels": ".omezarr",
        "is_ome_zarr": ".omezarr",
        "label_images": ".omezarr",
        "describe_file": ".images",
        "read_image": ".images",
        "write_image": ".images",
        "write_labels": ".images",
    },
)

if TYPE_CHECKING:
    from .image_file import ImageFile as ImageFile
    from .images import (
        describe_file as describe_file,
    )
    from .images import (
        read_image as read_image,
    )
    from .images import (
        write_image as write_image,
    )
    from .images import (
        write_labels as write_labels,
    )
    from .omezarr import OmeZarrImage as OmeZarrImage
    from .omezarr import create_labels as create_labels
    from .omezarr import is_ome_zarr as is_ome_zarr
    from .omezarr import label_images as label_images
