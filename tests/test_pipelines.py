"""Registry, the `breast` pipeline, and the `mammo` command on real DICOMs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import mammo
from mammo.export import write_result
from mammo.io import read_image
from mammo.pipelines import Pipeline, Result, get_pipeline, list_pipelines

REPO = Path(__file__).resolve().parents[1]


def test_registry_lists_and_errors() -> None:
    assert "breast" in list_pipelines()
    assert mammo.list_pipelines() == list_pipelines()
    with pytest.raises(KeyError, match="choose one of: breast"):
        get_pipeline("no-such-pipeline")
    pipe = get_pipeline("breast")
    assert isinstance(pipe, Pipeline)
    assert get_pipeline("breast") is pipe, "pipelines are built once per process"


def test_registry_entries_are_importable_strings() -> None:
    from mammo.pipelines.registry import PIPELINES

    for name, spec in PIPELINES.items():
        module, _, func = spec.builder.partition(":")
        assert module and func, name
        assert spec.framework in {"numpy", "torch", "keras"}


def test_breast_pipeline_on_real_dicom(cbis_dicoms) -> None:
    image, meta = read_image(cbis_dicoms[0])
    result = get_pipeline("breast").run(image, meta)
    assert isinstance(result, Result)
    result.check_shapes(image.shape)
    mask = result.masks["breast"]
    assert mask.dtype == bool and 0.1 < mask.mean() < 0.5
    y0, x0, y1, x1 = result.geometry["crop_box"]
    assert mask[:y0].sum() == 0 and mask[y1:].sum() == 0 and mask[:, x1:].sum() == 0


def test_read_predict_write_in_original_geometry(cbis_dicoms, tmp_path) -> None:
    """A ~4600x2800 DICOM: read, breast mask, mask PNG in original geometry. (Its speed is a
    benchmark, `python -m mammo.bench`, not a limit in this test.)"""
    pipe = get_pipeline("breast")
    for path in cbis_dicoms[:4]:
        image, meta = read_image(path)
        result = pipe.run(image, meta)
        written = write_result(tmp_path / path.stem, image, meta, result)
        saved = cv2.imread(str(written["mask_breast"]), cv2.IMREAD_UNCHANGED)
        assert saved.shape == image.shape == meta.original_shape
        np.testing.assert_array_equal(saved > 0, result.masks["breast"])


def test_cli_predict_examples_and_bad_input(tmp_path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mammo", "predict", "--pipeline", "breast", "--out", str(out),
           "--quiet", "--examples", str(bad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr  # 8 written, 1 refused
    assert "notes.png" in proc.stderr and "1 of 9" in proc.stderr
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(dirs) == 8
    for d in dirs:
        scores = json.loads((d / "scores.json").read_text())
        assert scores["pipeline"] == "breast"
        assert scores["meta"]["laterality"] in ("L", "R") and scores["meta"]["view"] in ("CC", "MLO")
        # decode and write are timed too, around the pipeline's own steps
        timings = scores["timings"]
        assert list(timings) == ["read", "breast_mask", "run", "write", "total"]
        assert all(v >= 0 for v in timings.values()) and timings["total"] >= timings["write"] > 0
        mask = cv2.imread(str(d / "mask_breast.png"), cv2.IMREAD_UNCHANGED)
        assert list(mask.shape) == scores["meta"]["original_shape"]
        overlay = cv2.imread(str(d / "overlay.png"))
        assert overlay.ndim == 3 and max(overlay.shape[:2]) <= 2048
    assert not (out / "notes").exists(), "nothing is written for a refused input"


def test_cli_lists_pipelines_and_rejects_unknown() -> None:
    proc = subprocess.run([sys.executable, "-m", "mammo", "pipelines"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("breast")
    proc = subprocess.run([sys.executable, "-m", "mammo", "predict", "--pipeline", "nope", "x.png"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "choose one of" in proc.stderr
    assert proc.stderr.startswith("mammo: error: unknown pipeline 'nope'") and "Traceback" not in proc.stderr


def _write_film(path: Path, shape: tuple[int, int] = (300, 200)) -> Path:
    """A small synthetic film: a bright half-disc breast against the left edge."""
    image = np.zeros(shape, np.uint8)
    cv2.circle(image, (0, shape[0] // 2), shape[0] // 3, 180, -1)
    cv2.imwrite(str(path), image)
    return path


def test_threads_option_and_environment(tmp_path, monkeypatch) -> None:
    """--threads sets torch's and OpenCV's threads (and the write pool); MAMMO_THREADS is the
    default; the option wins; a bad value is refused."""
    from mammo.cli import main, resolve_threads
    from mammo.models.frameworks import import_torch

    torch = import_torch()
    before = torch.get_num_threads(), cv2.getNumThreads()
    film = _write_film(tmp_path / "film.png")
    try:
        monkeypatch.setenv("MAMMO_THREADS", "3")
        assert resolve_threads(None) == 3 and resolve_threads(1) == 1
        predict = ["predict", "--pipeline", "breast", "--quiet"]
        assert main([*predict, "--out", str(tmp_path / "a"), str(film)]) == 0
        assert torch.get_num_threads() == 3 and cv2.getNumThreads() == 3
        assert main([*predict, "--threads", "1", "--out", str(tmp_path / "b"), str(film)]) == 0
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert (tmp_path / "b" / "film" / "mask_breast.png").is_file()
        monkeypatch.setenv("MAMMO_THREADS", "zero")
        assert main(["predict", "--pipeline", "breast", "--out", str(tmp_path / "c"), str(film)]) == 2
        with pytest.raises(ValueError, match="positive"):
            resolve_threads(0)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_probabilities_are_asked_for_only_where_run_takes_the_keyword() -> None:
    from mammo.io.meta import ImageMeta
    from mammo.pipelines.base import accepts_probabilities, run_with

    class Plain:
        name, description, weights_sha256 = "plain", "", ""

        def run(self, image, meta):
            return Result(probabilities={"lesion": image}, pipeline=self.name)

    class Optional(Plain):
        def run(self, image, meta, probabilities: bool = False):
            extra = {"adipose": image} if probabilities else {}
            return Result(probabilities={"lesion": image, **extra}, pipeline=self.name)

    image, meta = np.zeros((4, 3), np.float32), ImageMeta()
    assert not accepts_probabilities(Plain()) and accepts_probabilities(Optional())
    assert isinstance(Optional(), Pipeline)
    assert set(run_with(Plain(), image, meta, probabilities=True).probabilities) == {"lesion"}
    assert set(run_with(Optional(), image, meta).probabilities) == {"lesion"}
    assert set(run_with(Optional(), image, meta, probabilities=True).probabilities) == {"lesion", "adipose"}


def test_write_result_files_and_recorded_timings(tmp_path) -> None:
    """Masks round-trip through the mask PNG settings (0/255), one write thread gives the same
    files, and record_timings puts read first, the caller's steps after the pipeline's."""
    from mammo.export import record_timings
    from mammo.io.meta import ImageMeta

    rng = np.random.default_rng(0)
    image = rng.random((120, 80), dtype=np.float32)
    mask = np.zeros((120, 80), bool)
    mask[30:70, 10:50] = True
    prob = np.linspace(0, 1, 120 * 80, dtype=np.float32).reshape(120, 80)
    result = Result(masks={"lesion": mask}, probabilities={"lesion": prob}, saliency={"malignant": prob},
                    timings={"model": 0.5}, pipeline="t")
    for workers in (1, 2):
        written = write_result(tmp_path / str(workers), image, ImageMeta(), result, probabilities=True,
                               workers=workers)
        saved = cv2.imread(str(written["mask_lesion"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(saved, mask.astype(np.uint8) * 255)
        p8 = cv2.imread(str(written["prob_lesion"]), cv2.IMREAD_UNCHANGED)
        assert np.abs(p8.astype(int) - np.round(prob * 255)).max() <= 1
        assert {"saliency_malignant", "overlay", "scores"} <= set(written)
    recorded = record_timings(written["scores"], {"read": 0.25, "run": 0.5, "write": 0.125})
    assert list(recorded) == ["read", "model", "run", "write", "total"] and recorded["total"] == 0.875
    assert json.loads(written["scores"].read_text())["timings"] == recorded


# -- the CLI's errors, outputs and warnings, with a stand-in reader (no dependence on mammo.io's rules)
@pytest.fixture
def fake_reader(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """`read_image` replaced by one returning a synthetic film, with QC flags and warnings for a
    file whose name holds "flagged"; the keyword arguments of each call are recorded."""
    from mammo.io.meta import ImageMeta

    calls: list[dict] = []

    def read_image(path, **kwargs):  # noqa: ANN001, ANN202 - read_image's stand-in
        calls.append(kwargs)
        image = np.zeros((120, 80), np.float32)
        image[30:90, :40] = 0.7
        meta = ImageMeta(path=str(path), format="png", original_shape=(120, 80))
        meta.qc, meta.warnings = [], []
        if "flagged" in Path(path).name:
            meta.qc = ["saturated", "small_image"]
            meta.warnings = ["WindowCenter 'abcd' is not a number;\nignored"]
        return image, meta

    monkeypatch.setattr("mammo.io.read_image", read_image)
    return calls


def _main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """`mammo ARGS` in-process, "predict" with the breast pipeline and --quiet added when
    args[0] is "predict": (exit status, non-empty stderr lines)."""
    from mammo.cli import main

    if args[0] == "predict":
        args = ["predict", "--pipeline", "breast", "--quiet", *args[1:]]
    status = main(args)
    return status, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_cli_passes_allow_modality_and_prints_flags(tmp_path, fake_reader, capsys) -> None:
    """--allow-modality reaches read_image; an input with QC flags or warnings is written, with
    one warning line naming it, and scores.json has them as top-level keys."""
    film, flagged = tmp_path / "film.png", tmp_path / "flagged.png"
    out = tmp_path / "out"
    status, lines = _main(["predict", "--out", str(out), str(film)], capsys)
    assert status == 0 and lines == [] and fake_reader[-1] == {"allow_modality": False}
    status, lines = _main(["predict", "--allow-modality", "--out", str(out), str(flagged)], capsys)
    assert status == 0 and fake_reader[-1] == {"allow_modality": True}
    assert lines == [f"mammo: warning: {flagged}: QC: saturated, small_image; "
                     "warning: WindowCenter 'abcd' is not a number; ignored"]
    scores = json.loads((out / "flagged" / "scores.json").read_text())
    assert scores["qc"] == ["saturated", "small_image"] and scores["warnings"][0].startswith("WindowCenter")
    assert json.loads((out / "film" / "scores.json").read_text())["qc"] == []


def test_cli_failed_write_leaves_nothing(tmp_path, fake_reader, capsys, monkeypatch) -> None:
    """A write failing after some outputs were written: one error line naming the input, exit 1,
    no output folder and no staging folder; the next input is still written."""
    import mammo.export

    real_write_png, calls = mammo.export.write_png, []

    def failing_write_png(path, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(path)
        if "bad" in str(path.parent) and len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write_png(path, *args, **kwargs)

    monkeypatch.setattr(mammo.export, "write_png", failing_write_png)
    out = tmp_path / "out"
    bad, good = tmp_path / "bad.png", tmp_path / "good.png"
    status, lines = _main(["predict", "--out", str(out), str(bad), str(good)], capsys)
    assert status == 1 and len(lines) == 2, lines
    assert lines[0].startswith(f"mammo: error: {bad}: its outputs could not be written to {out / 'bad'}: "
                               "No space left on device")
    assert lines[1] == "mammo: 1 of 2 inputs failed (nothing written for them)"
    assert sorted(p.name for p in out.iterdir()) == ["good"]  # no "bad", no ".bad.*.partial"


def test_cli_unwritable_output_is_one_line(tmp_path, fake_reader, capsys) -> None:
    """--out naming a file: every input fails with a message naming it, no traceback."""
    out = tmp_path / "taken"
    out.write_text("a file, not a folder")
    film = tmp_path / "film.png"
    status, lines = _main(["predict", "--out", str(out), str(film)], capsys)
    assert status == 1 and len(lines) == 1
    assert lines[0].startswith(f"mammo: error: {film}: its outputs could not be written to {out / 'film'}")


def test_cli_rerun_replaces_outputs_and_keeps_other_files(tmp_path, fake_reader, capsys) -> None:
    """An existing output folder gets the new files; files of the user's in it stay."""
    out, film = tmp_path / "out", tmp_path / "film.png"
    (out / "film").mkdir(parents=True)
    (out / "film" / "notes.txt").write_text("mine")
    (out / "film" / "scores.json").write_text("{}")
    status, _ = _main(["predict", "--out", str(out), str(film)], capsys)
    assert status == 0 and (out / "film" / "notes.txt").read_text() == "mine"
    assert json.loads((out / "film" / "scores.json").read_text())["pipeline"] == "breast"
    assert sorted(p.name for p in out.iterdir()) == ["film"]


def test_cli_long_names_are_shortened_to_fit(tmp_path, fake_reader, capsys) -> None:
    """Stems over 200 bytes are cut with a hash (distinct stems stay distinct); short ones stay."""
    from mammo.export import fit_name

    long_a, long_b = "a" * 236, "a" * 235 + "b"
    assert fit_name("case_L_CC") == "case_L_CC" and fit_name(fit_name(long_a)) == fit_name(long_a)
    assert fit_name(long_a) != fit_name(long_b) and len(fit_name(long_a).encode()) <= 200
    assert len(fit_name("é" * 200).encode()) <= 200  # cut at a character boundary, still UTF-8
    out = tmp_path / "out"
    status, _ = _main(["predict", "--out", str(out), str(tmp_path / f"{long_a}.png"),
                       str(tmp_path / f"{long_b}.png")], capsys)
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([fit_name(long_a), fit_name(long_b)])


def test_cli_missing_weights_is_one_line(tmp_path) -> None:
    """cascade with no weights anywhere: one line saying what to run, exit 1, no traceback."""
    env = {**os.environ, "MAMMO_WEIGHTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mammo", "predict", "--pipeline", "cascade", "x.png"],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("mammo: error: weights 'cascade-tissue'"), lines
