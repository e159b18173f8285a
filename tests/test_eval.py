"""`python -m eval`: the batch evaluator end to end, resume after a kill, errors as rows, re-scoring."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, require_data

from eval.cli import main
from eval.runner import rescore
from eval.scoring import score
from eval.table import GLAM_COLUMNS, read_rows
from mammo import metrics as M
from mammo.errors import MammoInputError
from mammo.qc import FLAGS as QC_FLAGS


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eval", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def rows_without_time(path: Path) -> list[dict[str, str]]:
    """predictions.csv rows without the `seconds` column (the only one that differs between runs)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_rows(path)]


def test_cascade_on_cdd_cesm_end_to_end(tmp_path: Path) -> None:
    data = require_data("cdd_cesm")
    out = tmp_path / "out"
    proc = run_cli("--pipeline", "cascade", "--dataset", f"cdd-cesm:{data}", "--split", "val",
                   "--limit", "3", "--out", str(out), "--resamples", "200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "predictions.csv").open() as fh:
        header = next(csv.reader(fh))
    assert tuple(header[:5]) == GLAM_COLUMNS
    assert header[5:10] == ["patient_id", "laterality", "view", "pipeline", "weights_sha256"]
    assert header[10:] == ["dice_lesion", "iou_lesion", "ref_area_lesion", "pred_area_lesion", "seconds",
                           "qc", "error"]
    rows = read_rows(out / "predictions.csv")
    assert all(set(filter(None, r["qc"].split(";"))) <= set(QC_FLAGS) for r in rows)  # the reader's flags
    assert len(rows) == 3 and all(r["pipeline"] == "cascade" and not r["error"] for r in rows)
    assert all(r["malignant_label"] == "1" and r["malignant_pred"] == "" for r in rows)  # no scores
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 3 and metrics["pipeline"] == "cascade"
    lesion = metrics["segmentation"]["lesion"]
    dice = [float(r["dice_lesion"]) for r in rows if float(r["ref_area_lesion"]) > 0]
    assert lesion["n_images"] == len(dice) == 3 - lesion["empty_reference_images"]
    assert lesion["dice"]["mean"] == pytest.approx(np.mean(dice), abs=1e-4)
    low, high = lesion["dice"]["ci95"]
    assert low <= lesion["dice"]["mean"] <= high
    assert set(metrics["detection"]["lesion"]["froc"]) == {"0.25", "0.5", "1", "2", "4"}
    # classification: one class only (all CDD-CESM images are malignant) and no scores -> absent
    assert "classification" not in metrics
    first = rows[0]["image_index"]
    from mammo.datasets import load_dataset

    shape = load_dataset("cdd-cesm", data)[first].image.shape
    mask = cv2.imread(str(out / "masks" / f"{first}_lesion.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
    assert (out / "probabilities" / f"{first}_lesion.png").is_file()
    page = (out / "report.html").read_text()
    worst = min(rows, key=lambda r: float(r["dice_lesion"]))["image_index"]
    assert "FROC" in page and worst in page  # the gallery shows the worst case (of 3: one worst, one best)


def test_kill_and_resume_equals_uninterrupted(tmp_path: Path) -> None:
    data = require_data("cdd_cesm")
    args = ["--pipeline", "cascade", "--dataset", f"cdd-cesm:{data}", "--split", "val", "--limit", "8",
            "--resamples", "50", "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "eval", *args, "--out", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table = killed / "predictions.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if table.is_file() and len(read_rows(table)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_rows(table)
    assert 3 <= len(partial) < 8 and not (killed / "metrics.json").exists()
    refused = run_cli(*args, "--out", str(killed))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    fresh = run_cli(*args, "--out", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert rows_without_time(table) == rows_without_time(tmp_path / "fresh" / "predictions.csv")
    # the rows kept from before the kill were not recomputed
    assert [r["seconds"] for r in read_rows(table)[:len(partial)]] == [r["seconds"] for r in partial]
    mismatch = run_cli(*args[:-3], "--limit", "9", "--quiet", "--out", str(killed), "--resume")
    assert mismatch.returncode == 2 and "limit" in mismatch.stderr


def _folder_with_broken_image(root: Path) -> Path:
    mias = require_data("mias")
    images = sorted(p for p in mias.iterdir() if p.stem.startswith("mdb") and p.suffix in (".png", ".pgm"))[:3]
    (root / "masks" / "breast").mkdir(parents=True)
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / f"{path.stem}.png"), image)
        cv2.imwrite(str(root / "masks" / "breast" / f"{path.stem}.png"), ((image > 30) * 255).astype(np.uint8))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    (root / "labels.csv").write_text("image,malignant_label,patient_id\n" +
                                     "".join(f"{p.stem}.png,{i % 2},pt{i}\n" for i, p in enumerate(images)))
    return root


def test_broken_image_becomes_an_error_row(tmp_path: Path) -> None:
    folder = _folder_with_broken_image(tmp_path / "set")
    out = tmp_path / "out"
    code = main(["--pipeline", "breast", "--dataset", f"folder:{folder}", "--out", str(out), "--quiet",
                 "--resamples", "100"])
    assert code == 1  # finished, but says that an image failed
    rows = {r["image_index"]: r for r in read_rows(out / "predictions.csv")}
    assert len(rows) == 4 and "MammoInputError" in rows["broken"]["error"]
    good = [r for k, r in rows.items() if k != "broken"]
    assert all(not r["error"] and float(r["dice_breast"]) > 0.8 for r in good)
    assert [r["malignant_label"] for r in good] == ["0", "1", "0"] and rows["broken"]["malignant_label"] == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and metrics["n_errors"] == 1
    assert metrics["segmentation"]["breast"]["n_images"] == 3
    assert metrics["segmentation"]["breast"]["empty_reference_images"] == 0
    assert all(0 < float(r["ref_area_breast"]) < 1 and 0 < float(r["pred_area_breast"]) < 1 for r in good)
    assert "classification" not in metrics  # labels but no scores: absent, not zero
    assert "broken" in (out / "report.html").read_text()


def test_score_recomputes_from_saved_files(tmp_path: Path) -> None:
    folder = _folder_with_broken_image(tmp_path / "set")
    out = tmp_path / "out"
    main(["--pipeline", "breast", "--dataset", f"folder:{folder}", "--out", str(out), "--quiet",
          "--resamples", "100", "--no-report"])
    before = json.loads((out / "metrics.json").read_text())
    # spoil the CSV's Dice values and one mask: `score` must recompute them from masks/ and the dataset
    rows = [r for r in read_rows(out / "predictions.csv") if not r["error"]]
    table = (out / "predictions.csv").read_text().replace(f",{rows[0]['dice_breast']},", ",0.000000,")
    (out / "predictions.csv").write_text(table)
    (out / "metrics.json").unlink()
    code = main(["score", "--predictions", str(out / "predictions.csv"), "--dataset", f"folder:{folder}",
                 "--quiet", "--resamples", "100"])
    assert code == 1  # the broken image is still an error row
    after = json.loads((out / "metrics.json").read_text())
    assert after["segmentation"] == before["segmentation"]
    mask_path = out / "masks" / f"{rows[0]['image_index']}_breast.png"
    cv2.imwrite(str(mask_path), np.zeros_like(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)))
    score(out / "predictions.csv", f"folder:{folder}", n_resamples=100, quiet=True)
    rescored = {r["image_index"]: r for r in read_rows(out / "predictions.csv")}
    assert rescored[rows[0]["image_index"]]["dice_breast"] == "0.000000"


def test_score_classification_only_from_a_csv(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    preds = np.clip(labels * 0.3 + rng.random(40) * 0.7, 0, 1)
    lines = ["image_index,benign_pred,malignant_pred,benign_label,malignant_label,patient_id"]
    lines += [f"img{i},{1 - p:.6f},{p:.6f},1,{y},pt{i // 2}" for i, (y, p) in enumerate(zip(labels, preds))]
    (tmp_path / "predictions.csv").write_text("\n".join(lines) + "\n")
    metrics = rescore(tmp_path / "predictions.csv", None, n_resamples=300, quiet=True)
    malignant = metrics["classification"]["malignant"]
    assert malignant["auc"]["mean"] == pytest.approx(roc_auc_score(labels, preds), abs=1e-4)
    assert malignant["n"] == 40 and malignant["n_pos"] == int(labels.sum())
    low, high = malignant["auc"]["ci95"]
    assert low < malignant["auc"]["mean"] < high
    assert malignant["sensitivity"]["mean"] == pytest.approx(float(np.mean(preds[labels == 1] >= 0.5)), abs=1e-4)
    benign = metrics["classification"]["benign"]  # every image benign: AUC undefined, said so
    assert benign["auc"]["mean"] is None and "one class" in benign["auc"]["undefined"]
    assert "segmentation" not in metrics and "detection" not in metrics
    page = (tmp_path / "report.html").read_text()
    assert "ROC" in page


def test_bad_arguments_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--pipeline", "nope", "--dataset", f"folder:{tmp_path}", "--out", str(tmp_path / "o")]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["--pipeline", "breast", "--dataset", "inbreast:/x", "--out", str(tmp_path / "o")]) == 2
    assert "unknown dataset kind" in capsys.readouterr().err
    assert main(["--pipeline", "breast", "--dataset", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "KIND:PATH" in capsys.readouterr().err
    with pytest.raises(MammoInputError, match="not a predictions.csv"):
        (tmp_path / "x.csv").write_text("a,b\n1,2\n")
        score(tmp_path / "x.csv", None)


def test_workers_give_the_same_rows(tmp_path: Path) -> None:
    data = require_data("mias")
    common = ["--pipeline", "breast", "--dataset", f"mias:{data}", "--split", "val", "--limit", "6",
              "--quiet", "--no-report", "--resamples", "50"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert rows_without_time(tmp_path / "one" / "predictions.csv") == \
        rows_without_time(tmp_path / "two" / "predictions.csv")


# --- the Dice convention on a synthetic run (no model, no real data) -------------------------------

SIDE = 32


def _square(y: int, x: int, size: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), bool)
    mask[y:y + size, x:x + size] = True
    return mask


def _synthetic_run(root: Path, empty_preds: list[np.ndarray]) -> tuple[Path, str, list[float]]:
    """A `folder` dataset of 4 images with a lesion and len(empty_preds) with an empty lesion mask,
    and a run folder with its predicted masks and probabilities (empty_preds for the empty ones).

    Returns (predictions.csv, dataset spec, per-image Dice of the 4 images with a lesion).
    """
    data, out = root / "set", root / "out"
    for sub in (data / "masks", out / "masks", out / "probabilities"):
        sub.mkdir(parents=True)
    truth = _square(8, 8, 8)
    lesion_preds = [truth, _square(12, 8, 8), np.zeros_like(truth), _square(8, 8, 4)]
    cases = [(truth, p) for p in lesion_preds] + [(np.zeros_like(truth), p) for p in empty_preds]
    rng = np.random.default_rng(0)
    lines = ["image_index,patient_id"]
    for i, (ref, pred) in enumerate(cases):
        stem = f"img{i}"
        cv2.imwrite(str(data / f"{stem}.png"), rng.integers(0, 255, (SIDE, SIDE), dtype=np.uint8))
        cv2.imwrite(str(data / "masks" / f"{stem}.png"), ref.astype(np.uint8) * 255)
        cv2.imwrite(str(out / "masks" / f"{stem}_lesion.png"), pred.astype(np.uint8) * 255)
        cv2.imwrite(str(out / "probabilities" / f"{stem}_lesion.png"), pred.astype(np.uint8) * 230)
        lines.append(f"{stem},pt{i % 3}")  # patients mix images with and without a lesion
    (out / "predictions.csv").write_text("\n".join(lines) + "\n")
    dice = [M.dice_iou(p, truth)[0] for p in lesion_preds]
    return out / "predictions.csv", f"folder:{data}", dice


def test_headline_dice_leaves_out_empty_references(tmp_path: Path) -> None:
    empty = [np.zeros((SIDE, SIDE), bool)] * 4   # half the images: empty reference, empty prediction
    table, dataset, dice = _synthetic_run(tmp_path, empty)
    metrics = rescore(table, dataset, n_resamples=200, quiet=True)
    lesion = metrics["segmentation"]["lesion"]
    assert lesion["dice"]["mean"] == pytest.approx(np.mean(dice), abs=1e-4)  # not (sum(dice) + 4) / 8
    assert lesion["n_images"] == 4 and lesion["empty_reference_images"] == 4
    assert lesion["empty_reference_fp_rate"]["mean"] == 0.0
    assert lesion["empty_reference_mean_pred_area"]["mean"] == 0.0
    # the CI is the bootstrap over the images with a lesion only (their patients: img0..3 -> pt0,1,2,0)
    values = np.array(dice)
    expected = M.with_ci(lambda idx: float(values[idx].mean()), ["pt0", "pt1", "pt2", "pt0"],
                         n_resamples=200, seed=0)
    assert lesion["dice"]["ci95"] == pytest.approx(expected["ci95"], abs=1e-4)
    # predictions.csv keeps the per-image convention: empty/empty scores 1
    rows = {r["image_index"]: r for r in read_rows(table)}
    assert [rows[f"img{i}"]["dice_lesion"] for i in range(4, 8)] == ["1.000000"] * 4
    assert [rows[f"img{i}"]["ref_area_lesion"] for i in range(4, 8)] == ["0"] * 4
    assert float(rows["img0"]["ref_area_lesion"]) == pytest.approx(64 / SIDE**2)
    # an older predictions.csv (no area columns) scored without the dataset: counted as before, said so
    old = table.read_text().splitlines()
    header = old[0].split(",")
    keep = [i for i, c in enumerate(header) if "area" not in c]
    table.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in old) + "\n")
    legacy = score(table, None, n_resamples=50, quiet=True)["segmentation"]["lesion"]
    assert legacy["reference_unknown_images"] == legacy["n_images"] == 8
    assert legacy["dice"]["mean"] == pytest.approx((sum(dice) + 4) / 8, abs=1e-4)


def test_empty_reference_false_positives_are_reported_apart(tmp_path: Path) -> None:
    blob = _square(20, 20, 4)  # 16 px = 1/64 of the image
    empty = [np.zeros((SIDE, SIDE), bool), blob, np.zeros((SIDE, SIDE), bool), blob]
    table, dataset, dice = _synthetic_run(tmp_path, empty)
    metrics = rescore(table, dataset, n_resamples=200, quiet=True)
    lesion = metrics["segmentation"]["lesion"]
    assert lesion["dice"]["mean"] == pytest.approx(np.mean(dice), abs=1e-4)  # false positives elsewhere
    assert lesion["empty_reference_images"] == 4
    assert lesion["empty_reference_fp_rate"]["mean"] == pytest.approx(0.5)
    assert lesion["empty_reference_mean_pred_area"]["mean"] == pytest.approx(0.5 * 16 / SIDE**2, rel=1e-3)
    low, high = lesion["empty_reference_fp_rate"]["ci95"]
    assert 0 <= low <= 0.5 <= high <= 1
    # the meter (training's accumulator) agrees with eval when asked for eval's convention
    meter = M.SegmentationMeter(ignore_empty=True)
    refs = [_square(8, 8, 8)] * 4 + [np.zeros((SIDE, SIDE), bool)] * 4
    preds = [_square(8, 8, 8), _square(12, 8, 8), np.zeros((SIDE, SIDE), bool), _square(8, 8, 4), *empty]
    for pred, ref in zip(preds, refs):
        meter.add("lesion", pred, ref)
    assert meter.summary()["lesion"]["dice"] == pytest.approx(lesion["dice"]["mean"], abs=1e-4)
    assert meter.empty_reference()["lesion"]["empty_reference_fp_rate"] == 0.5
    # timings are not metrics: none in the sections, one place for them, not in the report's table
    assert "bootstrap_seconds" not in metrics["detection"]["lesion"]
    assert metrics["timings"]["bootstrap_seconds"] >= 0
    page = (table.parent / "report.html").read_text(encoding="utf-8")
    summary = page[page.index('<section id="summary">'):]
    summary = summary[:summary.index("</section>")]
    assert "seconds" not in summary and "images with an empty reference" in summary
