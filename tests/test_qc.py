"""mammo.qc.qc_flags: one synthetic image (or header) per flag, the flags' order, and the flags
reaching `ImageMeta.qc` / `meta.to_dict()` through read_image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import grey_png, make_dicom, mammogram_pixels
from pydicom.uid import DigitalMammographyXRayImageStorageForProcessing

from mammo.io import ImageMeta, read_image
from mammo.qc import FLAGS, qc_flags


def _mammogram(shape: tuple[int, int] = (600, 400)) -> np.ndarray:
    """float32 (H, W) in [0, 1]: a textured half-ellipse breast on the left edge."""
    return mammogram_pixels(shape, bits=12).astype(np.float32) / 4095.0


def _png_meta() -> ImageMeta:
    return ImageMeta(format="png")


def _dicom_meta(**fields: object) -> ImageMeta:
    return ImageMeta(format="dicom", **{"modality": "MG", **fields})


def test_a_clean_mammogram_has_no_flag() -> None:
    assert qc_flags(_mammogram(), _png_meta()) == []
    assert qc_flags(_mammogram(), _dicom_meta()) == []


def test_no_breast_found() -> None:
    noise = np.random.default_rng(0).uniform(0.0, 0.4, (600, 400)).astype(np.float32)
    assert qc_flags(noise, _png_meta()) == ["no_breast_found"]


def test_saturated() -> None:
    image = _mammogram()
    image[200:400, :120] = 1.0  # ~20% of the breast clipped white
    assert qc_flags(image, _png_meta()) == ["saturated"]
    image = _mammogram()
    image[290:310, :100] = 1.0  # a small clipped spot: fine
    assert qc_flags(image, _png_meta()) == []


def test_low_dynamic_range() -> None:
    image = _mammogram() * np.float32(4095 / 65535)  # 12-bit values divided by 65535
    assert qc_flags(image, _png_meta()) == ["low_dynamic_range"]


def test_small_image_and_odd_aspect_ratio() -> None:
    assert qc_flags(_mammogram((200, 160)), _png_meta()) == ["small_image"]
    assert qc_flags(_mammogram((1400, 400)), _png_meta()) == ["odd_aspect_ratio"]
    assert qc_flags(_mammogram((300, 90)), _png_meta()) == ["small_image", "odd_aspect_ratio"]


@pytest.mark.parametrize(("fields", "flags"), [
    ({"modality": "CT"}, ["modality_not_mg"]),
    ({"modality": None}, ["modality_missing"]),
    ({"presentation_intent": "FOR PROCESSING"}, ["for_processing"]),
    ({"presentation_intent": "FOR PRESENTATION"}, []),
    ({"breast_implant_present": True}, ["implant_suspected"]),
    ({"breast_implant_present": False}, []),
    ({"modality": None, "presentation_intent": "FOR PROCESSING", "breast_implant_present": True},
     ["modality_missing", "for_processing", "implant_suspected"]),
])
def test_header_flags(fields: dict, flags: list[str]) -> None:
    assert qc_flags(_mammogram(), _dicom_meta(**fields)) == flags


def test_rasters_and_arrays_get_no_header_flags() -> None:
    # no Modality is normal for a PNG: not flagged
    assert qc_flags(_mammogram(), ImageMeta()) == [] and qc_flags(_mammogram(), _png_meta()) == []


def test_flags_come_in_table_order() -> None:
    image = _mammogram((1400, 400)) * np.float32(0.1)
    meta = _dicom_meta(modality="US", presentation_intent="FOR PROCESSING", breast_implant_present=True)
    flags = qc_flags(image, meta)
    assert flags == ["low_dynamic_range", "odd_aspect_ratio", "modality_not_mg", "for_processing",
                     "implant_suspected"]
    assert flags == [f for f in FLAGS if f in flags]


def test_qc_and_warnings_reach_meta_to_dict(tmp_path: Path) -> None:
    pixels = mammogram_pixels((96, 80), bits=12)
    path = make_dicom(tmp_path, pixels, Modality=None, PresentationIntentType="FOR PROCESSING",
                      BreastImplantPresent="YES", WindowCenter=60000, WindowWidth=10)
    image, meta = read_image(path)
    assert meta.qc == ["small_image", "modality_missing", "for_processing", "implant_suspected"]
    assert meta.breast_implant_present is True and meta.presentation_intent == "FOR PROCESSING"
    saved = json.loads(json.dumps(meta.to_dict()))
    assert saved["qc"] == meta.qc and saved["warnings"] == meta.warnings and len(meta.warnings) == 1
    assert saved["modality"] is None and saved["breast_implant_present"] is True


def test_for_processing_from_the_sop_class_and_implant_view_modifier(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    modifier = Dataset()
    modifier.CodeValue, modifier.CodingSchemeDesignator = "399161006", "SCT"
    modifier.CodeMeaning = "implant displaced"
    path = make_dicom(tmp_path, mammogram_pixels((600, 400), bits=12), PresentationIntentType=None,
                      SOPClassUID=DigitalMammographyXRayImageStorageForProcessing,
                      ViewModifierCodeSequence=[modifier])
    _, meta = read_image(path)
    assert meta.presentation_intent == "FOR PROCESSING"
    assert meta.sources["presentation_intent"] == "SOPClassUID"
    assert meta.qc == ["for_processing", "implant_suspected"]


def test_raster_flags_through_read_image(tmp_path: Path) -> None:
    pixels = mammogram_pixels((600, 400), bits=8)
    pixels[200:400, :120] = 255
    _, meta = read_image(grey_png(tmp_path / "clipped.png", pixels))
    assert meta.qc == ["saturated"] and meta.warnings == []


def test_real_dicoms_raise_no_flag(cbis_dicoms: list[Path]) -> None:
    for path in cbis_dicoms[:2]:
        _, meta = read_image(path)
        assert meta.qc == [] and meta.warnings == [] and meta.modality == "MG"
