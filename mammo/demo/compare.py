"""Comparing pipelines on one file: each runs on the same image, read once; the table's rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mammo.demo.errors import USER_ERRORS, check_names_argument, error_message
from mammo.demo.predict import Prediction, load_image, run_pipeline
from mammo.errors import MammoInputError

COMPARE_COLUMNS = ["pipeline", "benign", "malignant", "lesion area %", "masks", "seconds", "error"]


def compare_file(path: str | os.PathLike[str] | None,
                 names: list[str] | None) -> tuple[list[Prediction], dict[str, str]]:
    """Read one file once and run each pipeline of `names` on it.

    Returns:
        the predictions in the order asked, and name -> message for the pipelines that could
        not run (unknown name, weights missing); the others still run.

    Raises:
        MammoInputError: no pipeline chosen, `names` not a list of str, or the file cannot be
        read.
    """
    check_names_argument(names)
    if not names:
        raise MammoInputError("Pick at least one pipeline to compare.")
    image, meta, read_seconds = load_image(path)
    preds, failed = [], {}
    for name in dict.fromkeys(names):  # each once, in the order given
        try:
            preds.append(run_pipeline(name, image, meta, Path(path or "").name, read_seconds))
        except USER_ERRORS as err:
            failed[name] = error_message(err)
    return preds, failed


def comparison_rows(preds: list[Prediction], failed: dict[str, str]) -> list[list[Any]]:
    """One row per pipeline for a table with `COMPARE_COLUMNS` ("" where not applicable)."""
    rows: list[list[Any]] = []
    for pred in preds:
        scores, masks = pred.result.scores, pred.result.masks
        lesion = round(100 * float(masks["lesion"].mean()), 3) if "lesion" in masks else ""
        rows.append([pred.name, round(scores["benign"], 4) if "benign" in scores else "",
                     round(scores["malignant"], 4) if "malignant" in scores else "", lesion,
                     ", ".join(masks), round(pred.seconds["load"] + pred.seconds["run"], 2), ""])
    rows.extend([name, "", "", "", "", "", message] for name, message in failed.items())
    return rows
