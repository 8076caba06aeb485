"""File metadata is untrusted: tiny files that claim huge images are refused fast and cheaply."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.core.io import file_checks
from napari_unet.core.io.images import describe_file, read_image

OME = """<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">
<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="16" SizeY="16" {sizes}>
<Channel ID="Channel:0:0" SamplesPerPixel="1"/><TiffData IFD="0" PlaneCount="1"/>
</Pixels></Image></OME>"""


def write_ome(path, sizes='SizeC="1" SizeZ="1" SizeT="1"'):
    """A one-plane 16x16 OME-TIFF whose OME-XML says what ``sizes`` says."""
    tifffile.imwrite(path, np.ones((16, 16), np.uint8), description=OME.format(sizes=sizes))
    return path


def test_ome_claim_of_a_huge_series_is_refused_at_once_naming_the_claim(tmp_path, monkeypatch):
    """Refused before tifffile builds a series from the claim (walking 300 million planes)."""
    path = write_ome(tmp_path / "claim.ome.tif", 'SizeC="3" SizeZ="1000" SizeT="100000"')

    def no_series(tiff):
        pytest.fail("the claim was believed: tifffile was asked for the series")

    monkeypatch.setattr(tifffile.TiffFile, "series", property(no_series))
    with pytest.raises(ValueError, match=r"claims OME .*SizeZ=1000 SizeC=3 SizeT=100000") as info:
        describe_file(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_refusing_a_huge_claim_costs_under_100_mb_of_memory(tmp_path):
    path = write_ome(tmp_path / "claim.ome.tif", 'SizeC="3" SizeZ="1000" SizeT="100000"')
    child = f"""
import resource
from napari_unet.core.io.images import read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_image({str(path)!r})
except ValueError:
    pass
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    growth_mb = float(
        subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, check=True
        ).stdout
    )
    assert growth_mb < 100


def test_ome_plane_larger_than_the_file_is_refused(tmp_path):
    path = write_ome(tmp_path / "wide.ome.tif")
    xml = OME.format(sizes='SizeC="1" SizeZ="1" SizeT="1"')
    tifffile.imwrite(path, np.ones((16, 16), np.uint8), description=xml.replace('"16"', '"99999"'))
    with pytest.raises(ValueError, match=r"SizeX=99999 SizeY=99999 .* more than a file"):
        read_image(path, lazy=True)


def test_imagej_hyperstack_claim_beyond_the_file_is_refused(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, np.zeros((2, 16, 16), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    raw = path.read_bytes()
    stored = b"images=2\nslices=2\nhyperstack=true\nmode=grayscale\n"
    claim = b"images=9999999\nslices=9999999\nhyperstack=true\n"
    path.write_bytes(raw.replace(stored, claim.ljust(len(stored), b"\x00")))
    with pytest.raises(ValueError, match=r"claims ImageJ images=9999999"):
        read_image(path, lazy=True)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_strip_byte_counts_past_the_end_of_the_file_are_refused(tmp_path, compression):
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, np.ones((64, 64), np.uint16), compression=compression)
    with tifffile.TiffFile(path, mode="r+") as tiff:
        tiff.pages[0].tags["StripByteCounts"].overwrite([10**9])
    for lazy in (False, True):
        with pytest.raises(ValueError, match=r"page 0 claims 1,000,000,000 bytes .* past the end"):
            read_image(path, lazy=lazy)


def test_an_eager_read_larger_than_free_memory_is_refused_and_a_lazy_one_stays_lazy(
    tmp_path, monkeypatch
):
    path = tmp_path / "big.tif"
    data = np.arange(5 * 64 * 64, dtype=np.uint16).reshape(5, 64, 64)
    tifffile.imwrite(path, data, compression="zlib")
    monkeypatch.setattr(file_checks, "available_ram_bytes", lambda: 20_000)  # 2 of the 5 pages
    with pytest.raises(ValueError, match=r"shape \(5, 64, 64\) uint16 .* more memory than is free"):
        read_image(path, lazy=False)
    image = read_image(path, lazy=True)
    assert not isinstance(image.data, np.ndarray)
    assert int(image.data[4, 63, 63]) == 5 * 64 * 64 - 1
    monkeypatch.setattr(file_checks, "available_ram_bytes", lambda: 5_000)  # not even a page
    with pytest.raises(
        ValueError, match=r"pages of shape \(64, 64\) \(8.2 KB each\), more than is"
    ):
        read_image(path, lazy=True)


def test_absurd_or_unparsable_pixel_sizes_are_dropped_with_a_warning(tmp_path):
    path = tmp_path / "sizes.ome.tif"
    xml = OME.format(sizes='SizeC="1" SizeZ="1" SizeT="1" PhysicalSizeX="1e300"')
    tifffile.imwrite(
        path,
        np.ones((16, 16), np.uint8),
        description=xml.replace("Type=", 'PhysicalSizeY="x" Type='),
    )
    with pytest.warns(UserWarning, match="ignoring pixel size") as caught:
        image = read_image(path)
    assert image.pixel_size_um == {} and image.data.sum() == 256
    ignored = [str(w.message) for w in caught if "ignoring pixel size" in str(w.message)]
    assert sorted(message.split("size ")[1][0] for message in ignored) == ["X", "Y"]


@pytest.mark.parametrize("spacing", [0.0, -1.0, float("inf")])
def test_imagej_z_spacing_that_cannot_be_real_is_dropped(tmp_path, spacing):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        np.zeros((2, 8, 8), np.uint8),
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", "spacing": spacing, "unit": "um"},
    )
    with pytest.warns(UserWarning, match=r"ignoring pixel size Z"):
        image = read_image(path)
    assert image.pixel_size_um == pytest.approx({"Y": 0.5, "X": 0.5})


def test_running_out_of_memory_says_what_was_being_read(tmp_path, monkeypatch):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_memory)
    with pytest.raises(MemoryError, match=r"not enough memory to read the pixels of .*a\.tif"):
        read_image(path, lazy=False)


def test_tiles_larger_than_the_file_can_hold_are_refused(tmp_path):
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.uint8), tile=(16, 16), compression="zlib")
    with tifffile.TiffFile(path, mode="r+") as tiff:
        tiff.pages[0].tags["TileWidth"].overwrite(65536)  # one 2 GB tile for 256 pixels
        tiff.pages[0].tags["TileLength"].overwrite(32768)
    with pytest.raises(ValueError, match=r"claims tiles of 32768 x 65536 pixels \(2.1 GB each\)"):
        read_image(path, lazy=True)


@pytest.mark.parametrize("compression", ["zlib", "zstd", "lzw", "packbits"])
def test_real_files_that_compress_extremely_well_are_not_refused(tmp_path, compression):
    path = tmp_path / "zeros.tif"
    tifffile.imwrite(path, np.zeros((2048, 2048), np.uint8), compression=compression)
    assert read_image(path, lazy=True).shape == (2048, 2048)


@pytest.mark.parametrize(
    "options",
    [{"ome": True, "metadata": {"axes": "ZYX"}}, {"compression": "zlib", "tile": (16, 16)}],
)
def test_corrupt_headers_give_a_value_error_that_names_the_file(tmp_path, options):
    path = tmp_path / "original.tif"
    tifffile.imwrite(path, np.arange(3 * 32 * 32).astype(np.uint8).reshape(3, 32, 32), **options)
    original = path.read_bytes()
    rng = np.random.default_rng(7)
    corrupt = tmp_path / "corrupt.tif"
    for case in range(60):
        data = bytearray(original)
        for position in rng.integers(0, 400, size=3):  # the header and first directory
            data[position] = rng.integers(0, 256)
        corrupt.write_bytes(bytes(data))
        try:
            read_image(corrupt, lazy=bool(case % 2))
        except ValueError as error:
            assert str(error).startswith(f"cannot read {corrupt}"), case


def test_bilevel_files_are_counted_in_bits_and_their_false_claims_refused(tmp_path):
    path = tmp_path / "mask.tif"
    mask = np.zeros((1000, 999), bool)
    mask[100:400, 200:700] = True
    tifffile.imwrite(path, mask, bitspersample=1)  # 125 KB: 8 pixels a byte, rows padded
    assert path.stat().st_size < mask.size / 7
    np.testing.assert_array_equal(read_image(path).data, mask)
    with tifffile.TiffFile(path, mode="r+") as tiff:
        tiff.pages[0].tags["ImageLength"].overwrite(100_000)  # 12.5 MB of bits
        tiff.pages[0].tags["RowsPerStrip"].overwrite(100_000)
    with pytest.raises(ValueError, match=r"\(12.5 MB at 1 bit\(s\) per sample\), more than a file"):
        read_image(path, lazy=True)


def test_ome_bit_type_claims_are_counted_in_bits(tmp_path):
    xml = OME.replace('Type="uint8"', 'Type="bit"').replace('"16"', '"64"')
    path = tmp_path / "bits.ome.tif"
    mask = np.eye(64, dtype=bool)
    tifffile.imwrite(path, mask, bitspersample=1, description=xml.format(sizes='SizeZ="1"'))
    np.testing.assert_array_equal(read_image(path).data, mask)
    # 64 planes of 512 bytes would fit the bytes of this file, but not its one directory
    tifffile.imwrite(path, mask, bitspersample=1, description=xml.format(sizes='SizeZ="640"'))
    with pytest.raises(ValueError, match=r"SizeZ=640 .* \(640 planes, 327.7 KB\)"):
        read_image(path)
