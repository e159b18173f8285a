"""`mass-seg-08` on small fixtures in both layouts: `{train,valid,test}/{img,label}` and the
authors' five-fold `{trainNN,validNN,test}/{mg,mask}`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mammo.datasets import LOADERS, MassSeg08, load_dataset
from mammo.errors import MammoInputError

SIZE = 64


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def image_pixels(seed: int) -> np.ndarray:
    """uint8 (SIZE, SIZE) noise: full range, so the reader's blank-image check passes."""
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)


def box_mask(y: int, x: int, h: int = 5, w: int = 7) -> np.ndarray:
    """uint8 0/255 mask with one h x w box at (y, x)."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y:y + h, x:x + w] = 255
    return mask


def make_plain(root: Path) -> dict[str, np.ndarray]:
    """train: a, b (mask b_mask.png); valid: c (c_label.bmp); test: d, e. Returns stem -> pixels."""
    written = {}
    layout = {"train": ["a", "b"], "valid": ["c"], "test": ["d", "e"]}
    for seed, (folder, stem) in enumerate((f, s) for f, stems in layout.items() for s in stems):
        written[stem] = image_pixels(seed)
        write_png(root / folder / "img" / f"{stem}.png", written[stem])
        mask_name = {"b": "b_mask.png", "c": "c_label.bmp"}.get(stem, f"{stem}.png")
        write_png(root / folder / "label" / mask_name, box_mask(seed * 3, seed * 2))
    write_png(root / "test" / "label" / "orphan.png", box_mask(0, 0))  # mask without image: ignored
    return written


def test_registered() -> None:
    assert LOADERS["mass-seg-08"] is MassSeg08


def test_plain_layout_lists_splits_from_folders(tmp_path: Path) -> None:
    written = make_plain(tmp_path)
    ds = load_dataset("mass-seg-08", tmp_path)
    assert ds.ids == ["a", "b", "c", "d", "e"] and ds.patient_ids == ds.ids
    lengths = [len(load_dataset("mass-seg-08", tmp_path, split=s)) for s in ("train", "val", "test")]
    assert lengths == [2, 1, 2]
    assert load_dataset("mass-seg-08", tmp_path, split="val").ids == ["c"]
    assert load_dataset("mass-seg-08", tmp_path, split="test").ids == ["d", "e"]
    c = ds["c"]
    assert c.labels == {"benign": None, "malignant": None} and c.patient_id == "c"
    assert c.extra == {"image_type": "DM", "folder": "valid"}
    assert np.array_equal(c.masks["lesion"], box_mask(6, 4) > 0) and c.masks["lesion"].sum() == 35
    assert np.allclose(c.image, written["c"] / 255.0, atol=1e-6) and c.image.dtype == np.float32
    b = ds["b"]
    assert np.array_equal(b.masks["lesion"], box_mask(3, 2) > 0) and b.extra["folder"] == "train"


def test_split_csv_still_works(tmp_path: Path) -> None:
    make_plain(tmp_path)
    table = tmp_path / "mine.csv"
    table.write_text("image_id,patient_id,split\na,a,val\nd,d,val\ne,e,test\n")
    assert load_dataset("mass-seg-08", tmp_path, split=f"{table}:val").ids == ["a", "d"]
    assert load_dataset("mass-seg-08", tmp_path, split=table).ids == ["a", "d", "e"]


def test_authors_five_fold_layout(tmp_path: Path) -> None:
    data = tmp_path / "mass_seg_08"
    folders = {"train01": ["p1", "p2"], "valid01": ["p3"], "train05": ["p1", "p3"], "valid05": ["p2"],
               "test": ["t1"]}
    for seed, (folder, stem) in enumerate((f, s) for f, stems in folders.items() for s in stems):
        write_png(data / folder / "mg" / f"{stem}.png", image_pixels(seed))
        write_png(data / folder / "mask" / f"{stem}.png", box_mask(seed, seed))
    (data / "test" / "pred").mkdir()
    default = MassSeg08(tmp_path)  # the parent of mass_seg_08/ works too; default fold 5
    assert default.ids == ["p1", "p2", "p3", "t1"]
    assert [r.info["folder"] for r in default.refs] == ["train05", "valid05", "train05", "test"]
    assert MassSeg08(data, split="train").ids == ["p1", "p3"]
    assert MassSeg08(data, split="train", fold=1).ids == ["p1", "p2"]
    assert MassSeg08(data, split="val", fold=1).ids == ["p3"]
    assert MassSeg08(data, split="test", fold=1).ids == ["t1"]
    sample = MassSeg08(data, split="val", fold=1)[0]
    assert np.array_equal(sample.masks["lesion"], box_mask(2, 2) > 0) and sample.extra["folder"] == "valid01"
    with pytest.raises(MammoInputError, match="looked for train03.*Expected layout"):
        MassSeg08(data, split="train", fold=3)


def test_image_without_mask_is_named(tmp_path: Path) -> None:
    make_plain(tmp_path)
    write_png(tmp_path / "train" / "img" / "lonely.png", image_pixels(9))
    write_png(tmp_path / "train" / "label" / "lonely_seg.png", box_mask(0, 0))  # not an accepted name
    with pytest.raises(MammoInputError, match=r"1 images have no mask.*train/img/lonely\.png.*Expected"):
        load_dataset("mass-seg-08", tmp_path)


def test_missing_folders_are_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "train" / "img").mkdir(parents=True)
    with pytest.raises(MammoInputError, match="has none of the folders label, mask.*Expected layout"):
        load_dataset("mass-seg-08", tmp_path)
    with pytest.raises(MammoInputError, match="no split folder.*looked for test"):
        load_dataset("mass-seg-08", tmp_path, split="test")
    with pytest.raises(MammoInputError, match="fold must be a positive integer"):
        MassSeg08(tmp_path, fold=0)


def test_mask_of_another_size_is_refused_on_load(tmp_path: Path) -> None:
    write_png(tmp_path / "test" / "img" / "x.png", image_pixels(0))
    write_png(tmp_path / "test" / "label" / "x.png", np.zeros((SIZE, SIZE // 2), np.uint8))
    ds = load_dataset("mass-seg-08", tmp_path)  # listing reads no pixels
    with pytest.raises(MammoInputError, match="mask shape"):
        ds[0]
