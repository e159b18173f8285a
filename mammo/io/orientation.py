r"""Laterality ("L"/"R") and view ("CC", "MLO", ...) from DICOM tags, file names or the image.

Display convention found in the real data (checked on the 8 CBIS-DDSM DICOMs, the GLAM exam
`0_{L,R}-{CC,MLO}.png`, CDD-CESM `P*_{L,R}_*.jpg`, MIAS and the tissue_ddsm `B_*` files):
mammograms are stored as a radiologist hangs them, so a LEFT breast (L) has its chest wall on the
image's LEFT edge (nipple pointing right) and a RIGHT breast (R) has its chest wall on the image's
RIGHT edge. This is also what DICOM's standard PatientOrientation says (L CC "A\R", R CC "P\L").
Some datasets mirror their images (49 of the 60 tissue_ddsm files, `A_*` and `D_*`, are labelled
RIGHT_MLO but show the chest wall on the left), which is why a label in a tag or in the file name
always wins over the image, and inferring laterality from the image is the last resort.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

import numpy as np

_LATERALITY_WORDS = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}

# Mammographic views (DICOM ViewPosition defined terms for MG, plus XCC and ISO).
VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "XCC", "XCCL", "XCCM", "FB", "SIO", "ISO", "AT", "CV")

# ViewCodeSequence (DICOM CID 4014): SNOMED CT codes and their legacy SNOMED-RT ("SRT") codes.
_VIEW_CODES = {
    "399162004": "CC", "R-10242": "CC",
    "399368009": "MLO", "R-10226": "MLO",
    "399260004": "ML", "R-10224": "ML",
    "399352003": "LM", "R-10228": "LM",
    "399099002": "LMO", "R-10230": "LMO",
    "399196006": "FB", "R-10244": "FB",
    "399188001": "SIO", "R-102D0": "SIO",
    "441555000": "ISO",
    "399192008": "XCCL", "R-1024A": "XCCL",
    "399101009": "XCCM", "R-1024B": "XCCM",
}

# ViewCodeSequence code meanings, compared after lower-casing and dropping all but letters.
_VIEW_MEANINGS = {
    "craniocaudal": "CC",
    "mediolateraloblique": "MLO",
    "mediolateral": "ML",
    "lateromedial": "LM",
    "lateromedialoblique": "LMO",
    "caudocranialfrombelow": "FB",
    "superolateraltoinferomedialoblique": "SIO",
    "inferomedialtosuperolateraloblique": "ISO",
    "craniocaudalexaggeratedlaterally": "XCCL",
    "craniocaudalexaggeratedmedially": "XCCM",
    "exaggeratedcraniocaudal": "XCC",
    "axillarytail": "AT",
    "cleavage": "CV",
}


# In file names the common views match in any case ("l_cc.png"); the rare ones only in upper case,
# so that words such as "ml", "at" or "cv" in a lower-case name are not taken for views.
_COMMON_VIEWS = ("CC", "MLO")


def _tokens(text: str) -> list[str]:
    """Alphanumeric runs of `text` ("0_L-CC.png" -> ["0", "L", "CC", "png"])."""
    return [t for t in re.split(r"[^A-Za-z0-9]+", text) if t]


def _name_view(token: str) -> str | None:
    """The view a file-name token stands for, with the case rule above."""
    upper = token.upper()
    if upper in _COMMON_VIEWS or (token in VIEWS):
        return upper
    return None


def _split_combined(token: str) -> tuple[str | None, str | None]:
    """("L", "CC") for tokens like "LCC" or "RMLO" (any case for CC/MLO); (None, None) otherwise."""
    upper = token.upper()
    if len(upper) > 1 and upper[0] in "LR" and upper not in VIEWS:
        view = _name_view(token[1:])
        if view is not None:
            return upper[0], view
    return None, None


def _unique(values: list[str]) -> str | None:
    """The single distinct value in `values`, or None when there is none or they disagree."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def parse_filename(name: str | PurePath) -> tuple[str | None, str | None]:
    """Laterality and view from a file name of the public mammography datasets.

    Recognises e.g. `A_0002_1.RIGHT_MLO.png`, `P12_L_DM_CC.jpg`, `0_L-CC.png`,
    `Mass-Training_P_00001_LEFT_CC`, `LEFT_CC`, `RCC.dcm`. Only the last path component is used.
    Words must stand alone between separators (`_`, `-`, `.`, space): `mdb001` yields nothing.
    LEFT/RIGHT/L/R, CC and MLO match in any case; rarer views (ML, LM, AT, CV, ...) only in upper
    case, so that ordinary lower-case words are not read as views.

    Returns:
        (laterality "L"/"R" or None, view such as "CC"/"MLO" or None); None also when the name
        holds contradicting values (both LEFT and RIGHT).
    """
    lats: list[str] = []
    views: list[str] = []
    for token in _tokens(PurePath(str(name)).name):
        if token.upper() in _LATERALITY_WORDS:
            lats.append(_LATERALITY_WORDS[token.upper()])
        elif _name_view(token) is not None:
            views.append(token.upper())
        else:
            lat, view = _split_combined(token)
            if lat is not None and view is not None:
                lats.append(lat)
                views.append(view)
    return _unique(lats), _unique(views)


def laterality_from_value(value: Any) -> str | None:
    """Laterality "L"/"R" from an (Image)Laterality value; None for "B" (both), "U", empty, unknown."""
    text = str(value or "").strip().upper()
    return _LATERALITY_WORDS.get(text)


def view_from_value(value: Any) -> str | None:
    """A view from a DICOM ViewPosition value such as "CC", "MLO", "RCC"; None if unknown."""
    token = str(value or "").strip().upper()
    if token in VIEWS:
        return token
    return _split_combined(token)[1]  # upper-cased, so every view matches


def view_from_code_sequence(sequence: Any) -> str | None:
    """A view from a DICOM ViewCodeSequence (code value first, then code meaning); else None."""
    for item in sequence or []:
        code = str(item.get("CodeValue", "") or "").strip()
        if code in _VIEW_CODES:
            return _VIEW_CODES[code]
        meaning = re.sub(r"[^a-z]", "", str(item.get("CodeMeaning", "") or "").lower())
        if meaning in _VIEW_MEANINGS:
            return _VIEW_MEANINGS[meaning]
    return None


def view_from_patient_orientation(value: Any) -> str | None:
    r"""A view kept in PatientOrientation, as CBIS-DDSM does ("CC", "MLO"); else None.

    The standard content of PatientOrientation is two anatomical directions ("A\R", "P\FL");
    those are not views and give None. Laterality is never read from this tag: its "L"/"R" are
    directions, not the breast's side.
    """
    values = [value] if isinstance(value, str) or value is None else list(value)
    views = [v for v in (view_from_value(x) for x in values) if v is not None]
    return _unique(views)


def laterality_from_image(image: np.ndarray) -> str:
    """Laterality "L" or "R" from which edge the breast touches (the module docstring says why).

    Args:
        image: float32 (H, W) in [0, 1], brighter = denser.
    """
    from mammo.preprocess import chest_wall_side

    return "L" if chest_wall_side(image) == "left" else "R"
