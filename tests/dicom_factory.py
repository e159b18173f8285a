"""Write small synthetic DICOM files for the io tests, in every transfer syntax mammo reads.

Also writes the bad files the refusal tests need (empty, text, truncated, colour, NaN, bombs), and
the hostile ones of tests/test_io_hostile.py: raw (unvalidated) DICOM element bytes, a bogus
transfer syntax UID, damaged LUTs, a real 9990 x 9990 mostly-zero PNG, PGM maxval 0, a FIFO.

Encoders used: pydicom's own RLE encoder (and pylibjpeg-rle), pylibjpeg-openjpeg for JPEG 2000,
Pillow for JPEG Baseline (encapsulated by hand), a minimal JPEG Lossless SV1 encoder written below,
and for JPEG-LS either pydicom's encoder (needs the `pyjpegls` package) or, when it is missing,
pydicom's bundled JPEG-LS test file, whose uncompressed twin gives the expected pixels.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    UID,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)


def mammogram_pixels(shape: tuple[int, int] = (48, 40), bits: int = 12, side: str = "left",
                     seed: int = 0) -> np.ndarray:
    """A breast-like test image: a bright half-ellipse against the `side` edge, textured.

    Returns:
        uint16 (H, W) (uint8 when bits <= 8), values in [0, 2**bits - 1], using the full range.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dist = xx if side == "left" else (w - 1 - xx)
    inside = (dist / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.48 * h)) ** 2 <= 1.0
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    values = np.where(inside, 0.45 + 0.4 * rng.random(shape), 0.02 * rng.random(shape)) * top
    values[0, 0], values[h // 2, 0 if side == "left" else w - 1] = 0, top
    return np.rint(values).astype(np.uint8 if bits <= 8 else np.uint16)


def _file_dataset(path: Path, pixels: np.ndarray, bits_stored: int, photometric: str,
                  signed: bool) -> FileDataset:
    """A Digital Mammography dataset holding `pixels` uncompressed (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.Manufacturer = "MG", "SYNTH-001", "mammo tests"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 or pixels.shape[-1] not in (3,) else 3
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if ds.SamplesPerPixel == 3 else pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.tobytes()
    return ds


def _set_tags(ds: FileDataset, tags: dict[str, Any]) -> None:
    """Set DICOM keywords on `ds`; a value of None deletes the element."""
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def make_dicom(tmp_path: Path, pixels: np.ndarray | None = None, name: str = "synthetic.dcm", *,
               transfer_syntax: str = ExplicitVRLittleEndian, bits_stored: int | None = None,
               photometric: str = "MONOCHROME2", signed: bool = False, **tags: Any) -> Path:
    """Write one synthetic DICOM into `tmp_path` and return its path.

    Args:
        pixels: (H, W) grey, (F, H, W) multi-frame or (H, W, 3) RGB; default `mammogram_pixels()`.
        transfer_syntax: any UID `encode_pixels` supports.
        bits_stored: BitsStored (default: 8 for uint8 pixels, else 12).
        tags: DICOM keywords to set (e.g. ImageLaterality="L"); None deletes one (PixelData=None).
    """
    pixels = mammogram_pixels() if pixels is None else pixels
    bits = bits_stored or (8 if pixels.dtype.itemsize == 1 else 12)
    path = tmp_path / name
    ds = _file_dataset(path, pixels, bits, photometric, signed)
    if pixels.ndim == 3 and ds.SamplesPerPixel == 1:
        ds.NumberOfFrames = pixels.shape[0]
    encode_pixels(ds, pixels, UID(transfer_syntax))
    _set_tags(ds, tags)
    ds.save_as(path, enforce_file_format=True)
    return path


def encode_pixels(ds: FileDataset, pixels: np.ndarray, transfer_syntax: UID) -> None:
    """Compress `pixels` into `ds` with `transfer_syntax` (uncompressed syntaxes: just set it)."""
    if transfer_syntax == JPEGBaseline8Bit:
        _encapsulate(ds, _pillow_jpeg(pixels), transfer_syntax)
    elif transfer_syntax == JPEGLosslessSV1:
        _encapsulate(ds, encode_jpeg_lossless_sv1(pixels, int(ds.BitsStored)), transfer_syntax)
    elif transfer_syntax.is_compressed:
        kwargs: dict[str, Any] = {}
        if transfer_syntax.name == "JPEG 2000 Image Compression":
            kwargs["j2k_cr"] = [2]
        if transfer_syntax == JPEGLSLossless:
            kwargs["encoding_plugin"] = "pyjpegls"
        ds.compress(transfer_syntax, pixels, **kwargs)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax


def _encapsulate(ds: FileDataset, frame: bytes, transfer_syntax: UID) -> None:
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = transfer_syntax


def _pillow_jpeg(pixels: np.ndarray) -> bytes:
    """8-bit greyscale JPEG Baseline bytes from Pillow."""
    if pixels.dtype != np.uint8:
        raise ValueError("JPEG Baseline holds 8-bit pixels only")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def encode_jpeg_lossless_sv1(pixels: np.ndarray, precision: int) -> bytes:
    """A JPEG Lossless, Process 14, Selection Value 1 (ITU T.81 H) codestream of a grey image.

    One Huffman table in which each difference category 0..16 has the 5-bit code equal to it.
    """
    x = pixels.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:], pred[1:, 0], pred[1:, 1:] = x[0, :-1], x[:-1, 0], x[1:, :-1]
    diff = (x - pred) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff).ravel()
    bits: list[str] = []
    for d in diff.tolist():
        size = 16 if d == 32768 else abs(d).bit_length()
        bits.append(format(size, "05b"))
        if 0 < size < 16:
            bits.append(format(d if d > 0 else d + (1 << size) - 1, f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""
    data = data.replace(b"\xff", b"\xff\x00")
    h, w = pixels.shape
    sof = b"\xff\xc3\x00\x0b" + bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big")
    sof += b"\x01\x01\x11\x00"
    counts = bytes(4) + bytes([17]) + bytes(11)
    dht = b"\xff\xc4\x00\x24\x00" + counts + bytes(range(17))
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + sof + dht + sos + data + b"\xff\xd9"


def jpegls_dicom(tmp_path: Path, **tags: Any) -> tuple[Path, np.ndarray]:
    """A JPEG-LS Lossless DICOM and the pixels it must decode to.

    Encodes `mammogram_pixels()` when pydicom has a JPEG-LS encoder (package `pyjpegls`); else
    copies pydicom's bundled MR_small_jpeg_ls_lossless.dcm (a real JPEG-LS file), whose
    uncompressed twin MR_small.dcm gives the expected pixels (its window tags are removed, so
    the file's BitsStored/PixelRepresentation range is what maps onto [0, 1]).
    """
    if get_encoder(JPEGLSLossless).is_available:
        pixels = mammogram_pixels()
        return make_dicom(tmp_path, pixels, "jpegls.dcm", transfer_syntax=JPEGLSLossless,
                          **tags), pixels
    path = tmp_path / "jpegls.dcm"
    shutil.copyfile(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), path)
    ds = pydicom.dcmread(path)
    # full stored range; an MR file: marked MG, or read_image refuses its modality
    _set_tags(ds, {"WindowCenter": None, "WindowWidth": None, "Modality": "MG", **tags})
    ds.save_as(path)
    expected = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    return path, expected


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of the bytes of `src` to `dst` (a file cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# ---------------------------------------------------------------- bad input files

def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk (length, type, data, CRC)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny real PNG whose IHDR claims width x height (decoding it would need that much)."""
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    data = path.read_bytes()
    ihdr = struct.pack(">II", width, height) + data[24:29]
    path.write_bytes(data[:8] + png_chunk(b"IHDR", ihdr) + data[33:])
    return path


def empty_file(path: Path) -> Path:
    """A 0-byte file."""
    path.write_bytes(b"")
    return path


def multipage_tiff(path: Path) -> Path:
    """A TIFF holding 2 pages."""
    tifffile.imwrite(path, np.zeros((2, 9, 9), np.uint8))
    return path


def text_file(path: Path) -> Path:
    """A text file (not an image)."""
    path.write_text("patient notes, not an image\n" * 20)
    return path


def nan_tiff(path: Path) -> Path:
    """A float32 TIFF with one NaN pixel."""
    data = np.full((64, 48), 0.5, np.float32)
    data[3, 4] = np.nan
    tifffile.imwrite(path, data)
    return path


def colour_png(path: Path) -> Path:
    """An 8-bit RGB PNG whose channels differ (a real colour image)."""
    Image.fromarray(np.stack([mammogram_pixels(bits=8, seed=i) for i in range(3)], -1)).save(path)
    return path


def claiming_dicom(path: Path) -> Path:
    """An uncompressed DICOM whose header claims 30000x30000 pixels but stores 64x64."""
    src = make_dicom(path.parent, mammogram_pixels((64, 64)), name=path.name)
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns = 30000, 30000  # 900 MP claimed, a few kB stored
    ds.save_as(src)
    return src


# ---------------------------------------------------------------- hostile input files

def set_raw_elements(path: Path, **values: bytes) -> Path:
    """Rewrite DICOM `path` with elements holding raw bytes pydicom would refuse to encode.

    E.g. `set_raw_elements(p, WindowCenter=b"abcd", RescaleSlope=b"NaN")`; odd lengths are padded
    with a space as DICOM requires. The file must be explicit VR little endian (make_dicom's).
    """
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        tag = Tag(tag_for_keyword(keyword))
        value += b" " * (len(value) % 2)
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    ds.save_as(path)
    return path


def set_transfer_syntax_uid(path: Path, uid: str) -> Path:
    """Rewrite DICOM `path` with any TransferSyntaxUID in its file meta (even a bogus one)."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = uid
    ds.save_as(path, enforce_file_format=False)
    return path


def lut_item(data: list[int], entries: int | None = None, first: int = 0, bits: int = 16) -> Dataset:
    """One Modality/VOI LUT Sequence item: LUTDescriptor [entries, first, bits] and LUTData (US).

    `entries` defaults to len(data); a larger one makes a LUT shorter than its descriptor.
    """
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [len(data) if entries is None else entries, first, bits])
    item.add_new("LUTData", "US", [int(v) for v in data])
    return item


def zero_png(path: Path, width: int, height: int, stripe: int = 0) -> Path:
    """A real 8-bit grey PNG of width x height, all zero but for `stripe` rows of 200 at the top.

    Streams the zlib data row by row, so a 9990 x 9990 file (~100 kB) costs no 100 MB array.
    """
    z = zlib.compressobj(9)
    chunks = []
    for row in range(height):
        value = 200 if row < stripe else 0
        chunks.append(z.compress(b"\x00" + bytes([value]) * width))
    chunks.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                     + png_chunk(b"IDAT", b"".join(chunks)) + png_chunk(b"IEND", b""))
    return path


def pgm_with_maxval(path: Path, maxval: int, shape: tuple[int, int] = (48, 40)) -> Path:
    """A binary PGM (P5) whose header declares `maxval` (0 is invalid), with 8-bit pixels."""
    h, w = shape
    path.write_bytes(f"P5\n{w} {h}\n{maxval}\n".encode() + mammogram_pixels(shape, bits=8).tobytes())
    return path


def grey_png(path: Path, pixels: np.ndarray) -> Path:
    """An 8- or 16-bit grey PNG of `pixels` (uint8 or uint16 (H, W))."""
    Image.fromarray(pixels).save(path)
    return path


def fifo(path: Path) -> Path:
    """A named pipe (opening it for reading would block until a writer comes)."""
    os.mkfifo(path)
    return path


def rle_overrun_dicom(tmp_path: Path, name: str = "overrun.dcm") -> Path:
    """An RLE Lossless DICOM (96 x 80, 16-bit) whose segments decode to more bytes than a frame
    holds: pylibjpeg-rle (Rust) panics on it, with a PanicException that is a BaseException."""
    path = make_dicom(tmp_path, mammogram_pixels((96, 80), bits=12), name)
    ds = pydicom.dcmread(path)
    segment = bytes([129, 0]) * 61  # 61 replicate runs of 128 zero bytes: 7808 > 96 * 80
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    _encapsulate(ds, header + segment + segment, RLELossless)
    ds.save_as(path)
    return path
