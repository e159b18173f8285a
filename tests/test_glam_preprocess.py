"""GLAM preprocessing: exam lists, cropping and optimal centres (mammo.glam).

Real-data tests use the GLAM sample exam (`glam_sample`: exam 0's four uncropped 16-bit PNGs);
the synthetic tests pin the flip rule, the crop geometry and the model-window placement by hand.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import require_data
from PIL import Image

from mammo.errors import MammoInputError
from mammo.glam import centers, cropping
from mammo.glam.centers import (
    add_optimal_centers,
    extract_window,
    get_optimal_center,
    paste_window,
    uncrop_to_original,
    window_origin,
)
from mammo.glam.cropping import (
    CropInfo,
    breast_direction,
    crop_exam_list,
    crop_mammogram,
    flip_for_model,
    needs_flip,
)
from mammo.glam.exam_list import IMAGE_FIELDS, iter_images, read_exam_list, write_exam_list
from mammo.io import read_image
from mammo.preprocess.breast import breast_mask, chest_wall_side

SAMPLE_VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")


# ---------------------------------------------------------------- the real sample exam

@pytest.fixture(scope="module")
def sample() -> Path:
    return require_data("glam_sample")


@pytest.fixture(scope="module")
def cropped(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    """Exam 0 (the one whose images are shipped) cropped and centred into a temporary folder."""
    exams = read_exam_list(sample / "exam_list_before_cropping.pkl")[:1]
    out = tmp_path_factory.mktemp("glam_cropped")
    done = crop_exam_list(exams, sample / "images", out, progress=False)
    return add_optimal_centers(done, out, progress=False), out


def test_read_sample_exam_list(sample: Path) -> None:
    exams = read_exam_list(sample / "exam_list_before_cropping.pkl")
    assert len(exams) == 4
    assert all(e["horizontal_flip"] == "NO" for e in exams)
    assert exams[0]["L-CC"] == ["0_L-CC"] and exams[3]["cancer_label"]["left_malignant"] == 1
    names = list(iter_images(exams))
    assert len(names) == 16 and names[:4] == [(0, "L-CC", "0_L-CC"), (0, "R-CC", "0_R-CC"),
                                              (0, "L-MLO", "0_L-MLO"), (0, "R-MLO", "0_R-MLO")]


@pytest.mark.parametrize("view", SAMPLE_VIEWS)
def test_sample_crop(sample: Path, cropped: tuple[list[dict], Path], view: str) -> None:
    exams, out = cropped
    original, meta = read_image(sample / "images" / f"0_{view}.png")
    top, bottom, left, right = exams[0]["window_location"][view][0]
    assert 0 <= top < bottom <= original.shape[0] and 0 <= left < right <= original.shape[1]
    breast = breast_mask(original)
    inside = breast[top:bottom, left:right].sum()
    assert inside > 0.95 * breast.sum()
    assert exams[0]["distance_from_starting_side"][view][0] == 0
    # The written 16-bit PNG holds exactly the source's stored values (what the authors write).
    raw = np.asarray(Image.open(sample / "images" / f"0_{view}.png"))
    written = np.asarray(Image.open(out / f"0_{view}.png"))
    assert written.dtype == np.uint16 and np.array_equal(written, raw[top:bottom, left:right])
    back, back_meta = read_image(out / f"0_{view}.png")
    assert back_meta.bits_stored == meta.bits_stored == 12
    assert np.array_equal(back, original[top:bottom, left:right])
    # The flip turns every crop to the same side: chest wall on the left, breast pointing right.
    assert chest_wall_side(flip_for_model(back, view, "NO")) == "left"
    assert chest_wall_side(original) == ("left" if view[0] == "L" else "right")


@pytest.mark.parametrize("view", SAMPLE_VIEWS)
def test_sample_centers(cropped: tuple[list[dict], Path], view: str) -> None:
    exams, out = cropped
    exam = exams[0]
    crop = flip_for_model(read_image(out / f"0_{view}.png")[0], view, "NO")
    y, x = exam["best_center"][view][0]
    h, w = crop.shape
    assert 0 <= y < h  # rows: inside the crop
    # Columns: the authors put the window's right edge at the nipple (x may be < 0 for a narrow crop).
    assert x == exam["rightmost_points"][view][0][1] - 1920 // 2 - 1
    top, left = window_origin(crop.shape, (y, x), view)
    window = extract_window(crop, (y, x), view=view)
    assert window.shape == (2944, 1920)
    # The sample crops are smaller than the window: the whole breast is in the model input.
    assert np.count_nonzero(window) == np.count_nonzero(crop)
    assert left == 0 and top == (-((2944 - h) // 2) if view.endswith("CC") else 0)


@pytest.mark.parametrize("view", SAMPLE_VIEWS)
def test_sample_map_round_trip(sample: Path, cropped: tuple[list[dict], Path], view: str) -> None:
    """A map on the original image -> model input -> back to the original keeps the breast's values."""
    exams, _ = cropped
    exam = exams[0]
    original, _ = read_image(sample / "images" / f"0_{view}.png")
    truth = np.random.default_rng(0).random(original.shape).astype(np.float32)
    top, bottom, left, right = exam["window_location"][view][0]
    model_crop = flip_for_model(truth[top:bottom, left:right], view, "NO")
    center = exam["best_center"][view][0]
    model_map = extract_window(model_crop, center, view=view)
    on_crop = paste_window(model_map, center, model_crop.shape, view=view)
    fields = {"window_location": exam["window_location"][view][0]}
    back = uncrop_to_original(on_crop, fields, original.shape, flipped=needs_flip(view, "NO"))
    breast = breast_mask(original)
    assert np.array_equal(back[breast], truth[breast])


# ---------------------------------------------------------------- exam lists: formats and errors

def _rich_exam_list() -> list[dict]:
    """Two exams exercising every field: numpy ints, two images in a view, an empty view, extras."""
    return [
        {"horizontal_flip": "NO", "L-CC": ["a_lcc"], "R-CC": ["a_rcc1", "a_rcc2"], "L-MLO": [],
         "R-CC_benign_seg": ["a_rcc1_benign"], "cancer_label": {"left_benign": 0, "right_benign": 1},
         "window_location": {"L-CC": [(np.int64(0), 10, 2, 30)], "R-CC": [(1, 9, 0, 7), (0, 5, 1, 6)]},
         "rightmost_points": {"L-CC": [((3, 4), 27)], "R-CC": [((1, 2), 6), ((0, 0), 5)]},
         "bottommost_points": {"L-CC": [(9, (0, 3))], "R-CC": [(7, (1, 1)), (4, (2, 3))]},
         "distance_from_starting_side": {"L-CC": [0], "R-CC": [np.int32(2), 0]},
         "best_center": {"L-CC": [(5, -950)], "R-CC": [(4, -955), (2, -956)]},
         "site": "x"},
        {"horizontal_flip": "YES", "R-MLO": ["b_rmlo"], "L-CC": [],
         "best_center": {"R-MLO": [(1, 2)], "L-CC": []}},  # an older GMIC list: [] for empty views
    ]


def _plain(exams: list[dict]) -> list[dict]:
    """The rich list as it should read back: Python ints, per-image fields as tuples."""
    out = json.loads(json.dumps(exams, default=int))
    del out[1]["best_center"]["L-CC"]  # views without images are dropped from per-image fields
    for exam in out:
        for name in IMAGE_FIELDS:
            if name in exam:
                exam[name] = {v: [_tuples(x) for x in xs] for v, xs in exam[name].items()}
    return out


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


@pytest.mark.parametrize("suffix", [".pkl", ".json", ".csv"])
def test_exam_list_round_trip(tmp_path: Path, suffix: str) -> None:
    exams = _rich_exam_list()
    path = tmp_path / f"exams{suffix}"
    write_exam_list(exams, path)
    back = read_exam_list(path)
    assert back == _plain(exams)
    assert isinstance(back[0]["window_location"]["L-CC"][0][0], int)
    assert type(back[0]["window_location"]["L-CC"][0][0]) is int


def test_csv_layout(tmp_path: Path) -> None:
    write_exam_list(_rich_exam_list(), tmp_path / "e.csv")
    lines = (tmp_path / "e.csv").read_text().splitlines()
    assert lines[0].startswith("exam_id,view,image,horizontal_flip,window_location,")
    assert len(lines) == 1 + 4  # one row per image
    assert lines[2].startswith('0,R-CC,a_rcc1,NO,"[1, 9, 0, 7]"')


@pytest.mark.parametrize("exams, message", [
    ({"L-CC": ["a"]}, "expected a list of exams"),
    (["x"], "exam 0 is a str"),
    ([{"horizontal_flip": "NO", "cancer_label": {}}], "none of the view keys"),
    ([{"L-CC": ["a"]}], "horizontal_flip must be"),
    ([{"horizontal_flip": "NO", "L-CC": "a"}], "list of non-empty image names"),
    ([{"horizontal_flip": "NO", "L-CC": ["a"], "window_location": {"L-CC": [(0, 1, 2)]}}],
     "expected 4 values"),
    ([{"horizontal_flip": "NO", "L-CC": ["a", "b"], "best_center": {"L-CC": [(0, 1)]}}], "list of 2 values"),
    ([{"horizontal_flip": "NO", "L-CC": ["a"], "best_center": {"R-CC": [(0, 1)]}}], "has views"),
    ([{"horizontal_flip": "NO", "L-CC": ["a"], "best_center": {"L-CC": [(0, "1")]}}], "expected an integer"),
])
def test_malformed_exam_lists(tmp_path: Path, exams, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(exams))
    with pytest.raises(MammoInputError, match=message):
        read_exam_list(path)
    with pytest.raises(MammoInputError, match=message):
        write_exam_list(exams, tmp_path / "out.pkl")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(MammoInputError, match="unknown exam-list format '.txt'"):
        read_exam_list(tmp_path / "e.txt")
    with pytest.raises(MammoInputError, match="does not exist"):
        read_exam_list(tmp_path / "missing.pkl")
    (tmp_path / "e.json").write_text("[{")
    with pytest.raises(MammoInputError, match="not valid JSON"):
        read_exam_list(tmp_path / "e.json")
    (tmp_path / "e.csv").write_text("exam_id,view,image\n0,L-CC,a\n")
    with pytest.raises(MammoInputError, match=r"missing CSV column\(s\) \['horizontal_flip'\]"):
        read_exam_list(tmp_path / "e.csv")
    (tmp_path / "v.csv").write_text("exam_id,view,image,horizontal_flip\n0,L-XX,a,NO\n")
    with pytest.raises(MammoInputError, match="view 'L-XX' is not one of"):
        read_exam_list(tmp_path / "v.csv")
    with pytest.raises(MammoInputError, match="exam 1 has no image"):
        write_exam_list([{"horizontal_flip": "NO", "L-CC": ["a"]}, {"horizontal_flip": "NO", "L-CC": []}],
                        tmp_path / "x.csv")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "exams.pkl"
    path.write_bytes(pickle.dumps([{"horizontal_flip": "NO", "L-CC": [_Evil(str(marker))]}]))
    with pytest.raises(MammoInputError, match="refusing to load"):
        read_exam_list(path)
    assert not marker.exists()
    # The authors' scripts pickle numpy integers: refused too, with a hint.
    path.write_bytes(pickle.dumps([{"horizontal_flip": "NO", "L-CC": ["a"],
                                    "distance_from_starting_side": {"L-CC": [np.int64(0)]}}]))
    with pytest.raises(MammoInputError, match="numpy values"):
        read_exam_list(path)


# ---------------------------------------------------------------- synthetic: flip and crop

def test_flip_rule() -> None:
    # As hung (NO): L breasts point right, R breasts left; mirrored exams (YES) the other way.
    for view in SAMPLE_VIEWS:
        assert breast_direction(view, "NO") == ("right" if view[0] == "L" else "left")
        assert breast_direction(view, "YES") == ("left" if view[0] == "L" else "right")
        assert needs_flip(view, "NO") == (view[0] == "R") and needs_flip(view, "YES") == (view[0] == "L")
    with pytest.raises(MammoInputError, match="horizontal_flip must be"):
        needs_flip("L-CC", "no")
    with pytest.raises(MammoInputError, match="view must be one of"):
        needs_flip("L-XCC", "NO")


def _left_breast(h: int = 120, w: int = 90, gap: int = 0) -> np.ndarray:
    """float32 (h, w): a 81 x 50 px breast (rows 20..100, columns gap..gap+49) on the left edge
    after `gap` empty columns, a 2-px film line at the right edge and a small label, on zeros.

    A rectangle keeps its bounding box through the erosion/dilation (only its corners round
    off), so the crop geometry below can be worked out by hand.
    """
    image = np.zeros((h, w), np.float32)
    image[20:101, gap:gap + 50] = 0.5
    image[:, w - 2:] = 0.9   # thin line: removed by the erosion
    image[5:8, 70:75] = 1.0  # label: a smaller component
    return image


def test_crop_left_breast_by_hand() -> None:
    image = _left_breast()
    crop, info = crop_mammogram(image, "L-CC", "NO", iterations=3, buffer_size=4)
    # Rows 20..100 +4 above and below; columns 0..49 +4 on the nipple side only.
    assert info.window_location == (16, 105, 0, 54)
    assert info.distance_from_starting_side == 0 and not info.flipped
    assert np.array_equal(crop, image[16:105, 0:54])
    # Column 49 keeps rows 23..97 (corners rounded by the radius-3 opening); the search starts
    # below the top third of the 89-row crop (row 29 of the crop = image row 45).
    assert info.rightmost_points == ((29, 97 - 16), 49)
    # Row 100 keeps columns 3..46: the outside of the image counts as background in the erosion.
    assert info.bottommost_points == (100 - 16, (3, 46))
    gap = crop_mammogram(_left_breast(gap=7), "L-CC", "NO", iterations=3, buffer_size=4)[1]
    assert gap.distance_from_starting_side == 7 and gap.window_location == (16, 105, 7, 61)


def test_crop_mirrored_breast_flips() -> None:
    image = _left_breast()
    _, left_info = crop_mammogram(image, "L-CC", "NO", iterations=3, buffer_size=4)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    for view, flip in (("R-CC", "NO"), ("L-CC", "YES")):
        crop, info = crop_mammogram(mirrored, view, flip, iterations=3, buffer_size=4)
        top, bottom, left, right = left_info.window_location
        assert info.window_location == (top, bottom, 90 - right, 90 - left) and info.flipped
        assert np.array_equal(flip_for_model(crop, view, flip), image[top:bottom, left:right])
        # In the flipped crop the authors map column x to width - x: one more than the mirror image.
        (ly0, ly1), lx = left_info.rightmost_points
        assert info.rightmost_points == ((ly0, ly1), lx + 1)
        by, (bx0, bx1) = left_info.bottommost_points
        assert info.bottommost_points == (by, (bx0 + 1, bx1 + 1))
        assert info.distance_from_starting_side == 0


def _iterate(mask: np.ndarray, n: int, erode: bool) -> np.ndarray:
    """n erosions/dilations by the 3x3 cross, outside = 0 (scipy.ndimage's rule), by shifting."""
    for _ in range(n):
        p = np.pad(mask, 1)
        parts = (p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:])
        mask = np.logical_and.reduce(parts) if erode else np.logical_or.reduce(parts)
    return mask


def test_distance_transform_morphology_matches_iterations() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = rng.random((60, 45)) > 0.15
        for n in (1, 4, 9):
            assert np.array_equal(cropping._erode_l1(mask, n), _iterate(mask, n, erode=True))
            assert np.array_equal(cropping._dilate_l1(mask, n), _iterate(mask, n, erode=False))


def test_crop_matches_scipy_reference() -> None:
    """The authors' crop written plainly with scipy.ndimage gives the same numbers."""
    ndi = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(2)
    for k in range(4):
        image = _left_breast(gap=k) * (rng.random((120, 90)) > 0.02).astype(np.float32)
        if k % 2:
            image = np.ascontiguousarray(image[:, ::-1])
        view = "R-MLO" if k % 2 else "L-MLO"
        mask = ndi.binary_erosion(image > 0, iterations=3)
        labels, n = ndi.label(mask)
        sizes = ndi.sum(mask, labels, range(1, n + 1))
        region = ndi.binary_dilation(labels == 1 + int(np.argmax(sizes)), iterations=3)
        assert np.array_equal(cropping.breast_region(image, 3), region)
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        _, info = crop_mammogram(image, view, "NO", iterations=3, buffer_size=4)
        top, bottom, left, right = info.window_location
        assert (top, bottom) == (max(0, rows[0] - 4), min(120, rows[-1] + 5))
        nipple_left = (max(0, cols[0] - 4), cols[-1] + 1)  # mirrored (R): buffer on the left
        nipple_right = (cols[0], min(90, cols[-1] + 5))
        assert (left, right) == (nipple_left if k % 2 else nipple_right)


def test_crop_refuses_empty_image() -> None:
    with pytest.raises(MammoInputError, match="no breast found"):
        crop_mammogram(np.zeros((50, 40), np.float32), "L-CC", "NO")
    with pytest.raises(MammoInputError, match=r"\(H, W\) image"):
        crop_mammogram(np.zeros((5, 4, 3), np.float32), "L-CC", "NO")


def test_crop_exam_list_formats_and_processes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    left = (_left_breast() * 255).round().astype(np.uint8)
    Image.fromarray(left).save(images / "e_L-CC.bmp")               # 8-bit, another suffix
    Image.fromarray(left[:, ::-1].astype(np.uint16) * 16).save(images / "e_R-CC.png")  # 16-bit
    exams = [{"horizontal_flip": "NO", "L-CC": ["e_L-CC"], "R-CC": ["e_R-CC"]}]
    out = tmp_path / "cropped"
    done = crop_exam_list(exams, images, out, num_processes=2, iterations=3, buffer_size=4, progress=False)
    assert "window_location" not in exams[0]  # the input is not changed
    assert done[0]["window_location"]["R-CC"][0] == (16, 105, 36, 90)
    back, meta = read_image(out / "e_L-CC.png")
    assert meta.bits_stored == 8 and np.array_equal((back * 255).round().astype(np.uint8), left[16:105, :54])
    centred = add_optimal_centers(done, out, window=(60, 40), progress=False)
    assert set(centred[0]["best_center"]) == {"L-CC", "R-CC"}
    with pytest.raises(MammoInputError, match="already has"):
        crop_exam_list(done, images, out, progress=False)
    with pytest.raises(MammoInputError, match="crop the exam list first"):
        add_optimal_centers(exams, out, progress=False)
    with pytest.raises(MammoInputError, match="no image file for 'nope'"):
        crop_exam_list([{"horizontal_flip": "NO", "L-CC": ["nope"]}], images, out, progress=False)


# ---------------------------------------------------------------- synthetic: the model window

def test_extract_window_pads_small_crops() -> None:
    crop = np.arange(1, 16, dtype=np.int32).reshape(5, 3)
    cc = extract_window(crop, (2, -50), (9, 6), view="L-CC")
    assert np.array_equal(cc[2:7, :3], crop) and cc.sum() == crop.sum()  # rows centred, left
    mlo = extract_window(crop, (2, -50), (9, 6), view="R-MLO")
    assert np.array_equal(mlo[:5, :3], crop) and mlo.sum() == crop.sum()  # rows at the top
    for view in ("L-CC", "R-MLO"):
        window = extract_window(crop, (2, -50), (9, 6), view=view)
        assert np.array_equal(paste_window(window, (2, -50), crop.shape, view=view), crop)


def test_extract_window_shifts_inside_large_crops() -> None:
    crop = np.arange(200, dtype=np.int32).reshape(20, 10)
    assert window_origin(crop.shape, (2, 9), "L-CC", (6, 4)) == (0, 6)    # moved down and left
    assert window_origin(crop.shape, (12, 4), "L-CC", (6, 4)) == (9, 2)   # centre - half
    assert window_origin(crop.shape, (30, 4), "R-MLO", (6, 4)) == (14, 2)
    window = extract_window(crop, (2, 9), (6, 4), view="L-CC")
    assert np.array_equal(window, crop[0:6, 6:10])
    pasted = paste_window(window.astype(np.float32), (2, 9), crop.shape, view="L-CC", fill=-1)
    assert np.array_equal(pasted[0:6, 6:10], crop[0:6, 6:10]) and (pasted == -1).sum() == 200 - 24
    with pytest.raises(MammoInputError, match="CC or MLO"):
        window_origin(crop.shape, (2, 9), "L-ML", (6, 4))


def _brute_force_cc(image: np.ndarray, x: int, window: tuple[int, int]) -> int:
    """The authors' CC row search, window by window (sums by slicing)."""
    h, w = image.shape
    half, rem = window[0] // 2, window[0] - window[0] // 2
    if half >= h - rem:
        return h // 2
    best, best_key = None, None
    for y in range(half, h - rem + 1):
        left = x - window[1] // 2
        right = min(x + window[1] - window[1] // 2 + max(-left, 0), w)
        total = int((image[y - half:y + rem, max(left, 0):right] > 0).sum())
        key = (-total, (y - h // 2) ** 2, y)
        if best_key is None or key < best_key:
            best, best_key = y, key
    return best


def test_optimal_center_cc_and_mlo() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        image = np.zeros((40, 12), np.float32)
        y0 = int(rng.integers(0, 35))
        image[y0:y0 + int(rng.integers(1, 6)), : int(rng.integers(1, 12))] = 1
        rightmost = ((0, 0), int(rng.integers(1, 13)))
        y, x = get_optimal_center(image, "R-CC", rightmost, (0, (0, 0)), window=(10, 4))
        assert x == rightmost[1] - 2 - 1
        assert y == _brute_force_cc(image, x, (10, 4))
    flat = np.ones((40, 12), np.float32)
    assert get_optimal_center(flat, "L-CC", ((0, 0), 11), (0, (0, 0)), (10, 4))[0] == 20  # ties: centre
    assert get_optimal_center(flat[:8], "L-CC", ((0, 0), 11), (0, (0, 0)), (10, 4)) == (4, 8)
    mlo = np.zeros((40, 12), np.float32)
    mlo[:30, :] = 1
    # MLO: the bottom edge from bottommost_points, or the last non-zero row if that is higher.
    assert get_optimal_center(mlo, "L-MLO", ((0, 0), 5), (25, (0, 1)), (10, 4)) == (25 - 5 - 1, 5 - 2 - 1)
    assert get_optimal_center(mlo, "L-MLO", ((0, 0), 5), (35, (0, 1)), (10, 4)) == (29 - 5 - 1, 5 - 2 - 1)


def test_uncrop_to_original_round_trip() -> None:
    image = np.ascontiguousarray(_left_breast()[:, ::-1])
    crop, info = crop_mammogram(image, "R-CC", "NO", iterations=3, buffer_size=4)
    truth = np.arange(image.size, dtype=np.int64).reshape(image.shape)
    top, bottom, left, right = info.window_location
    model_crop = flip_for_model(truth[top:bottom, left:right], "R-CC", "NO")
    center = get_optimal_center(flip_for_model(crop, "R-CC", "NO"), "R-CC", info.rightmost_points,
                                info.bottommost_points, window=(40, 30))
    window = extract_window(model_crop, center, (40, 30), view="R-CC")
    on_crop = paste_window(window, center, model_crop.shape, view="R-CC", fill=-1)
    back = uncrop_to_original(on_crop, info, fill=-1)
    covered = back != -1
    assert covered.sum() == 40 * 30 and np.array_equal(back[covered], truth[covered])
    as_dict = uncrop_to_original(on_crop, info.fields(), image.shape, flipped=True, fill=-1)
    assert np.array_equal(as_dict, back)
    with pytest.raises(MammoInputError, match="needs original_shape and flipped"):
        uncrop_to_original(on_crop, info.fields())
    with pytest.raises(MammoInputError, match="does not match the crop"):
        uncrop_to_original(on_crop[1:], info)
    assert isinstance(info, CropInfo) and centers.MODEL_INPUT == (2944, 1920)
