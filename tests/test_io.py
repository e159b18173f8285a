"""mammo.io.read_image: every format and transfer syntax, tags, real data, and refused input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from conftest import require_data
from dicom_factory import (
    claiming_dicom,
    colour_png,
    empty_file,
    jpegls_dicom,
    make_dicom,
    mammogram_pixels,
    multipage_tiff,
    nan_tiff,
    png_chunk,
    png_claiming_size,
    text_file,
    truncated_copy,
)
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset

from mammo.errors import MammoInputError
from mammo.io import ImageMeta, read_image
from mammo.io.orientation import parse_filename


def _check_image(image: np.ndarray, meta: ImageMeta) -> None:
    assert isinstance(meta, ImageMeta)
    assert image.dtype == np.float32 and image.ndim == 2
    assert image.shape == tuple(meta.original_shape)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def _unit(pixels: np.ndarray, bits: int, signed: bool = False) -> np.ndarray:
    lo = -(2 ** (bits - 1)) if signed else 0
    return (pixels.astype(np.float64) - lo) / (2**bits - 1)


# ---------------------------------------------------------------- synthetic DICOM: transfer syntaxes

@pytest.mark.parametrize(("transfer_syntax", "bits", "lossy"), [
    (uid.ExplicitVRLittleEndian, 12, False), (uid.ImplicitVRLittleEndian, 16, False),
    (uid.RLELossless, 16, False), (uid.RLELossless, 8, False), (uid.JPEG2000Lossless, 12, False),
    (uid.JPEGLosslessSV1, 8, False), (uid.JPEGLosslessSV1, 12, False), (uid.JPEGLosslessSV1, 16, False),
    (uid.JPEG2000, 12, True), (uid.JPEGBaseline8Bit, 8, True),
], ids=lambda v: v.name.split(",")[0] if isinstance(v, uid.UID) else str(v))
def test_transfer_syntaxes_decode(tmp_path: Path, transfer_syntax: uid.UID, bits: int, lossy: bool) -> None:
    pixels = mammogram_pixels(bits=bits)
    if bits == 16:
        pixels[5, 3:5] = [0, 32768]  # JPEG Lossless: the one difference of category 16
    path = make_dicom(tmp_path, pixels, transfer_syntax=transfer_syntax, bits_stored=bits)
    image, meta = read_image(path)
    _check_image(image, meta)
    error = np.abs(image - _unit(pixels, bits))
    if lossy:
        assert error.mean() < 0.01 and error.max() < 0.05
    else:
        assert error.max() < 1e-6
    assert meta.format == "dicom" and meta.transfer_syntax == transfer_syntax.name
    assert meta.dtype == ("uint8" if bits == 8 else "uint16") and meta.bits_stored == bits
    assert meta.window is None and not meta.voi_lut_applied


def test_rle_from_pydicom_native_encoder(tmp_path: Path) -> None:
    pixels = mammogram_pixels(bits=16)
    path = make_dicom(tmp_path, pixels, bits_stored=16)
    ds = pydicom.dcmread(path)
    ds.compress(uid.RLELossless, encoding_plugin="pydicom")
    ds.save_as(path)
    np.testing.assert_allclose(read_image(path)[0], _unit(pixels, 16), atol=1e-6)


def test_jpegls_lossless_decodes_exactly(tmp_path: Path) -> None:
    path, pixels = jpegls_dicom(tmp_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    image, meta = read_image(path)
    _check_image(image, meta)
    assert meta.transfer_syntax == uid.JPEGLSLossless.name
    expected = _unit(pixels, int(ds.BitsStored), int(ds.PixelRepresentation) == 1)
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_signed_pixels_use_the_signed_range(tmp_path: Path) -> None:
    pixels = (mammogram_pixels(bits=12).astype(np.int32) - 2048).astype(np.int16)
    image, _ = read_image(make_dicom(tmp_path, pixels, bits_stored=12, signed=True))
    np.testing.assert_allclose(image, _unit(pixels, 12, signed=True), atol=1e-6)


def test_dicom_without_preamble_is_read(tmp_path: Path) -> None:
    path = make_dicom(tmp_path, name="raw.dcm")
    path.write_bytes(path.read_bytes()[128 + 4:])  # drop the preamble and "DICM"
    _check_image(*read_image(path))


# ---------------------------------------------------------------- synthetic DICOM: LUTs and windows

def _voi_lut(table: np.ndarray, bits: int) -> list[Dataset]:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [table.size, 0, bits])
    item.add_new("LUTData", "US", [int(v) for v in table])
    return [item]


def _linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)


_LUT = np.clip((np.arange(4096) - 1000) // 8, 0, 255)  # a clipped ramp with 8-bit output


@pytest.mark.parametrize(("tags", "expected", "window", "voi"), [
    ({"photometric": "MONOCHROME1", "VOILUTSequence": _voi_lut(_LUT, 8)},
     lambda x: 1.0 - _LUT[x] / 255.0, None, True),
    ({"photometric": "MONOCHROME1"}, lambda x: 1.0 - x / 4095.0, None, False),
    ({"WindowCenter": 2000, "WindowWidth": 1500}, lambda x: _linear_window(x, 2000, 1500),
     (2000.0, 1500.0), False),
    ({"WindowCenter": 2000, "WindowWidth": 1500, "VOILUTFunction": "LINEAR_EXACT"},
     lambda x: np.clip((x - 2000) / 1500 + 0.5, 0, 1), (2000.0, 1500.0), False),
    ({"WindowCenter": [1800, 2500], "WindowWidth": [1000, 400], "VOILUTFunction": "SIGMOID"},
     lambda x: 1.0 / (1.0 + np.exp(-4.0 * (x - 1800.0) / 1000.0)), (1800.0, 1000.0), False),
    # no window: the stored range 0..4095 maps through the rescale to -1000..7190, then onto [0, 1]
    ({"RescaleSlope": 2, "RescaleIntercept": -1000}, lambda x: x / 4095.0, None, False),
    ({"RescaleSlope": 0.5, "RescaleIntercept": 100, "WindowCenter": 1000, "WindowWidth": 800},
     lambda x: _linear_window(x * 0.5 + 100.0, 1000, 800), (1000.0, 800.0), False),
], ids=["mono1-voi-lut", "mono1", "window", "window-exact", "sigmoid", "rescale", "rescale-window"])
def test_luts_windows_and_inversion(tmp_path: Path, tags: dict, expected: Callable, window: tuple | None,
                                    voi: bool) -> None:
    pixels = mammogram_pixels(bits=12)
    image, meta = read_image(make_dicom(tmp_path, pixels, **tags))
    _check_image(image, meta)
    np.testing.assert_allclose(image, expected(pixels.astype(np.int64)), atol=1e-5)
    assert meta.window == window and meta.voi_lut_applied == voi
    assert meta.photometric == tags.get("photometric", "MONOCHROME2")


def test_dicom_metadata_is_filled(tmp_path: Path) -> None:
    _, meta = read_image(make_dicom(tmp_path, ImageLaterality="R", ViewPosition="CC"))
    assert meta.pixel_spacing_mm == (0.1, 0.1)
    assert meta.sources["pixel_spacing_mm"] == "ImagerPixelSpacing"
    assert meta.presentation_intent == "FOR PRESENTATION" and meta.manufacturer == "mammo tests"
    assert meta.patient_id == "SYNTH-001" and meta.study_uid and meta.sop_uid
    assert meta.to_dict()["laterality"] == "R"


# ---------------------------------------------------------------- laterality and view

def _code(value: str, meaning: str = "") -> list[Dataset]:
    item = Dataset()
    item.CodingSchemeDesignator = "SCT" if value[0].isdigit() else "SRT"
    item.CodeValue, item.CodeMeaning = value, meaning
    return [item]


@pytest.mark.parametrize(("tags", "lat", "view", "sources"), [
    ({"ImageLaterality": "L", "ViewPosition": "MLO"}, "L", "MLO", ("ImageLaterality", "ViewPosition")),
    ({"ImageLaterality": "R", "Laterality": "L", "ViewPosition": "CC"}, "R", "CC",
     ("ImageLaterality", "ViewPosition")),
    ({"Laterality": "R", "PatientOrientation": "MLO"}, "R", "MLO", ("Laterality", "PatientOrientation")),
    ({"ImageLaterality": "L", "PatientOrientation": ["A", "R"]}, "L", None, ("ImageLaterality", None)),
    ({"ImageLaterality": "L", "ViewCodeSequence": _code("399162004")}, "L", "CC",
     ("ImageLaterality", "ViewCodeSequence")),
    ({"ImageLaterality": "R", "ViewCodeSequence": _code("X-1", "medio-lateral oblique")}, "R", "MLO",
     ("ImageLaterality", "ViewCodeSequence")),
    ({"ImageLaterality": "R", "ViewCodeSequence": _code("R-10224")}, "R", "ML",
     ("ImageLaterality", "ViewCodeSequence")),
])
def test_laterality_and_view_from_tags(tmp_path: Path, tags: dict, lat: str, view: str | None,
                                       sources: tuple) -> None:
    # the image shows its chest wall on the other side: the tags must win over the image
    pixels = mammogram_pixels(side="right" if lat == "L" else "left")
    _, meta = read_image(make_dicom(tmp_path, pixels, name="img.dcm", **tags))
    assert (meta.laterality, meta.view) == (lat, view)
    assert (meta.sources["laterality"], meta.sources.get("view")) == sources


def test_dicom_without_tags_uses_filename_then_image(tmp_path: Path) -> None:
    _, meta = read_image(make_dicom(tmp_path, name="P7_L_DM_MLO.dcm"))
    assert (meta.laterality, meta.view) == ("L", "MLO")
    assert meta.sources["laterality"] == meta.sources["view"] == "filename"
    _, meta = read_image(make_dicom(tmp_path, mammogram_pixels(side="right"), name="x.dcm"))
    assert (meta.laterality, meta.view, meta.sources["laterality"]) == ("R", None, "image")


@pytest.mark.parametrize(("name", "expected"), [
    ("A_0002_1.RIGHT_MLO.png", ("R", "MLO")), ("P12_L_DM_CC.jpg", ("L", "CC")),
    ("P105_R_CM_MLO.jpg", ("R", "MLO")), ("0_L-CC.png", ("L", "CC")), ("0_R-MLO.png", ("R", "MLO")),
    ("Mass-Training_P_00001_LEFT_CC", ("L", "CC")), ("Calc-Test_P_00038_RIGHT_MLO_1.dcm", ("R", "MLO")),
    ("LEFT_CC", ("L", "CC")), ("/data/scans/case1_RCC.dcm", ("R", "CC")), ("img_LMLO.png", ("L", "MLO")),
    ("20586908_6c613a14b80a8591_MG_R_ML_ANON.dcm", ("R", "ML")), ("mdb001.png", (None, None)),
    ("mdb005.bmp", (None, None)), ("LEFT_RIGHT_CC.png", (None, "CC")),
    ("/data/LEFT_CC/scan.png", (None, None)),
    ("p1_l_cc.png", ("L", "CC")), ("case_rmlo.png", ("R", "MLO")), ("Right-XCCL.dcm", ("R", "XCCL")),
    ("scan_at_ml_lab_cv.png", (None, None)),  # lower-case words are not the rare views AT, ML, CV
])
def test_parse_filename(name: str, expected: tuple) -> None:
    assert parse_filename(name) == expected


@pytest.mark.parametrize("side", ["left", "right"])
def test_laterality_from_the_image(tmp_path: Path, side: str) -> None:
    path = tmp_path / "scan0001.png"
    Image.fromarray(mammogram_pixels((120, 90), bits=8, side=side)).save(path)
    _, meta = read_image(path)
    # stored convention: a left breast has its chest wall on the image's left edge
    assert meta.laterality == ("L" if side == "left" else "R") and meta.view is None
    assert meta.sources == {"laterality": "image"}


# ---------------------------------------------------------------- raster formats written here

def _pil(mode: str | None = None, **kw: object) -> Callable[[Path, np.ndarray], None]:
    def write(path: Path, pixels: np.ndarray) -> None:
        im = Image.fromarray(pixels)
        (im.convert(mode) if mode else im).save(path, **kw)
    return write


def _pgm_maxval_4095(path: Path, pixels: np.ndarray) -> None:
    h, w = pixels.shape
    path.write_bytes(f"P5\n# a comment\n{w} {h}\n4095\n".encode() + pixels.astype(">u2").tobytes())


@pytest.mark.parametrize(("name", "write", "bits", "fmt", "dtype", "bits_stored", "atol"), [
    ("a.png", _pil(), 8, "png", "uint8", 8, 1e-6),
    ("a.png", _pil(), 16, "png", "uint16", 16, 1e-6),
    ("a.png", _pil(), 12, "png", "uint16", 12, 1e-6),  # 12-bit values in a 16-bit PNG: / 4095
    ("a.pgm", _pil(), 8, "pgm", "uint8", 8, 1e-6),
    ("a.pgm", _pil(), 16, "pgm", "uint16", 16, 1e-6),
    ("a.pgm", _pgm_maxval_4095, 12, "pgm", "uint16", 12, 1e-4),  # value / maxval
    ("a.tif", tifffile.imwrite, 8, "tiff", "uint8", 8, 1e-6),
    ("a.tiff", tifffile.imwrite, 16, "tiff", "uint16", 16, 1e-6),
    ("a.bmp", _pil(), 8, "bmp", "uint8", 8, 1e-6),
    ("a.jpg", _pil(quality=95), 8, "jpeg", "uint8", 8, 0.05),
    ("a.png", _pil("RGB"), 8, "png", "uint8", 8, 1e-6),  # grey stored as colour is accepted
    ("a.png", _pil("RGBA"), 8, "png", "uint8", 8, 1e-6),
    ("a.png", _pil("LA"), 8, "png", "uint8", 8, 1e-6),
    ("a.png", _pil("P"), 8, "png", "uint8", 8, 1e-6),
    ("a.jpg", _pil("RGB", quality=95), 8, "jpeg", "uint8", 8, 0.05),
])
def test_raster_formats(tmp_path: Path, name: str, write: Callable, bits: int, fmt: str, dtype: str,
                        bits_stored: int, atol: float) -> None:
    pixels = mammogram_pixels(bits=bits)
    write(tmp_path / name, pixels)
    image, meta = read_image(tmp_path / name)
    _check_image(image, meta)
    error = np.abs(image - _unit(pixels, bits))
    assert error.max() < atol and error.mean() < 0.01
    assert (meta.format, meta.dtype, meta.bits_stored) == (fmt, dtype, bits_stored)
    assert meta.photometric == "MONOCHROME2"


def test_16bit_png_sbit_chunk_decides_the_depth(tmp_path: Path) -> None:
    pixels = mammogram_pixels(bits=12)  # values < 4096, but the file says 14 significant bits
    Image.fromarray(pixels).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    end = 8 + 8 + 13 + 4  # signature + IHDR chunk
    (tmp_path / "a.png").write_bytes(data[:end] + png_chunk(b"sBIT", b"\x0e") + data[end:])
    image, meta = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(image, pixels / 16383.0, atol=1e-6)
    assert (meta.bits_stored, meta.sources["bits_stored"]) == (14, "sBIT")


def test_float_tiffs(tmp_path: Path) -> None:
    unit = (mammogram_pixels(bits=16) / 65535.0).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", unit)
    image, meta = read_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(image, unit)  # already in [0, 1]: kept
    assert (meta.dtype, meta.bits_stored) == ("float32", 32)
    tifffile.imwrite(tmp_path / "g.tif", unit * 300.0 - 20.0)  # outside [0, 1]: min-max scaled
    np.testing.assert_allclose(read_image(tmp_path / "g.tif")[0], unit, atol=1e-5)
    tifffile.imwrite(tmp_path / "d.tif", unit.astype(np.float64))  # Pillow cannot: tifffile does
    image, meta = read_image(tmp_path / "d.tif")
    np.testing.assert_allclose(image, unit, atol=1e-6)
    assert (meta.format, meta.dtype) == ("tiff", "float64")


def test_binary_bmp(tmp_path: Path) -> None:
    mask = mammogram_pixels(bits=8) > 100
    Image.fromarray(mask).save(tmp_path / "m.bmp")
    image, meta = read_image(tmp_path / "m.bmp")
    np.testing.assert_array_equal(image, mask.astype(np.float32))
    assert (meta.dtype, meta.bits_stored) == ("bool", 1)


# ---------------------------------------------------------------- real data

def test_cbis_ddsm_dicoms(cbis_dicoms: list[Path]) -> None:
    from mammo.preprocess import chest_wall_side

    for path in cbis_dicoms:  # (read speed: `python -m mammo.bench`, not a limit here)
        image, meta = read_image(path)
        _check_image(image, meta)
        assert 4000 <= image.shape[0] <= 5200 and 2300 <= image.shape[1] <= 3200
        assert image.max() > 0.8 and meta.transfer_syntax == uid.RLELossless.name
        # the file's own label is its PatientID, e.g. "Mass-Test_P_00173_LEFT_CC"
        assert meta.sources == {"laterality": "Laterality", "view": "PatientOrientation", "acquisition": "SOPClassUID"}
        assert meta.acquisition == "film"  # Secondary Capture of a scanned film
        # the stored convention: left breast -> chest wall on the left edge, right -> right
        assert chest_wall_side(image) == ("left" if meta.laterality == "L" else "right")


def test_glam_16bit_png() -> None:
    image, meta = read_image(require_data("glam_sample/images") / "0_L-CC.png")
    _check_image(image, meta)
    assert (meta.format, meta.dtype, meta.bits_stored) == ("png", "uint16", 12)
    assert (meta.laterality, meta.view) == ("L", "CC") and meta.sources["view"] == "filename"
    assert image.max() == 1.0  # 12-bit values scaled by 4095, not 65535


def test_mias_png_laterality_from_the_image() -> None:
    folder = require_data("mias")
    for name, lat in (("mdb005.png", "R"), ("mdb006.png", "L")):
        image, meta = read_image(folder / name)
        _check_image(image, meta)
        assert image.shape == (1024, 1024) and meta.dtype == "uint8"
        assert (meta.laterality, meta.view, meta.sources) == (lat, None, {"laterality": "image"})


def test_mias_roi_bmp() -> None:
    image, meta = read_image(require_data("mias_roi") / "mdb005.bmp")
    _check_image(image, meta)
    assert meta.format == "bmp" and meta.dtype == "uint8"


def test_cdd_cesm_jpeg() -> None:
    image, meta = read_image(require_data("cdd_cesm/images") / "P102_R_DM_MLO.jpg")
    _check_image(image, meta)
    assert image.shape == (512, 512) and meta.format == "jpeg"
    assert (meta.laterality, meta.view) == ("R", "MLO")
    assert meta.sources == {"laterality": "filename", "view": "filename"}


def test_tissue_ddsm_png() -> None:
    image, meta = read_image(require_data("tissue_ddsm/fgt_seg") / "A_0002_1.RIGHT_MLO.png")
    _check_image(image, meta)
    assert image.shape == (960, 480) and meta.dtype == "uint8"
    assert (meta.laterality, meta.view) == ("R", "MLO")  # the label wins over the (mirrored) image


# ---------------------------------------------------------------- refused input

REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda p: p / "nope.png", r"nope\.png.*does not exist.*Check the path"),
    "directory": (lambda p: p, "is a directory, not a file"),
    "empty-png": (lambda p: empty_file(p / "e.png"), r"e\.png.*empty \(0 bytes\)"),
    "empty-dcm": (lambda p: empty_file(p / "e.dcm"), r"e\.dcm.*empty \(0 bytes\)"),
    "text": (lambda p: text_file(p / "notes.txt"), r"notes\.txt.*not an image file.*Pass a DICOM, PNG"),
    "text-as-png": (lambda p: text_file(p / "notes.png"), "not an image file"),
    "text-as-dcm": (lambda p: text_file(p / "notes.dcm"), r"notes\.dcm.*not a valid DICOM file"),
    "no-pixel-data": (lambda p: make_dicom(p, PixelData=None), "has no pixel data"),
    "multi-frame": (lambda p: make_dicom(p, np.stack([mammogram_pixels()] * 3)),
                    r"multi-frame DICOM \(3 frames"),
    "colour-png": (lambda p: colour_png(p / "photo.png"), r"photo\.png.*colour image.*convert"),
    "colour-dicom": (lambda p: make_dicom(p, np.stack([mammogram_pixels(bits=8, seed=i) for i in range(3)],
                                                      -1), photometric="RGB"), "colour image"),
    "bomb-png": (lambda p: png_claiming_size(p / "bomb.png", 11000, 10000),
                 r"bomb\.png.*110 megapixels.*over the 40-megapixel limit"),
    "bomb-png-pillow": (lambda p: png_claiming_size(p / "huge.png", 20000, 20000),
                        r"huge\.png.*(too large|megapixel)"),
    "bomb-dicom": (lambda p: claiming_dicom(p / "bomb.dcm"), r"bomb\.dcm.*900 megapixels"),
    "nan-tiff": (lambda p: nan_tiff(p / "nan.tif"), r"nan\.tif.*NaN"),
    "multipage-tiff": (lambda p: multipage_tiff(p / "s.tif"),
                       r"s\.tif': it holds 2 images \(pages\): multi-page TIFFs are not supported"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_input(tmp_path: Path, case: str) -> None:
    make, message = REFUSED[case]
    path = make(tmp_path)
    with pytest.raises(MammoInputError, match=message):
        read_image(path)


def test_not_a_path() -> None:
    with pytest.raises(MammoInputError, match="expects a file path"):
        read_image(np.zeros((4, 4)))  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", ["png", "jpg", "bmp", "tif", "pgm"])
def test_truncated_raster(tmp_path: Path, suffix: str) -> None:
    Image.fromarray(mammogram_pixels((200, 160), bits=8)).save(tmp_path / f"a.{suffix}")
    cut = truncated_copy(tmp_path / f"a.{suffix}", tmp_path / f"cut.{suffix}")
    with pytest.raises(MammoInputError, match=r"cut\..*truncated or damaged.*again"):
        read_image(cut)


@pytest.mark.parametrize("fraction", [0.5, 0.99])
@pytest.mark.parametrize("transfer_syntax", [uid.ExplicitVRLittleEndian, uid.RLELossless,
                                             uid.JPEG2000Lossless, uid.JPEGLosslessSV1])
def test_truncated_dicom(tmp_path: Path, transfer_syntax: uid.UID, fraction: float) -> None:
    src = make_dicom(tmp_path, mammogram_pixels((200, 160)), transfer_syntax=transfer_syntax)
    cut = truncated_copy(src, tmp_path / "cut.dcm", fraction)
    with pytest.raises(MammoInputError, match=r"cut\.dcm.*DICOM file is truncated.*again"):
        read_image(cut)


def test_truncated_real_dicom(cbis_dicoms: list[Path], tmp_path: Path) -> None:
    cut = truncated_copy(cbis_dicoms[0], tmp_path / "cut.dcm")
    with pytest.raises(MammoInputError, match=r"truncated.*download the file again"):
        read_image(cut)


def test_grey_rgb_dicom_is_accepted(tmp_path: Path) -> None:
    grey = np.repeat(mammogram_pixels(bits=8)[..., None], 3, axis=-1)
    image, meta = read_image(make_dicom(tmp_path, grey, photometric="RGB"))
    np.testing.assert_allclose(image, grey[..., 0] / 255.0, atol=1e-6)
    assert meta.photometric == "RGB"
