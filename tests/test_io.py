import zlib

import numpy as np
import pytest
import tifffile

from napari_unet.core.io.images import read_image, smallest_label_dtype, write_image, write_labels


def test_labels_round_trip_keeps_axes_pixel_size_and_uses_the_smallest_dtype(tmp_path):
    labels = np.zeros((3, 20, 30), np.int64)
    labels[1, 5:9, 5:9] = 300
    path = write_labels(tmp_path / "labels.tif", labels, "ZYX", {"Z": 2.0, "Y": 0.25, "X": 0.25})
    image = read_image(path)
    assert image.axes == "ZYX" and image.is_labels
    assert image.pixel_size_um == pytest.approx({"Z": 2.0, "Y": 0.25, "X": 0.25})
    assert image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.data, labels)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].compression != 1  # compressed


@pytest.mark.parametrize(
    ("high", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (70000, np.uint32)]
)
def test_smallest_label_dtype(high, dtype):
    assert smallest_label_dtype(np.array([0, high])) == dtype


def test_negative_labels_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        smallest_label_dtype(np.array([-1, 2]))


def test_existing_files_are_kept_unless_overwrite(tmp_path):
    path = write_labels(tmp_path / "a.tif", np.ones((4, 4), np.uint8), "YX")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_labels(path, np.zeros((4, 4), np.uint8), "YX")
    assert read_image(path).data.max() == 1
    write_labels(path, np.full((4, 4), 2, np.uint8), "YX", overwrite=True)
    assert read_image(path).data.max() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]  # no temporary file left behind
    assert path.stat().st_mode & 0o044  # readable by others, like any file the user writes


def test_imagej_hyperstack_axes_and_calibration(tmp_path):
    data = np.zeros((2, 3, 16, 20), np.uint8)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"axes": "TZYX", "spacing": 1.5, "unit": "um"},
    )
    image = read_image(path)
    assert image.axes == "TZYX" and not image.is_labels
    assert image.pixel_size_um == pytest.approx({"Z": 1.5, "Y": 0.5, "X": 0.5})


def test_ome_units_are_converted_to_micrometres(tmp_path):
    path = tmp_path / "nm.ome.tif"
    tifffile.imwrite(
        path,
        np.zeros((16, 16), np.uint8),
        ome=True,
        metadata={
            "axes": "YX",
            "PhysicalSizeX": 250,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 250,
            "PhysicalSizeYUnit": "nm",
        },
    )
    assert read_image(path).pixel_size_um == pytest.approx({"Y": 0.25, "X": 0.25})


def test_plain_tiff_has_no_pixel_size_and_rgb_is_channels_last(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((16, 20, 3), np.uint8), photometric="rgb")
    image = read_image(path)
    assert image.axes == "YXC" and image.pixel_size_um == {}


def test_lazy_reading_does_not_load_the_pixels(tmp_path):
    data = np.arange(4 * 32 * 32, dtype=np.uint16).reshape(4, 32, 32)
    plain, compressed = tmp_path / "plain.tif", tmp_path / "zlib.tif"
    tifffile.imwrite(plain, data, photometric="minisblack")
    tifffile.imwrite(compressed, data, photometric="minisblack", compression="zlib", tile=(16, 16))
    for path in (plain, compressed):
        image = read_image(path, lazy=True)
        assert not isinstance(image.data, np.ndarray) or isinstance(image.data, np.memmap)
        np.testing.assert_array_equal(np.asarray(image.data[2, 3:9, 4:6]), data[2, 3:9, 4:6])


def test_probabilities_can_be_written_as_float(tmp_path):
    probabilities = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    path = write_image(tmp_path / "p.tif", probabilities, "CYX")
    np.testing.assert_array_equal(read_image(path).data, probabilities)


def test_unreadable_files_give_a_clear_error(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(path)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.tif")


def test_a_tiff_header_with_no_image_is_a_clear_error(tmp_path):
    path = tmp_path / "truncated.tif"
    path.write_bytes(b"II*\x00garbage")  # a valid TIFF signature, then nothing readable
    with pytest.raises(ValueError, match=r"cannot read .* holds no image"):
        read_image(path)


LOSSLESS = ["none", "zlib", "deflate", "lzma", "zstd", "lzw", "packbits"]
LAYOUTS = {
    # name: (dtype, axes the reader gives, tifffile options)
    "bilevel": (np.bool_, "YX", {"bitspersample": 1}),
    "bilevel stack": (np.bool_, "ZYX", {"bitspersample": 1}),
    "12-bit": (np.uint16, "YX", {"bitspersample": 12}),
    "planar rgb": (np.uint8, "CYX", {"photometric": "rgb", "planarconfig": "separate"}),
    "planar tiled": (
        np.uint16,
        "CYX",
        {"photometric": "rgb", "planarconfig": "separate", "tile": (16, 16)},
    ),
    "tiled": (np.float32, "YX", {"tile": (32, 16)}),
    "contig rgb stack": (np.uint8, "ZYXC", {"photometric": "rgb"}),
}


def _random_image(rng: np.random.Generator, dtype: type, axes: str) -> np.ndarray:
    """Random pixels of random sizes; widths are odd, so bit-packed rows end mid-byte."""
    sizes = {"Z": 3, "C": 3, "Y": int(rng.integers(17, 60)), "X": 2 * int(rng.integers(8, 40)) + 1}
    shape = tuple(sizes[axis] for axis in axes)
    if dtype is np.bool_:
        return rng.random(shape) > 0.7
    if dtype is np.float32:
        return rng.normal(size=shape).astype(np.float32)
    high = 4096 if dtype is np.uint16 else 256
    return rng.integers(0, high, shape).astype(dtype)


@pytest.mark.parametrize(
    ("layout", "compression"),
    # tifffile writes 12-bit samples only uncompressed
    [(one, codec) for one in LAYOUTS for codec in LOSSLESS if one != "12-bit" or codec == "none"],
)
def test_every_layout_and_lossless_compression_reads_back_exactly(tmp_path, layout, compression):
    dtype, axes, options = LAYOUTS[layout]
    rng = np.random.default_rng(zlib.crc32(f"{layout} {compression}".encode()))
    for trial in range(3):  # three random shapes each
        data = _random_image(rng, dtype, axes)
        path = tmp_path / f"{trial}.tif"
        tifffile.imwrite(path, data, compression=compression, **options)
        for lazy in (False, True):
            image = read_image(path, lazy=lazy)
            assert image.axes == axes and image.shape == data.shape, (layout, compression)
            np.testing.assert_array_equal(np.asarray(image.data[...]), data)


@pytest.mark.parametrize("compression", ["jpeg", "png", "jpeg2000", "jpegxl", "webp", "lerc"])
def test_image_codecs_read_what_tifffile_decodes(tmp_path, rng, compression):
    """Lossy and image codecs: the reader gives exactly the pixels tifffile decodes."""
    yy, xx = np.mgrid[:48, :64]
    smooth = np.stack([yy * 5, xx * 4, (yy + xx) * 2], axis=-1)  # lossy codecs keep this
    data = (smooth + rng.integers(0, 8, smooth.shape)).astype(np.uint8)
    path = tmp_path / "codec.tif"
    tifffile.imwrite(path, data, compression=compression, photometric="rgb")
    expected = tifffile.imread(path)
    assert np.abs(expected.astype(int) - data).mean() < 8  # really the image, decoded
    for lazy in (False, True):
        image = read_image(path, lazy=lazy)
        assert image.axes == "YXC"
        np.testing.assert_array_equal(np.asarray(image.data[...]), expected)
