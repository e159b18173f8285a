"""`mass-seg-08`: the mass segmentation folders of Tiryaki & Kaplanoglu (`mass_seg_08/`).

The authors' README (github.com/tiryakiv/Mass-segmentation) lays out five-fold cross-validation
as `mass_seg_08/{train01..train05, valid01..valid05, test}/{mg, mask}` (mg: 640x640 mammograms,
mask: 0/255 mass masks; a `pred` folder holds their predictions and is ignored). Copies of the set
are also passed around as `{train, valid, test}/{img, label}`. Both are read: split folder `train`
(else `trainNN`), `valid` or `val` (else `validNN`), `test`; image folder `img` or `mg`; mask
folder `label` or `mask`. The authors pair images and masks by sorted order; here a mask must
share the image's stem (optionally + `_mask` / `_label`), so that a missing mask is an error
instead of a silent shift. Masks without an image are ignored.

The layout has no patient ids (the BCDR patient lists are in the paper's supplement only): each
image is its own patient (patient_id = image stem), so a split CSV cannot keep a woman's views
together. Benign/malignant are not given (None).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mammo.datasets.base import (
    SPLIT_NAMES,
    UNKNOWN_LABELS,
    DatasetLoader,
    Sample,
    SampleRef,
    check_mask_shape,
    read_binary_mask,
)
from mammo.errors import MammoInputError
from mammo.io import read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGE_DIRS = ("img", "mg")
MASK_DIRS = ("label", "mask")
MASK_STEM_SUFFIXES = ("", "_mask", "_label")
#: split name -> its plain folder names, and the cross-validation folder pattern (None: no folds)
SPLIT_DIRS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "train": (("train",), "train{:02d}"), "val": (("valid", "val"), "valid{:02d}"), "test": (("test",), None)}
#: the fold read when the root only has `trainNN`/`validNN` folders and no `fold` is given: the
#: authors published the U-net++Xception weights of cross-validation fold 5
DEFAULT_FOLD = 5


class MassSeg08(DatasetLoader):
    """Loader for `mass_seg_08/`: one sample per image; mask `lesion` from its mask file (> 127).

    Samples: image float32 (H, W) in [0, 1] (640x640 in the authors' set); masks {"lesion": bool
    (H, W)}; labels both None; patient_id = image_id = the image stem (the folder name is prefixed,
    `test__<stem>`, only where two folders hold the same stem); extra {"image_type": "DM",
    "folder": the split folder, e.g. "valid05"}.

    Args:
        root: the `mass_seg_08` folder (or a folder holding `mass_seg_08/`).
        split: None (every split folder present), "train" / "val" / "test" (that folder; no split
            CSV is read, the folders are the split), or a split CSV as in `DatasetLoader`.
        fold: the cross-validation fold (1-5) whose `trainNN`/`validNN` folders "train"/"val"
            read; default: plain `train`/`valid` folders where present, else fold `DEFAULT_FOLD`.
    """

    kind = "mass-seg-08"
    layout = ("<root>/{train|trainNN, valid|val|validNN, test}/{img|mg}/<name>.png|jpg|bmp|tif (640x640) "
              "with <root>/<same split>/{label|mask}/<name>[_mask|_label].<any of those> (0/255 masks); "
              "<root> may also hold these under mass_seg_08/")

    def __init__(self, root: str | Path, split: str | Path | None = None, fold: int | None = None) -> None:
        if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int) or fold < 1):
            raise MammoInputError(f"{self.kind}: fold must be a positive integer (1-5), got {fold!r}")
        self.fold = fold
        name = None if split is None else str(split)
        # The folders are the split: a split name picks one, without any split CSV.
        self.folder_split = name if name in SPLIT_NAMES else None
        super().__init__(root, None if self.folder_split or split is None else split)

    def _data_dir(self) -> Path:
        """The folder holding the split folders: the root, or `<root>/mass_seg_08`."""
        nested = self.root / "mass_seg_08"
        has_split = any(p.is_dir() and p.name.startswith(("train", "val", "test"))
                        for p in self.root.iterdir())
        return nested if not has_split and nested.is_dir() else self.root

    def _candidates(self, data: Path, split: str) -> list[Path]:
        """The folders that may hold `split`, in order of preference (see `fold`)."""
        plain, pattern = SPLIT_DIRS[split]
        found = [data / n for n in plain] if pattern is None or self.fold is None else []
        if pattern is not None:
            found.append(data / pattern.format(self.fold or DEFAULT_FOLD))
        return found

    def _pick(self, folder: Path, names: tuple[str, ...]) -> Path:
        """The first of `names` that is a folder under `folder`; a layout error when none is."""
        found = next((folder / n for n in names if (folder / n).is_dir()), None)
        if found is None:
            raise self.layout_error(f"{folder} has none of the folders {', '.join(names)}")
        return found

    def _list_refs(self) -> list[SampleRef]:
        data = self._data_dir()
        wanted = [self.folder_split] if self.folder_split else list(SPLIT_NAMES)
        candidates = {split: self._candidates(data, split) for split in wanted}
        folders = {split: next((c for c in cands if c.is_dir()), None) for split, cands in candidates.items()}
        if not any(folders.values()) or (self.folder_split and folders[self.folder_split] is None):
            names = [c.name for split in wanted if folders[split] is None for c in candidates[split]]
            raise self.layout_error(f"no split folder under {data}: looked for {', '.join(names)}")
        pairs: list[tuple[Path, Path, str]] = []  # (image, mask, split folder name)
        unmatched: list[str] = []
        for folder in (f for f in folders.values() if f is not None):
            images, masks = self._pick(folder, IMAGE_DIRS), self._pick(folder, MASK_DIRS)
            by_stem = {p.stem: p for p in sorted(masks.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
            for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                names = [image.stem + suffix for suffix in MASK_STEM_SUFFIXES]
                mask = next((by_stem[n] for n in names if n in by_stem), None)
                if mask is None:
                    unmatched.append(str(image.relative_to(data)))
                else:
                    pairs.append((image, mask, folder.name))
        if unmatched:
            raise self.layout_error(f"{len(unmatched)} images have no mask of the same name in the mask "
                                    f"folder (stem, stem_mask or stem_label): {unmatched[:10]}")
        stems = Counter(image.stem for image, _, _ in pairs)
        refs = []
        for image, mask, folder_name in pairs:
            image_id = image.stem if stems[image.stem] == 1 else f"{folder_name}__{image.stem}"
            refs.append(SampleRef(image_id, image.stem, image, dict(UNKNOWN_LABELS),
                                  # "DM": the modality is not recorded, and the training code
                                  # keeps images of type DM by default
                                  {"mask": mask, "folder": folder_name, "image_type": "DM"}))
        return sorted(refs, key=lambda ref: ref.image_id)

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        lesion = read_binary_mask(ref.info["mask"])
        check_mask_shape(lesion, image, str(ref.info["mask"]))
        return Sample(image=image, meta=meta, masks={"lesion": lesion}, labels=dict(ref.labels),
                      patient_id=ref.patient_id, image_id=ref.image_id,
                      extra={"image_type": ref.info["image_type"], "folder": ref.info["folder"]})
