"""mammo.io.read_image on hostile input (issue "Reliability"): each case is a file made here, and
the outcome is exact: a MammoInputError naming the file and the problem, or the image accepted
with the right pixels and a recorded `meta.warnings` sentence / `meta.qc` flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from dicom_factory import (
    fifo,
    grey_png,
    lut_item,
    make_dicom,
    mammogram_pixels,
    pgm_with_maxval,
    png_claiming_size,
    rle_overrun_dicom,
    set_raw_elements,
    set_transfer_syntax_uid,
    zero_png,
)
from pydicom import uid
from pydicom.uid import BasicTextSRStorage

import mammo.io.dicom
import mammo.io.raster
from mammo.errors import MammoInputError, ModalityNotAllowedError
from mammo.io import read_image
from mammo.io.limits import MAX_ASPECT, MAX_PIXELS, MIN_SIDE, peak_request_bytes

PIXELS = mammogram_pixels((96, 80), bits=12)  # 12-bit, full range 0..4095


def _full_range(pixels: np.ndarray = PIXELS, bits: int = 12) -> np.ndarray:
    return pixels.astype(np.float64) / (2**bits - 1)


def _refused(path: Path, message: str) -> MammoInputError:
    """read_image(path) raises MammoInputError naming the file and matching `message`."""
    with pytest.raises(MammoInputError, match=message) as info:
        read_image(path)
    assert f"Cannot read image '{path}': " in str(info.value)
    return info.value


def _no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decoding fail the test: a refusal must come from the header alone."""
    def fail(*_: object) -> None:
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(mammo.io.raster, "_decode", fail)
    monkeypatch.setattr(mammo.io.dicom, "_decode", fail)


# ---------------------------------------------------------------- 1. size and shape limits

def test_the_limits_are_the_documented_ones() -> None:
    assert (MAX_PIXELS, MIN_SIDE, MAX_ASPECT) == (40_000_000, 32, 6.0)
    # the measured memory bound at the limit (mammo.io.limits docstring)
    assert peak_request_bytes(MAX_PIXELS, "breast") < 0.4 * 2**30
    assert peak_request_bytes(MAX_PIXELS, "cascade") < 2.0 * 2**30


def test_real_9990x9990_zero_png_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = zero_png(tmp_path / "zeros.png", 9990, 9990, stripe=10)
    assert path.stat().st_size < 200_000  # ~100 kB on disk, 100 MP decoded
    _no_decode(monkeypatch)
    _refused(path, r"it is 9990x9990 = 100 megapixels, over the 40-megapixel limit")


def test_png_just_over_the_limit_refused(tmp_path: Path, monkeypatch) -> None:
    _no_decode(monkeypatch)
    _refused(png_claiming_size(tmp_path / "big.png", 8000, 5001), r"8000x5001 = 40 megapixels, over")


def test_dicom_rows_columns_over_the_limit_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = make_dicom(tmp_path, mammogram_pixels((64, 64)), "big.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 7000, 6000  # 42 MP claimed
    ds.save_as(path)
    _no_decode(monkeypatch)
    _refused(path, r"big\.dcm': it is 6000x7000 = 42 megapixels, over the 40-megapixel limit")


@pytest.mark.parametrize(("shape", "message"), [
    ((1, 1), r"it is 1x1 pixels, too small to be a mammogram \(mammo needs at least 32 pixels"),
    ((3, 3), r"it is 3x3 pixels, too small"),
    ((1, 5000), r"it is 5000x1 pixels, too small"),
    ((31, 200), r"it is 200x31 pixels, too small"),
    ((40, 400), r"it is 400x40 pixels, a 10\.0:1 strip; a mammogram's sides differ by at most 6:1"),
    ((5000, 640), r"it is 640x5000 pixels, a 7\.8:1 strip"),
])
def test_degenerate_shapes_refused(tmp_path: Path, shape: tuple[int, int], message: str) -> None:
    rng = np.random.default_rng(0)
    path = grey_png(tmp_path / "thin.png", rng.integers(0, 255, shape, dtype=np.uint8))
    _refused(path, message)


def test_degenerate_dicom_refused(tmp_path: Path) -> None:
    _refused(make_dicom(tmp_path, mammogram_pixels((8, 300)), "strip.dcm"), r"300x8 pixels, too small")


def test_shapes_at_the_limits_are_accepted_with_flags(tmp_path: Path) -> None:
    image, meta = read_image(grey_png(tmp_path / "small.png", mammogram_pixels((32, 32), bits=8)))
    assert image.shape == (32, 32) and "small_image" in meta.qc
    image, meta = read_image(grey_png(tmp_path / "long.png", mammogram_pixels((600, 100), bits=8)))
    assert image.shape == (600, 100) and "odd_aspect_ratio" in meta.qc


# ---------------------------------------------------------------- 2. damaged headers: messages, no traceback

def test_uid_that_is_not_a_transfer_syntax(tmp_path: Path) -> None:
    path = set_transfer_syntax_uid(make_dicom(tmp_path, PIXELS, "ts.dcm"), "1.2.3.4.5.6.7.8.9.1")
    _refused(path, r"ts\.dcm': its transfer syntax UID '1\.2\.3\.4\.5\.6\.7\.8\.9\.1' is not a DICOM "
             r"transfer syntax")


@pytest.mark.parametrize(("center", "width"), [(b"abcd", b"100"), (b"2000", b"-5"), (b"NaN", b"100"),
                                               (b"2000", b"")])
def test_unusable_window_is_ignored_with_a_warning(tmp_path: Path, center: bytes, width: bytes) -> None:
    path = set_raw_elements(make_dicom(tmp_path, PIXELS), WindowCenter=center, WindowWidth=width)
    image, meta = read_image(path)
    np.testing.assert_allclose(image, _full_range(), atol=1e-6)  # the full stored range instead
    assert meta.window is None
    assert len(meta.warnings) == 1 and meta.warnings[0].startswith("WindowCenter/WindowWidth (")
    assert "not a usable window" in meta.warnings[0] and "full stored range used" in meta.warnings[0]


def test_empty_voi_lut_is_ignored_with_a_warning(tmp_path: Path) -> None:
    image, meta = read_image(make_dicom(tmp_path, PIXELS, VOILUTSequence=[lut_item([], 4096, bits=8)]))
    np.testing.assert_allclose(image, _full_range(), atol=1e-6)
    assert not meta.voi_lut_applied
    assert meta.warnings == ["the VOI LUT Sequence was ignored because its LUTData is empty; "
                             "the full stored range was used"]


def test_short_voi_lut_falls_back_to_the_window(tmp_path: Path) -> None:
    image, meta = read_image(make_dicom(tmp_path, PIXELS, VOILUTSequence=[lut_item(list(range(100)), 4096)],
                                        WindowCenter=2048, WindowWidth=4096))
    expected = np.clip((PIXELS - (2048 - 0.5)) / 4095 + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert meta.window == (2048.0, 4096.0) and not meta.voi_lut_applied
    assert meta.warnings == ["the VOI LUT Sequence was ignored because its LUTData holds 100 entries "
                             "but its LUTDescriptor declares 4096; the window was used"]


def test_modality_lut_is_applied(tmp_path: Path) -> None:
    table = np.clip(np.arange(4096) // 2 + 100, 0, 4095)
    image, meta = read_image(make_dicom(tmp_path, PIXELS, ModalityLUTSequence=[lut_item(table, bits=12)]))
    np.testing.assert_allclose(image, table[PIXELS] / 4095.0, atol=1e-6)
    assert meta.warnings == []


@pytest.mark.parametrize(("item", "message"), [
    (lut_item(list(range(100)), 4096), "LUTData holds 100 entries but its LUTDescriptor declares 4096"),
    (lut_item([], 4096), "LUTData is empty"),
])
def test_damaged_modality_lut_is_refused(tmp_path: Path, item, message: str) -> None:
    # Refused, not ignored: without it the stored values have no known meaning (dicom_lut docstring).
    path = make_dicom(tmp_path, PIXELS, "mlut.dcm", ModalityLUTSequence=[item])
    _refused(path, rf"mlut\.dcm': its Modality LUT is damaged \(its {message}\), so its stored values "
             "cannot be converted")


@pytest.mark.parametrize("maxval", [0, 70000])
def test_pgm_with_invalid_maxval(tmp_path: Path, maxval: int) -> None:
    _refused(pgm_with_maxval(tmp_path / "z.pgm", maxval),
             rf"z\.pgm': its PGM/PPM header gives maxval {maxval}, but it must be between 1 and 65535")


@pytest.mark.parametrize(("tags", "raw", "message"), [
    ({}, {"NumberOfFrames": b"x1"}, r"its NumberOfFrames 'x1' is not a number \(the header is damaged\)"),
    ({}, {"Rows": b"\x60\x00\x01\x00"}, r"its Rows '\[96, 1\]' is not a number"),  # 2 values
    ({}, {"NumberOfFrames": b"1e400"}, r"its NumberOfFrames '1e400' is not a number"),  # overflows
    ({"Rows": None}, {}, r"its header has no Rows \(the header is damaged\)"),
    ({"BitsStored": 20}, {}, r"its header is inconsistent: BitsStored 20 does not fit in BitsAllocated 16"),
])
def test_damaged_image_size_elements(tmp_path: Path, tags: dict, raw: dict, message: str) -> None:
    path = set_raw_elements(make_dicom(tmp_path, PIXELS, "h.dcm", **tags), **raw)
    _refused(path, rf"h\.dcm': {message}")


def test_damaged_pixel_spacing_is_ignored_with_a_warning(tmp_path: Path) -> None:
    path = set_raw_elements(make_dicom(tmp_path, PIXELS, "s.dcm", ImagerPixelSpacing=None),
                            PixelSpacing=b"abc\\0.1")
    image, meta = read_image(path)
    assert meta.pixel_spacing_mm is None and "pixel_spacing_mm" not in meta.sources
    assert len(meta.warnings) == 1 and meta.warnings[0].startswith("PixelSpacing ")


# ---------------------------------------------------------------- 3. silently wrong before

@pytest.mark.parametrize(("tags", "message"), [
    ({"RescaleSlope": b"NaN"}, r"its RescaleSlope is 'NaN', not a finite number"),
    ({"RescaleSlope": b"inf"}, r"its RescaleSlope is 'inf', not a finite number"),
    ({"RescaleSlope": b"abcd"}, r"its RescaleSlope is 'abcd', not a finite number"),
    ({"RescaleIntercept": b"-inf"}, r"its RescaleIntercept is '-inf', not a finite number"),
    ({"RescaleSlope": b"0"}, r"its RescaleSlope is 0, which would give every pixel the same value"),
])
def test_unusable_rescale_is_refused(tmp_path: Path, tags: dict, message: str) -> None:
    _refused(set_raw_elements(make_dicom(tmp_path, PIXELS, "r.dcm"), **tags), rf"r\.dcm': {message}")


def test_float64_tiff_near_1e300_is_scaled_not_turned_to_nan(tmp_path: Path) -> None:
    unit = PIXELS / 4095.0
    tifffile.imwrite(tmp_path / "big.tif", unit * 1e300)
    image, meta = read_image(tmp_path / "big.tif")
    np.testing.assert_allclose(image, unit, atol=1e-6)  # min-max scaled in float64, then cast
    assert meta.dtype == "float64"
    tifffile.imwrite(tmp_path / "f32.tif", ((unit * 2 - 1) * 3e38).astype(np.float32))  # +-3e38
    np.testing.assert_allclose(read_image(tmp_path / "f32.tif")[0], unit, atol=1e-6)
    tifffile.imwrite(tmp_path / "huge.tif", (unit * 2 - 1) * 1.7e308)  # max - min overflows
    _refused(tmp_path / "huge.tif", r"huge\.tif': its pixel values span -1\.7e\+308 to 1\.7e\+308, "
             "beyond what can be scaled")


def test_nan_after_any_conversion_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = grey_png(tmp_path / "a.png", mammogram_pixels(bits=8))
    real = mammo.io.raster.to_unit

    def nan_to_unit(*args: object):
        image, *rest = real(*args)
        image[0, 0] = np.nan
        return image, *rest
    monkeypatch.setattr(mammo.io.raster, "to_unit", nan_to_unit)
    _refused(path, r"its pixel values became NaN, infinite or left \[0, 1\] when converted")


@pytest.mark.parametrize(("photometric", "pixels", "message"), [
    ("RGB", PIXELS, r"its header is inconsistent: PhotometricInterpretation RGB needs 3 sample\(s\) "
     r"per pixel, but SamplesPerPixel is 1"),
    ("MONOCHROME2", np.repeat(mammogram_pixels(bits=8)[..., None], 3, -1),
     r"its header is inconsistent: PhotometricInterpretation MONOCHROME2 needs 1 sample\(s\) per "
     r"pixel, but SamplesPerPixel is 3"),
    ("ARGB", PIXELS, r"its PhotometricInterpretation 'ARGB' is not one mammo reads"),
])
def test_inconsistent_photometric_interpretation(tmp_path: Path, photometric: str, pixels: np.ndarray,
                                                  message: str) -> None:
    _refused(make_dicom(tmp_path, pixels, "p.dcm", photometric=photometric), rf"p\.dcm': {message}")


def test_missing_photometric_interpretation_assumes_monochrome2(tmp_path: Path) -> None:
    image, meta = read_image(make_dicom(tmp_path, PIXELS, PhotometricInterpretation=None))
    np.testing.assert_allclose(image, _full_range(), atol=1e-6)
    assert meta.warnings == ["PhotometricInterpretation is missing; MONOCHROME2 was assumed"]


@pytest.mark.parametrize("modality", ["CT", "US", "CR"])
def test_other_modalities_refused_unless_allowed(tmp_path: Path, modality: str) -> None:
    path = make_dicom(tmp_path, PIXELS, "m.dcm", Modality=modality)
    error = _refused(path, rf"m\.dcm': its Modality is {modality}, not MG \(mammography\)")
    assert isinstance(error, ModalityNotAllowedError) and error.modality == modality
    assert "--allow-modality" in str(error) and "allow_modality=True" in str(error)
    image, meta = read_image(path, allow_modality=True)
    np.testing.assert_allclose(image, _full_range(), atol=1e-6)
    assert meta.modality == modality and "modality_not_mg" in meta.qc


def test_missing_modality_is_accepted_with_a_flag(tmp_path: Path) -> None:
    _, meta = read_image(make_dicom(tmp_path, PIXELS, Modality=None))
    assert meta.modality is None and "modality_missing" in meta.qc
    _, meta = read_image(make_dicom(tmp_path, PIXELS, name="mg.dcm"))
    assert meta.modality == "MG" and "modality_missing" not in meta.qc


def _blank(kind: str) -> np.ndarray:
    values = {"white": 255, "black": 0, "grey": 128}
    image = np.full((200, 160), values.get(kind, 255), np.uint8)
    if kind == "white-with-label":
        image[5:9, 5:20] = 0  # a small black label: 0.2% of the pixels
    if kind == "faint":
        image[:] = 128 + (np.arange(160) % 2)  # two neighbouring grey levels
    return image


@pytest.mark.parametrize(("kind", "what"), [("white", "white"), ("black", "black"),
                                            ("grey", r"grey \(0\.50\)"), ("white-with-label", "white"),
                                            ("faint", r"grey \(0\.50\)")])
def test_blank_rasters_refused(tmp_path: Path, kind: str, what: str) -> None:
    _refused(grey_png(tmp_path / "blank.png", _blank(kind)),
             rf"blank\.png': it has no usable dynamic range: 99% of its pixels have \(nearly\) the same "
             rf"value, all {what} once scaled")


def test_blank_dicom_refused(tmp_path: Path) -> None:
    stored_zero = np.zeros((96, 80), np.uint16)  # MONOCHROME1: all white
    _refused(make_dicom(tmp_path, stored_zero, "w.dcm", photometric="MONOCHROME1"),
             r"w\.dcm': it has no usable dynamic range.*all white")


def test_window_leaving_no_range_is_ignored_with_a_warning(tmp_path: Path) -> None:
    image, meta = read_image(make_dicom(tmp_path, PIXELS, WindowCenter=60000, WindowWidth=10))
    np.testing.assert_allclose(image, _full_range(), atol=1e-6)
    assert meta.window is None
    assert meta.warnings == ["the window (center 60000, width 10) leaves no usable dynamic range (it "
                             "maps nearly every pixel to one grey level); it was ignored and the full "
                             "stored range used"]


# ---------------------------------------------------------------- 5. messages that misled

def test_300_byte_dicom_says_truncated(tmp_path: Path) -> None:
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(make_dicom(tmp_path, PIXELS).read_bytes()[:300])
    error = _refused(cut, r"cut\.dcm': the DICOM file is truncated or damaged: it has no pixel data "
                     r"although its header describes an image \(Digital Mammography X-Ray Image Storage")
    assert "structured report" not in str(error)


def test_dicom_that_is_not_an_image_says_so(tmp_path: Path) -> None:
    path = make_dicom(tmp_path, PIXELS, "sr.dcm", PixelData=None, Rows=None, Columns=None,
                      SOPClassUID=BasicTextSRStorage)
    ds = pydicom.dcmread(path)
    ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.save_as(path)
    _refused(path, r"sr\.dcm': the DICOM file has no pixel data \(it is not an image: e\.g\. a structured")


@pytest.mark.timeout(20)  # opening a FIFO for reading would block: the check must come first
def test_fifo_is_not_a_regular_file(tmp_path: Path) -> None:
    _refused(fifo(tmp_path / "pipe.png"), r"pipe\.png': it is not a regular file but a named pipe \(FIFO\)")


def test_device_is_not_a_regular_file() -> None:
    _refused(Path("/dev/null"), r"it is not a regular file but a device")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64])  # float64: Pillow fails, tifffile
def test_multipage_tiff_says_multi_page(tmp_path: Path, dtype: type) -> None:
    tifffile.imwrite(tmp_path / "two.tif", np.stack([mammogram_pixels(bits=8)] * 2).astype(dtype))
    error = _refused(tmp_path / "two.tif", r"two\.tif': it holds 2 images \(pages\): multi-page TIFFs "
                     "are not supported. Save each mammogram as its own single-image file.$")
    assert "truncated" not in str(error) and str(error).count("Cannot read image") == 1


def test_refusals_are_plain_mammo_input_errors(tmp_path: Path) -> None:
    """Channels print type(error).__name__ (eval's error rows): no private subclass leaks out."""
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    tifffile.imwrite(tmp_path / "cut.tif", mammogram_pixels((200, 160), bits=8))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "cut.tif").read_bytes()[:3000])
    for path in (tmp_path / "bad.png", tmp_path / "cut.tif"):
        with pytest.raises(MammoInputError) as info:
            read_image(path)
        assert type(info.value) is MammoInputError, type(info.value)


def test_rust_decoder_panic_becomes_a_message(tmp_path: Path) -> None:
    """pylibjpeg-rle panics on this file; pyo3's PanicException is a BaseException."""
    _refused(rle_overrun_dicom(tmp_path), r"overrun\.dcm': its pixel data \(RLE Lossless\) cannot be "
             r"decoded \((PanicException|ValueError|RuntimeError)")


@pytest.mark.parametrize("kind", ["rle.dcm", "j2k.dcm", "raw.dcm", "a.tif", "a.png", "a.jpg", "a.bmp"])
def test_damaged_bytes_give_a_message_or_a_valid_image(tmp_path: Path, kind: str) -> None:
    """40 seeded copies with a few bytes overwritten (a small fuzz): never another exception."""
    pixels = mammogram_pixels((96, 80), bits=8 if kind.startswith("a.") else 12)
    if kind.startswith("a."):
        source = grey_png(tmp_path / f"source.{kind[2:]}", pixels)
    else:
        syntax = {"rle.dcm": uid.RLELossless, "j2k.dcm": uid.JPEG2000Lossless}.get(kind, uid.ExplicitVRLittleEndian)
        source = make_dicom(tmp_path, pixels, f"source_{kind}", transfer_syntax=syntax)
    data, rng = source.read_bytes(), np.random.default_rng(7)
    for i in range(40):
        damaged = bytearray(data)
        for at in rng.integers(0, min(len(data), 600) if i % 2 else len(data), rng.integers(1, 6)):
            damaged[at] = int(rng.integers(0, 256))
        path = tmp_path / f"damaged{i}.{kind.split('.')[-1]}"
        path.write_bytes(bytes(damaged))
        try:
            image, _ = read_image(path)
        except MammoInputError as error:
            assert f"'{path}'" in str(error)
        else:
            assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
