"""`python -m mammo.glam run INPUT OUTPUT --model sep|joint`: the GLAM authors' `run.sh`, stage by stage.

INPUT is laid out like the authors' `sample_data/`: `images/` (the mammograms, any format
`mammo.io` reads; 16-bit PNG in the sample), an exam list (`exam_list_before_cropping.pkl`, or
`.json` / `.csv`, see `mammo.glam.exam_list`) and optionally `segmentation/` (ground truth drawn on
the authors' 2944x1920 model window). Each stage hands over files, so a stage can be re-run alone:

1. crop   -> OUTPUT/cropped_images/*.png, OUTPUT/cropped_images/cropped_exam_list.pkl
2. centres-> OUTPUT/data.pkl (the cropped exam list + `best_center` per image, 2944x1920 window)
3. predict-> OUTPUT/predictions.csv (`image_index, benign_pred, malignant_pred, benign_label,
             malignant_label`, one row per image, in exam-list order)
4. visualise -> OUTPUT/visualization/<image>.png (the five panels of `mammo.glam.visualize`)

Our GLAM is trained at 512x320 on mini-MIAS, so the predict stage gives the model the whole breast
crop in model orientation through the `glam` pipeline (`prepare_input`), not a 2944x1920 window at
native resolution; `best_center` is computed as the authors do and places their segmentations.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mammo.datasets.glam import view_labels
from mammo.errors import MammoInputError
from mammo.glam.centers import MODEL_INPUT, add_optimal_centers, paste_window
from mammo.glam.cropping import crop_exam_list, flip_for_model
from mammo.glam.exam_list import SEG_CLASSES, image_fields, iter_image_slots, read_exam_list, write_exam_list
from mammo.glam.visualize import five_panels

EXAM_LIST_NAMES = ("exam_list_before_cropping.pkl", "exam_list_before_cropping.json",
                   "exam_list_before_cropping.csv")
PREDICTION_COLUMNS = ("image_index", "benign_pred", "malignant_pred", "benign_label", "malignant_label")


def find_exam_list(input_folder: Path) -> Path:
    """The exam list inside INPUT (the authors' file name, as .pkl, .json or .csv)."""
    for name in EXAM_LIST_NAMES:
        if (input_folder / name).is_file():
            return input_folder / name
    raise MammoInputError(f"{input_folder} holds no exam list ({', '.join(EXAM_LIST_NAMES)}); "
                          "pass --exam-list")


def read_truth(exam: dict[str, Any], view: str, j: int, folder: Path | None,
               shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ground-truth masks bool `shape` of one image in model orientation, by class (those found).

    A segmentation of the authors' window size (2944x1920) is placed with `best_center`; one of
    the crop's own shape is used as it is; any other is skipped.
    """
    from mammo.datasets.base import read_binary_mask

    truth: dict[str, np.ndarray] = {}
    if folder is None:
        return truth
    for name in SEG_CLASSES:
        names = exam.get(f"{view}_{name}_seg") or []
        path = folder / f"{names[j]}.png" if j < len(names) else None
        if path is None or not path.is_file():
            continue
        mask = read_binary_mask(path)
        if mask.shape == MODEL_INPUT:
            center = image_fields(exam, view, j)["best_center"]
            truth[name] = paste_window(mask.astype(np.uint8), center, shape, view=view) > 0
        elif mask.shape == shape:
            truth[name] = mask
    return truth


def available_exams(exams: list[dict[str, Any]], images: Path) -> list[dict[str, Any]]:
    """The exams whose every image file is in `images`; the others are named on stderr and left out
    (the authors' sample list names four exams but ships the images of one)."""
    from mammo.glam.cropping import find_image_file

    keep, missing = [], []
    for idx, exam in enumerate(exams):
        absent = []
        for _, view, _, name in iter_image_slots([exam]):
            try:
                find_image_file(images, name)
            except MammoInputError:
                absent.append(name)
        (missing if absent else keep).append((idx, exam, absent))
    for idx, _, absent in missing:
        print(f"skipping exam {idx}: no image file for {', '.join(absent)} in {images}", file=sys.stderr)
    if not keep:
        raise MammoInputError(f"none of the {len(exams)} exams has its images in {images}")
    return [exam for _, exam, _ in keep]


def write_predictions(rows: list[dict[str, str]], path: Path) -> None:
    """predictions.csv with exactly the authors' five columns, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PREDICTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    return "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def predict_exams(exams: list[dict[str, Any]], cropped: Path, output: Path, pipeline: Any,
                  segmentation: Path | None, visualize: bool) -> list[dict[str, str]]:
    """Stage 3 (and 4): one predictions row per image; five-panel pictures when `visualize`."""
    from tqdm import tqdm

    from mammo.export import write_png
    from mammo.glam.cropping import find_image_file
    from mammo.io import read_image

    rows = []
    (output / "visualization").mkdir(parents=True, exist_ok=True)
    for idx, view, j, name in tqdm(list(iter_image_slots(exams)), desc="predict", unit="img"):
        exam = exams[idx]
        image, meta = read_image(find_image_file(cropped, name))
        flipped = np.ascontiguousarray(flip_for_model(image, view, exam.get("horizontal_flip", "NO")))
        result = pipeline.run(flipped, meta)
        labels = view_labels(exam.get("cancer_label") or {}, view)
        rows.append({"image_index": name, "benign_pred": _cell(result.scores["benign"]),
                     "malignant_pred": _cell(result.scores["malignant"]),
                     "benign_label": _cell(labels["benign"]), "malignant_label": _cell(labels["malignant"])})
        if visualize:
            truth = read_truth(exam, view, j, segmentation, flipped.shape)
            write_png(output / "visualization" / f"{name}.png", five_panels(flipped, result, truth))
    return rows


def run(input_folder: str | Path, output_folder: str | Path, model: str = "joint",
        exam_list: str | Path | None = None, segmentation: str | Path | None = None,
        num_processes: int = 1, visualize: bool = True) -> Path:
    """The four stages (see the module docstring); returns the path of predictions.csv."""
    from mammo.pipelines.glam import build

    source, output = Path(input_folder), Path(output_folder)
    images = source / "images" if (source / "images").is_dir() else source
    seg = Path(segmentation) if segmentation else (source / "segmentation" if (source / "segmentation").is_dir()
                                                   else None)
    exams = available_exams(read_exam_list(exam_list or find_exam_list(source)), images)
    cropped = output / "cropped_images"
    exams = crop_exam_list(exams, images, cropped, num_processes=num_processes)
    write_exam_list(exams, cropped / "cropped_exam_list.pkl")
    exams = add_optimal_centers(exams, cropped, num_processes=num_processes)
    write_exam_list(exams, output / "data.pkl")
    rows = predict_exams(exams, cropped, output, build(model), seg, visualize)
    write_predictions(rows, output / "predictions.csv")
    return output / "predictions.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammo.glam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="crop -> centres -> predict -> visualise, as the authors' run.sh")
    r.add_argument("input_folder", type=Path)
    r.add_argument("output_folder", type=Path)
    r.add_argument("--model", choices=("joint", "sep"), default="joint", help="which trained GLAM (default joint)")
    r.add_argument("--exam-list", type=Path, help="exam list (default: INPUT/exam_list_before_cropping.*)")
    r.add_argument("--segmentation", type=Path, help="ground-truth folder (default: INPUT/segmentation)")
    r.add_argument("--num-processes", type=int, default=1)
    r.add_argument("--no-visualization", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = run(args.input_folder, args.output_folder, args.model, args.exam_list, args.segmentation,
                   args.num_processes, not args.no_visualization)
    except MammoInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
