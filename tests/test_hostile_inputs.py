"""Hostile inputs through every channel: for each file built here, the exact outcome of the CLI
(`python -m mammo predict` in a subprocess) and of the app's logic (`mammo.demo.predict_file`).

An input is either refused, or accepted with its warnings and QC flags recorded:

- refused: the CLI exits 1 with one line, `mammo: error: ...`, naming the file and the problem,
  no traceback, and leaves no output folder; the app raises one of `mammo.demo.USER_ERRORS`
  whose message names the file and the problem.
- accepted: the CLI exits 0 and writes scores.json, whose top-level "qc" and "warnings" hold the
  flags and warnings expected (each also on the CLI's `mammo: warning:` line); the app's Details
  and summary show them, and its downloads are written.

The cheap `breast` pipeline throughout, plus one `cascade` run (the 240-character name made it
fail half-way through its outputs). Refusal rules, QC flags and warnings come from `mammo.io`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from mammo import demo
from tests.dicom_factory import empty_file, make_dicom, mammogram_pixels, text_file, truncated_copy

REPO = Path(__file__).resolve().parents[1]
SHAPE = (640, 480)  # no refusal and no QC flag (small_image: under 512 px), yet quick
LONG_STEM = "case_L_CC_" + "x" * 226  # + ".png" = 240 characters


# -- the files -------------------------------------------------------------------------------------
def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _dicom(folder: Path, name: str, **tags: object) -> Path:
    return make_dicom(folder, mammogram_pixels(SHAPE), name, **tags)


def _random_dcm(folder: Path) -> Path:
    path = folder / "random.dcm"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _truncated_dcm(folder: Path) -> Path:
    return truncated_copy(_dicom(folder, "whole.dcm"), folder / "truncated.dcm")


def _dicom_with_raw(folder: Path, name: str, keyword: str, raw: bytes, **tags: object) -> Path:
    """A DICOM whose `keyword` (a DS element) holds the bytes `raw` as stored: pydicom warns
    about or refuses invalid values when they are set the ordinary way."""
    path = _dicom(folder, name, **tags)
    ds = pydicom.dcmread(path)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, "DS", len(raw), raw, 0, False, True)
    ds.save_as(path)
    return path


def _directory(folder: Path) -> Path:
    path = folder / "folder.png"
    path.mkdir()
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "empty": lambda d: empty_file(d / "empty.png"),
    "random_dcm": _random_dcm,
    "truncated_dcm": _truncated_dcm,
    "text_as_png": lambda d: text_file(d / "notes.png"),
    "png_1x1": lambda d: _png(d / "dot.png", np.full((1, 1), 200, np.uint8)),
    "png_1x5000": lambda d: _png(d / "line.png", mammogram_pixels((1, 5000), bits=8)),
    "png_all_white": lambda d: _png(d / "white.png", np.full(SHAPE, 255, np.uint8)),
    "long_name": lambda d: _png(d / f"{LONG_STEM}.png", mammogram_pixels(SHAPE, bits=8)),
    "directory": _directory,
    "nonexistent": lambda d: d / "missing.png",
    "modality_ct": lambda d: _dicom(d, "ct.dcm", Modality="CT"),
    "rescale_slope_nan": lambda d: _dicom_with_raw(d, "slope_nan.dcm", "RescaleSlope", b"NaN ",
                                                   RescaleIntercept="0"),
    "window_center_text": lambda d: _dicom_with_raw(d, "window_text.dcm", "WindowCenter", b"abcd",
                                                    WindowWidth="1000"),
}


# -- the expected outcomes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Refused:
    """Refused by every channel; `problem` is a regex the message must match."""

    problem: str


@dataclass(frozen=True)
class Accepted:
    """Read and run; `qc`: scores.json's "qc", exactly; `warnings`: one regex per warning of
    its "warnings", in order."""

    qc: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    cli_args: tuple[str, ...] = ()  # extra `mammo predict` options


EXPECTED: dict[str, Refused | Accepted] = {
    "empty": Refused(r"empty"),
    "random_dcm": Refused(r"not a valid DICOM"),
    "truncated_dcm": Refused(r"truncated"),
    "text_as_png": Refused(r"not an image"),
    "png_1x1": Refused(r"1x1 pixels, too small"),
    "png_1x5000": Refused(r"5000x1 pixels, (too small|a .* strip)"),
    "png_all_white": Refused(r"no usable dynamic range.*white"),  # blank: results would be invented
    "long_name": Accepted(),
    "directory": Refused(r"directory"),
    "nonexistent": Refused(r"does not exist"),
    "modality_ct": Refused(r"(?i)modality\b.*\bCT\b|\bCT\b.*modality"),  # unless --allow-modality
    "rescale_slope_nan": Refused(r"RescaleSlope.*NaN"),  # no real values: refused, not guessed
    "window_center_text": Accepted(warnings=(r"WindowCenter",)),  # optional: ignored, said so
}


def _build(case: str, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return BUILDERS[case](folder)


def _cli(path: Path, out: Path, pipeline: str = "breast", *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mammo", "predict", "--pipeline", pipeline, "--quiet", "--out", str(out),
           *extra, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240, check=False)


def _stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def assert_cli_refused(path: Path, out: Path, problem: str) -> None:
    """Exit 1, one line naming the file and the problem, no traceback, nothing written."""
    proc = _cli(path, out)
    lines = _stderr_lines(proc)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("mammo: error: "), lines
    assert path.name in lines[0] and re.search(problem, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def assert_cli_accepted(path: Path, out: Path, expected: Accepted, pipeline: str = "breast") -> dict:
    """Exit 0, scores.json with the expected flags and warnings, also on one warning line."""
    proc = _cli(path, out, pipeline, *expected.cli_args)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = [p for p in out.iterdir()]
    assert len(folders) == 1 and folders[0].is_dir(), folders  # no staging folder left
    scores = json.loads((folders[0] / "scores.json").read_text())
    _assert_flags(scores["qc"], scores["warnings"], expected)
    if expected.qc or expected.warnings:
        warned = [line for line in _stderr_lines(proc) if line.startswith("mammo: warning: ")]
        assert len(warned) == 1 and path.name in warned[0], proc.stderr
        assert all(flag in warned[0] for flag in expected.qc), warned
    return scores


def _assert_flags(qc: list[str], warnings: list[str], expected: Accepted) -> None:
    assert qc == list(expected.qc) and len(warnings) == len(expected.warnings), (qc, warnings)
    for pattern, warning in zip(expected.warnings, warnings):
        assert re.search(pattern, warning), (pattern, warning)


def assert_app_refused(path: Path, problem: str) -> None:
    with pytest.raises(demo.USER_ERRORS) as raised:
        demo.predict_file(str(path), "breast")
    message = demo.error_message(raised.value)
    assert path.name in message and re.search(problem, message), message


def assert_app_accepted(path: Path, expected: Accepted, tmp_path: Path) -> None:
    pred = demo.predict_file(str(path), "breast")
    info = demo.details(pred)
    _assert_flags(info["qc"], info["warnings"], expected)
    assert all(flag in demo.summary(pred) for flag in expected.qc)
    assert np.isfinite(pred.image).all()
    files = {p.name: p for p in demo.write_downloads(pred, tmp_path / "downloads")}
    scores = json.loads(files["scores.json"].read_text())
    _assert_flags(scores["qc"], scores["warnings"], expected)
    assert demo.overlay_view(pred).ndim == 3


# -- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_cli(case: str, tmp_path: Path) -> None:
    path, expected = _build(case, tmp_path), EXPECTED[case]
    if isinstance(expected, Refused):
        assert_cli_refused(path, tmp_path / "out", expected.problem)
    else:
        assert_cli_accepted(path, tmp_path / "out", expected)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_app(case: str, tmp_path: Path) -> None:
    path, expected = _build(case, tmp_path), EXPECTED[case]
    if isinstance(expected, Refused):
        assert_app_refused(path, expected.problem)
    else:
        assert_app_accepted(path, expected, tmp_path)


def test_cli_allow_modality_reads_ct_with_a_flag(tmp_path: Path) -> None:
    """--allow-modality: the CT DICOM refused above is read, flagged modality_not_mg."""
    path = _build("modality_ct", tmp_path)
    expected = Accepted(qc=("modality_not_mg",), cli_args=("--allow-modality",))
    assert_cli_accepted(path, tmp_path / "out", expected)


def test_cli_cascade_long_name_writes_every_output(tmp_path: Path) -> None:
    """The 240-character name with cascade: every output written, each name within the file
    system's 255 bytes (the artifacts are named after the input), and no staging folder left."""
    path = _build("long_name", tmp_path)
    assert len(path.name) == 240
    scores = assert_cli_accepted(path, tmp_path / "out", Accepted(), pipeline="cascade")
    folder, = (tmp_path / "out").iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert folder.name.startswith("case_L_CC_xxx") and len(folder.name.encode()) <= 200
    assert {"mask_lesion.png", "overlay.png", "scores.json"} <= set(names)
    assert {n.rsplit("_", 1)[-1] for n in names if n.startswith(folder.name)} == {"prob.png", "seg.png",
                                                                                   "visualization.png"}
    assert all(len(n.encode()) <= 255 and not n.startswith(".") for n in names)
    assert scores["pipeline"] == "cascade"
