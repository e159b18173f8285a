"""Tests for the demo: `mammo.demo` (the logic, in-process) and `app.py` (a live server).

The server tests start `python app.py --host 127.0.0.1 --port N` as a subprocess (the real start-up
path: flags, queue, launch options, warm-up) with GRADIO_TEMP_DIR and the eval jobs folder in tmp,
and talk to it with `gradio_client`. `tests/test_app_browser.py` reuses the `app_server` fixture.
The page's layout, the warm-up, the pictures and the logs are tested in `tests/test_app_*.py`.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from eval.table import columns
from mammo import demo
from mammo.errors import MammoInputError
from mammo.io import ImageMeta, read_image
from mammo.pipelines.base import PatchBox, Result
from tests.conftest import free_port
from tests.dicom_factory import mammogram_pixels, png_claiming_size, text_file, truncated_copy

REPO = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
START_TIMEOUT_S = 180  # a 2-core machine that is also training: importing gradio alone takes seconds
WARMUP = "breast,cascade"  # what the test server builds at start: what its tests use first
HUGE_MESSAGE = r"huge\.png.: it is (too large|.*megapixels)"  # Pillow's or mammo's own pixel limit


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def write_png16(path: Path, shape: tuple[int, int] = (300, 200)) -> Path:
    """A small 16-bit PNG mammogram (12 bits used)."""
    Image.fromarray(mammogram_pixels(shape, bits=12).astype(np.uint16)).save(path)
    return path


# -- mammo.demo, in-process --------------------------------------------------------------------
def test_menu_lists_every_pipeline_and_variant() -> None:
    choices = {c.name: c for c in demo.pipeline_choices()}
    assert {"breast", "cascade", "cascade:fgt", "glam", "glam:sep"} <= set(choices)
    assert choices["breast"].available and choices["breast"].reason == ""
    assert all(c.description for c in choices.values())
    assert ("glam:sep (unavailable)", "glam:sep") in demo.menu_items(list(choices.values())) \
        or choices["glam:sep"].available


def test_missing_weights_listed_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No weights anywhere: listed as unavailable with the reason; running one says the same."""
    monkeypatch.setenv("MAMMO_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache
    choices = {c.name: c for c in demo.pipeline_choices()}
    assert not choices["cascade"].available
    assert "weights 'cascade-tissue' not found" in choices["cascade"].reason
    table = demo.pipelines_markdown(list(choices.values()))
    assert "unavailable: weights 'cascade-tissue' not found" in table
    assert choices["breast"].available
    with pytest.raises(MammoInputError, match="Pipeline 'cascade' is unavailable: weights"):
        demo.run_pipeline("cascade", np.zeros((8, 8), np.float32), ImageMeta(), "x.png")


def test_manifest_without_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("entries: []\n")
    monkeypatch.setenv("MAMMO_WEIGHTS_MANIFEST", str(manifest))
    assert demo.availability("glam:sep") == (False, "the weights manifest has no weights for 'glam' yet")


def test_variant_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """glam -> glam-joint only; a missing glam-sep makes glam:sep alone unavailable."""
    from dataclasses import replace

    from mammo.weights import load_manifest

    entries = load_manifest()
    entries.pop("glam-sep", None)
    entries["glam-joint"] = replace(entries["cascade-tissue"], name="glam-joint", pipeline="glam")
    assert demo.required_weights("glam", entries) == ["glam-joint"]
    assert demo.required_weights("cascade:fgt", entries) == ["cascade-tissue", "cascade-lesion"]
    assert demo.availability("glam", entries) == (True, "")
    reason = "the weights manifest has no entry 'glam-sep' yet"
    assert demo.availability("glam:sep", entries) == (False, reason)


def test_breast_prediction_and_downloads(tmp_path: Path) -> None:
    source = write_png16(tmp_path / "case_L_CC.png")
    pred = demo.predict_file(source, "breast")
    files = {p.name: p for p in demo.write_downloads(pred, tmp_path / "out")}
    assert {"mask_breast.png", "overlay.png", "scores.json", "predictions.csv"} <= set(files)
    assert cv2.imread(str(files["mask_breast.png"]), cv2.IMREAD_GRAYSCALE).shape == (300, 200)
    with open(files["predictions.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and list(rows[0]) == columns(rows)  # the `python -m eval` header
    assert rows[0]["image_index"] == "case_L_CC" and rows[0]["pipeline"] == "breast"
    assert (rows[0]["laterality"], rows[0]["view"], rows[0]["error"]) == ("L", "CC", "")
    info = demo.details(pred)
    assert info["image"]["shape"] == [300, 200] and info["scores"] == {}
    assert "breast** on `case_L_CC.png`: 200x300 png, L CC" in demo.summary(pred)
    assert demo.patch_view(pred) is None and demo.map_views(pred) == []


def test_views_of_a_large_result_are_downscaled() -> None:
    """A 3000x2000 result with every kind of output: pictures for the page are <= 1024 px."""
    h, w = 3000, 2000
    image = np.random.default_rng(0).random((h, w), dtype=np.float32)
    masks = {name: np.zeros((h, w), bool) for name in ("breast", "adipose", "lesion")}
    masks["lesion"][1000:1200, 500:700] = True
    result = Result(masks=masks, probabilities={"lesion": masks["lesion"].astype(np.float32)},
                    saliency={"malignant": np.full((h, w), 0.5, np.float32)},
                    patches=[PatchBox(100, 100, 400, 400, 0.9)], scores={"benign": 0.2, "malignant": 0.7})
    pred = demo.Prediction("fake", image, ImageMeta(), result, "big.png", {"read": 0, "load": 0, "run": 0})
    assert list(demo.view_masks(result)) == ["adipose", "lesion"]  # breast would hide the tissues
    assert demo.overlay_view(pred).shape == (1024, 683, 3)
    # each map is scaled to its own maximum, with a colour bar (1024 // 6 px) on the right
    assert [(v.shape, caption) for v, caption in demo.map_views(pred)] == [
        ((1024, 683 + 170, 3), "probability: lesion (max 1.00)"),
        ((1024, 683 + 170, 3), "saliency: malignant (max 0.50)")]
    patch_map = demo.patch_view(pred)
    assert patch_map is not None and patch_map.shape == (1024, 683, 3)
    assert tuple(patch_map[34, 60]) == (40, 120, 255)  # the box's top edge at 100 * 1024/3000
    assert demo.score_rows(pred) == [{"class": "benign", "score": 0.2}, {"class": "malignant", "score": 0.7}]
    assert demo.prediction_row(pred)["malignant_pred"] == "0.700000"


def test_bad_inputs_give_the_reader_message(tmp_path: Path, cbis_dicoms: list[Path]) -> None:
    cases = {text_file(tmp_path / "notes.png"): "not an image file",
             truncated_copy(cbis_dicoms[0], tmp_path / "cut.dcm"): "DICOM file is truncated",
             png_claiming_size(tmp_path / "huge.png", 20000, 10000): HUGE_MESSAGE}
    for path, message in cases.items():
        with pytest.raises(MammoInputError, match=message) as err:
            demo.predict_file(path, "breast")
        assert str(tmp_path) not in str(err.value) and path.name in str(err.value)
    with pytest.raises(MammoInputError, match="upload a mammogram"):
        demo.predict_file(None, "breast")


def test_request_dirs_are_pruned(tmp_path: Path) -> None:
    old = demo.request_dir(tmp_path)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    new = demo.request_dir(tmp_path)
    assert new.is_dir() and not old.exists()


def test_importing_app_does_not_import_frameworks(tmp_path: Path) -> None:
    env = {**os.environ, **OFFLINE_ENV, "MAMMO_EVAL_JOBS_DIR": str(tmp_path / "jobs")}
    code = "import app, sys; print([m for m in ('torch', 'tensorflow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=START_TIMEOUT_S, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- the live server ---------------------------------------------------------------------------
@dataclass
class AppServer:
    url: str
    start_seconds: float  # `python app.py` to the page answering 200
    temp_dir: Path  # GRADIO_TEMP_DIR of the server
    downloads: Path  # where the client puts files
    log: Path  # the server's stdout and stderr


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """`python app.py` on a free port of 127.0.0.1, until the module's tests are done."""
    base = tmp_path_factory.mktemp("app")
    port = free_port()
    env = {**os.environ, **OFFLINE_ENV, "GRADIO_TEMP_DIR": str(base / "gradio"),
           "MAMMO_EVAL_JOBS_DIR": str(base / "jobs"), "MAMMO_WARMUP": WARMUP}
    log = base / "server.log"
    with open(log, "w") as handle:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        while not _answers(url):
            assert proc.poll() is None, f"app.py exited with {proc.returncode}:\n{log.read_text()}"
            waited = time.monotonic() - start
            assert waited < START_TIMEOUT_S, f"no answer in {START_TIMEOUT_S} s:\n{log.read_text()}"
            time.sleep(0.2)
        server = AppServer(url, time.monotonic() - start, base / "gradio", base / "downloads", log)
        print(f"\napp.py answered in {server.start_seconds:.1f} s")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(app_server: AppServer) -> Any:
    from gradio_client import Client

    return Client(app_server.url, verbose=False, download_files=app_server.downloads, analytics_enabled=False)


def test_endpoints(client: Any) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/compare", "/eval_submit_zip", "/eval_submit_dataset", "/eval_status",
            "/eval_result", "/eval_bundle"} <= set(api)
    assert [p["parameter_name"] for p in api["/predict"]["parameters"]] == ["file", "pipeline_name"]
    assert len(api["/predict"]["returns"]) == 7


@pytest.mark.timeout(600)
def test_predict_cascade_on_real_dicom(client: Any, app_server: AppServer, cbis_dicoms: list[Path]) -> None:
    from gradio_client import handle_file

    dicom = cbis_dicoms[0]
    start = time.monotonic()
    overlay, patch_map, maps, bars, info, files, summary = client.predict(
        handle_file(dicom), "cascade", api_name="/predict")
    print(f"\n/predict cascade on {dicom.name}: {time.monotonic() - start:.1f} s (first call: waits for "
          f"the warm-up's build); server side {info['seconds']}")
    shape = read_image(dicom)[0].shape
    files = {Path(f).name: Path(f) for f in files}
    masks = {name: cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for name, path in files.items()
             if name.startswith("mask_")}
    classes = ("adipose", "fibroglandular", "pectoral", "breast", "lesion")
    assert set(masks) == {f"mask_{c}.png" for c in classes}
    assert all(mask.shape == shape and set(np.unique(mask)) <= {0, 255} for mask in masks.values())
    assert masks["mask_breast.png"].any()
    assert info["image"]["shape"] == list(shape) and info["image"]["format"] == "dicom"
    assert info["image"]["laterality"] in ("L", "R") and info["image"]["photometric"].startswith("MONOCHROME")
    assert all(0.0 <= v <= 1.0 for v in info["scores"].values())
    assert all(0.0 <= v <= 1.0 for v in info["mask_fraction"].values())
    assert bars["columns"] == ["class", "score"] and "**cascade** on `" in summary
    # no scores: still a number axis (an empty frame's object column was plotted as categories)
    assert bars["data"] == [] and bars["datatypes"]["score"] == "quantitative"
    assert info["pipeline"] == "cascade"
    # cascade's lesion findings (components, best first) are drawn as the patch map when there are any
    assert (patch_map is None) == (info["patches"] == 0)
    assert Path(overlay).suffix == ".png" and max(cv2.imread(overlay).shape[:2]) <= demo.DISPLAY_SIDE
    assert [m["caption"] for m in maps][-1].startswith("probability: lesion (max ")
    assert all(Path(m["image"]).suffix == ".png" for m in maps)
    with open(files["predictions.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["pipeline"] == "cascade" and rows[0]["image_index"] == dicom.stem
    assert list(rows[0]) == columns(rows)
    # The per-request folder is under GRADIO_TEMP_DIR.
    assert list((app_server.temp_dir / "mammo-demo").glob("req-*/mask_lesion.png"))


def _require_bundled(name: str) -> None:
    """Skip when pipeline `name` cannot run here (fail under CI=true, where its weights are bundled)."""
    available, reason = demo.availability(name)
    if not available:
        message = f"{name} is unavailable here: {reason}"
        if _ci():
            pytest.fail(message + f"; CI=true requires the bundled {name} weights")
        pytest.skip(message)


@pytest.mark.timeout(600)
def test_predict_glam_scores(client: Any, cbis_dicoms: list[Path]) -> None:
    """GLAM's benign/malignant scores reach the client in [0, 1] with the saliency maps and patch map."""
    from gradio_client import handle_file

    _require_bundled("glam")
    _, patch_map, maps, bars, info, _, _ = client.predict(handle_file(cbis_dicoms[4]), "glam",
                                                          api_name="/predict")
    assert set(info["scores"]) == {"benign", "malignant"}
    assert all(0.0 <= v <= 1.0 for v in info["scores"].values())
    assert [row[0] for row in bars["data"]] == ["benign", "malignant"]
    assert bars["datatypes"] == {"class": "nominal", "score": "quantitative"}  # bar length = score
    assert {m["caption"].split(" (")[0] for m in maps} >= {"saliency: benign", "saliency: malignant"}
    assert patch_map is not None and info["patches"] > 0


@pytest.mark.timeout(600)  # SHAP costs seconds per cluster on 2 cores
def test_predict_deepmica_explain_shows_clusters_and_shap(client: Any) -> None:
    """deepmica:explain on a MIAS film with an annotated calcification cluster: the calcification
    overlay, numbered cluster boxes with P(malignant), and each cluster's SHAP picture."""
    from gradio_client import handle_file

    from conftest import require_data

    _require_bundled("deepmica:explain")
    film = require_data("mias") / "mdb219.png"
    overlay, patch_map, maps, _, info, _, _ = client.predict(handle_file(film), "deepmica:explain",
                                                             api_name="/predict")
    assert overlay is not None and patch_map is not None and info["patches"] > 0
    assert info["mask_fraction"]["calcification"] > 0
    captions = [m["caption"] for m in maps]
    assert "picture: shap_cluster1" in captions and any(c.startswith("saliency: malignant") for c in captions)
    assert 0.0 <= info["scores"]["malignant"] <= 1.0


@pytest.mark.timeout(300)
def test_bad_files_show_the_message_and_server_keeps_serving(client: Any, app_server: AppServer,
                                                            tmp_path: Path, cbis_dicoms: list[Path]) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = {text_file(tmp_path / "notes.txt"): "notes.txt': it is not an image file",
           truncated_copy(cbis_dicoms[0], tmp_path / "cut.dcm"): "cut.dcm': the DICOM file is truncated",
           png_claiming_size(tmp_path / "huge.png", 20000, 10000): HUGE_MESSAGE}
    for path, message in bad.items():
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(path), "breast", api_name="/predict")
    # a user's mistake is one log line, not a traceback (gradio prints a gr.Error's by default)
    log = app_server.log.read_text()
    assert "predict: Cannot read image 'notes.txt': it is not an image file" in log
    assert "Traceback" not in log, log[-4000:]
    # gradio's own check of the name (an API client's mistake; the page offers only valid names)
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(handle_file(path), "nope", api_name="/predict")
    good = write_png16(tmp_path / "small.png")
    info = client.predict(handle_file(good), "breast", api_name="/predict")[4]
    assert info["image"]["shape"] == [300, 200]


@pytest.mark.timeout(300)
def test_concurrent_requests_are_queued(client: Any, tmp_path: Path) -> None:
    from gradio_client import handle_file

    image = handle_file(write_png16(tmp_path / "small.png"))
    jobs = [client.submit(image, "breast", api_name="/predict") for _ in range(3)]
    assert [job.result(timeout=240)[4]["image"]["shape"] for job in jobs] == [[300, 200]] * 3


@pytest.mark.timeout(600)
def test_compare(client: Any, tmp_path: Path) -> None:
    """breast, cascade and cascade:fgt side by side: one row each, under the name asked for (the
    variant used to be labelled plain "cascade", giving a CSV with two rows named "cascade")."""
    from gradio_client import handle_file

    ran = ["breast", "cascade", "cascade:fgt"]
    names = ran + [n for n in ("glam",) if not demo.availability(n)[0]]
    overlays, maps, table, files = client.predict(handle_file(write_png16(tmp_path / "small.png")), names,
                                                  api_name="/compare")
    assert [o["caption"] for o in overlays] == ran
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert set(rows) == set(names) and rows["breast"]["error"] == ""
    if "glam" in rows:  # listed with the reason, the others still ran
        assert "unavailable" in rows["glam"]["error"]
    assert any(m["caption"].startswith("cascade probability: lesion") for m in maps)
    assert any(m["caption"].startswith("cascade:fgt probability: lesion") for m in maps)
    csv_path = next(Path(f) for f in files if Path(f).name == "predictions.csv")
    with open(csv_path, newline="") as handle:
        assert [row["pipeline"] for row in csv.DictReader(handle)] == ran


def _cdd_lesion_case(shared_data: Path) -> tuple[Path, tuple[int, int, int, int], np.ndarray]:
    """A CDD-CESM image with one clear lesion: (image, a reader's box (the lesion's tight box
    grown by 20% each side), reference mask)."""
    from mammo.preprocess.prompt import mask_boxes

    image = shared_data / "cdd_cesm" / "images" / "P102_R_DM_CC.jpg"
    if not image.is_file():
        pytest.fail(f"{image} is missing from the shared data")
    truth = cv2.imread(str(image.parent.parent / "masks" / image.name), cv2.IMREAD_GRAYSCALE) > 127
    x0, y0, x1, y1 = mask_boxes(truth, min_pixels=16)[0]
    dx, dy = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
    h, w = truth.shape
    box = (max(0, int(x0 - dx)), max(0, int(y0 - dy)), min(w, int(x1 + dx)), min(h, int(y1 + dy)))
    return image, box, truth


@pytest.mark.timeout(600)
def test_segment_box_outlines_inside_the_box(client: Any, shared_data: Path) -> None:
    """/segment_box with one box: the returned mask (the 0/255 download) is not empty, lies inside
    the box, and overlaps the radiologist's outline; the table row carries the box and sizes."""
    from gradio_client import handle_file

    _require_bundled("box-lesion")
    image, box, truth = _cdd_lesion_case(shared_data)
    picture, table, info, files, summary = client.predict(handle_file(image), ",".join(map(str, box)),
                                                          api_name="/segment_box")
    mask = cv2.imread(next(f for f in files if Path(f).name == "mask_lesion.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert mask.shape == truth.shape and mask.any()
    x0, y0, x1, y1 = box
    assert not mask[:y0].any() and not mask[y1:].any() and not mask[:, :x0].any() and not mask[:, x1:].any()
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.5
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["box"] == ",".join(map(str, box)) and row["area_px"] == int(mask.sum())
    assert 0.0 <= row["malignancy"] <= 1.0 and "tiryaki-mass ROI classifier" in row["malignancy_source"]
    assert info["pipeline"] == "box-lesion" and picture is not None
    assert "1 box(es) outlined" in summary
    findings = next(f for f in files if Path(f).name == "findings.csv")
    assert len(list(csv.DictReader(open(findings)))) == 1


def test_segment_box_refuses_missing_or_malformed_boxes(client: Any, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    image = handle_file(write_png16(tmp_path / "small.png"))
    with pytest.raises(AppError, match="No box"):
        client.predict(image, "", api_name="/segment_box")
    with pytest.raises(AppError, match="four numbers"):
        client.predict(image, "10,20,30", api_name="/segment_box")


@pytest.mark.timeout(600)
def test_refine_lesions_shows_both_outlines(client: Any, shared_data: Path) -> None:
    """cascade's lesion components sent as boxes: one table row per component, labelled with it."""
    from gradio_client import handle_file

    _require_bundled("box-lesion")
    image, _, _ = _cdd_lesion_case(shared_data)
    picture, table, info, files, summary = client.predict(handle_file(image), "cascade",
                                                          api_name="/refine_lesions")
    assert table["data"] and all(row[1].startswith("cascade lesion ") for row in table["data"])
    assert any(Path(f).name == "mask_lesion.png" for f in files) and picture is not None


def test_dicom_upload_offers_seg_and_sr(client: Any, cbis_dicoms: list[Path]) -> None:
    """/predict on a DICOM: the downloads include seg.dcm (its mask equals mask_breast.png, it
    references the upload's UIDs) and sr.dcm (a PNG upload gets neither: tests/test_dicom_out.py)."""
    import highdicom as hd
    import pydicom
    from gradio_client import handle_file

    *_, files, _ = client.predict(handle_file(cbis_dicoms[1]), "breast", api_name="/predict")
    by_name = {Path(f).name: Path(f) for f in files}
    assert {"seg.dcm", "sr.dcm"} <= set(by_name)
    source = pydicom.dcmread(cbis_dicoms[1], stop_before_pixels=True)
    seg = hd.seg.segread(by_name["seg.dcm"])
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        source.SOPInstanceUID and seg.StudyInstanceUID == source.StudyInstanceUID
    mask = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])[0, ..., 0] > 0
    png = cv2.imread(str(by_name["mask_breast.png"]), cv2.IMREAD_GRAYSCALE) > 0
    assert seg.SegmentSequence[0].SegmentLabel == "breast" and np.array_equal(mask, png)
    sr = pydicom.dcmread(by_name["sr.dcm"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and sr.PatientID == source.PatientID
