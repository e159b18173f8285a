"""`glam-exam`: exams in the GLAM / GMIC layout (nyukat/GLAM `sample_data`).

`exam_list_before_cropping.pkl` is a list of exams, each a dict: view ("L-CC", "R-CC", "L-MLO",
"R-MLO") -> list of image names (files `images/<name>.png`, 16-bit), "<view>_<benign|malignant>_seg"
-> list of segmentation names (`segmentation/<name>.png`, optional), "cancer_label" ->
{left_benign, right_benign, left_malignant, right_malignant, ...} and "horizontal_flip".
The pickle is read with `mammo.datasets.safe_pickle`, so it cannot run code.

Segmentation frame: GLAM draws segmentations on the model input, not on the stored image: the
image is flipped to face right (R views when horizontal_flip is "NO", L views when "YES") and
zero-padded to 2944x1920 (CC: centred vertically, MLO: at the top; always at the left). The loader
undoes this for images no larger than 2944x1920 that GLAM's cropping left whole (as in the sample
exam), and uses a segmentation that already has the image's shape as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mammo.datasets.base import (
    UNKNOWN_LABELS,
    DatasetLoader,
    Sample,
    SampleRef,
    fill_acquisition,
    fill_view,
    labels_from_flags,
    read_binary_mask,
)
from mammo.datasets.safe_pickle import load_restricted
from mammo.errors import MammoInputError
from mammo.io import read_image

EXAM_LIST = "exam_list_before_cropping.pkl"
VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")
SEG_CLASSES = ("benign", "malignant")
MODEL_INPUT = (2944, 1920)


def validate_exam_list(exams: Any, path: Path) -> list[dict[str, Any]]:
    """Check the unpickled exam list is a list of dicts whose view entries are lists of str."""
    if not isinstance(exams, list) or not all(isinstance(e, dict) for e in exams):
        raise MammoInputError(f"{path}: expected a list of exam dicts, got {type(exams).__name__}")
    for idx, exam in enumerate(exams):
        for key, value in exam.items():
            if key in VIEWS or str(key).endswith("_seg"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise MammoInputError(f"{path}: exam {idx} {key!r} must be a list of names")
        if not isinstance(exam.get("cancer_label", {}), dict):
            raise MammoInputError(f"{path}: exam {idx} cancer_label must be a dict")
    return exams


def view_labels(cancer_label: dict[str, Any], view: str) -> dict[str, int | None]:
    """cancer_label + view -> labels of that side (left_benign / left_malignant for L views)."""
    side = "left" if view.startswith("L") else "right"
    values = [cancer_label.get(f"{side}_{name}") for name in SEG_CLASSES]
    if any(v not in (0, 1) for v in values):
        return dict(UNKNOWN_LABELS)
    return labels_from_flags(*values)


def seg_to_image(seg: np.ndarray, image_shape: tuple[int, int], view: str, horizontal_flip: str,
                 where: str) -> np.ndarray:
    """Map a GLAM segmentation bool (h, w) to the stored image's frame, bool (H, W).

    Same shape: returned as is. Model-input shape (2944, 1920): unpad (CC rows offset
    (2944 - H) // 2, MLO 0; columns 0) then undo the flip. Anything else: MammoInputError.
    """
    if seg.shape == tuple(image_shape):
        return seg
    height, width = image_shape
    if seg.shape != MODEL_INPUT or height > MODEL_INPUT[0] or width > MODEL_INPUT[1]:
        raise MammoInputError(f"{where}: segmentation {seg.shape} cannot be mapped onto image "
                              f"{tuple(image_shape)} (only same-shape or {MODEL_INPUT} model-input frames)")
    top = (MODEL_INPUT[0] - height) // 2 if view.endswith("CC") else 0
    sub = seg[top:top + height, :width]
    flipped = (horizontal_flip == "NO" and view.startswith("R")) or (
        horizontal_flip == "YES" and view.startswith("L"))
    return np.ascontiguousarray(sub[:, ::-1] if flipped else sub)


class GlamExam(DatasetLoader):
    """Loader for a GLAM exam folder: one sample per listed view image present in `images/`.

    Patient id: the exam's index in the exam list ("0", "1", ...). Masks: `lesion` = union of the
    benign and malignant segmentations found for the image; where none is found, `lesion` is all
    False when that side is labelled neither benign nor malignant, else absent (unknown).
    extra: "benign_seg" / "malignant_seg" (bool (H, W), where present), "view", "horizontal_flip".
    """

    kind = "glam-exam"
    layout = (f"<root>/{EXAM_LIST} (GLAM exam list), <root>/images/<name>.png and optional "
              "<root>/segmentation/<name>_<benign|malignant>.png")

    def _list_refs(self) -> list[SampleRef]:
        self.require(EXAM_LIST, "images")
        path = self.root / EXAM_LIST
        exams = validate_exam_list(load_restricted(path), path)
        refs = []
        for idx, exam in enumerate(exams):
            for view in VIEWS:
                for name in exam.get(view, []):
                    image_path = self.root / "images" / f"{name}.png"
                    if image_path.is_file():
                        refs.append(self._ref(idx, exam, view, name, image_path))
        return sorted(refs, key=lambda r: r.image_id)

    def _ref(self, idx: int, exam: dict[str, Any], view: str, name: str, path: Path) -> SampleRef:
        segs = {}
        for cls in SEG_CLASSES:
            names = [n for n in exam.get(f"{view}_{cls}_seg", []) if n.startswith(name)]
            found = [self.root / "segmentation" / f"{n}.png" for n in names]
            segs[cls] = [p for p in found if p.is_file()]
        info = {"view": view, "horizontal_flip": str(exam.get("horizontal_flip", "NO")), "segs": segs}
        return SampleRef(name, str(idx), path, view_labels(exam.get("cancer_label", {}), view), info)

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        view, flip = ref.info["view"], ref.info["horizontal_flip"]
        extra: dict[str, Any] = {"view": view, "horizontal_flip": flip}
        for cls, paths in ref.info["segs"].items():
            for seg_path in paths:
                seg = seg_to_image(read_binary_mask(seg_path), image.shape, view, flip, str(seg_path))
                extra[f"{cls}_seg"] = extra.get(f"{cls}_seg", np.zeros(image.shape, bool)) | seg
        masks = {}
        segs = [extra[f"{cls}_seg"] for cls in SEG_CLASSES if f"{cls}_seg" in extra]
        if segs:
            masks["lesion"] = np.logical_or.reduce(segs)
        elif ref.labels == {"benign": 0, "malignant": 0}:
            masks["lesion"] = np.zeros(image.shape, dtype=bool)
        laterality, short_view = view.split("-")
        meta = fill_acquisition(fill_view(meta, laterality, short_view), "digital")  # NYU's FFDM exam
        return Sample(image=image, meta=meta, masks=masks,
                      labels=dict(ref.labels), patient_id=ref.patient_id, image_id=ref.image_id,
                      extra=extra)
