"""Run one pipeline over one dataset: predictions.csv, masks/, probabilities/, then metrics and report.

The top of the evaluation: `evaluate` runs the images here, then `eval.scoring` (metrics.json), then
`eval.report_data` (report.html); `rescore` does the last two for saved predictions. Imports go one
way, down: runner -> report_data -> scoring -> dataset, table (data flows the other way).

Output folder:
    run.json              what was run (pipeline, dataset, split, limit); `--resume` checks it
    predictions.csv       one row per image (see `eval.table`), rewritten atomically after each image
    masks/<id>_<class>.png           predicted masks, 0/255, in the input's original geometry
    probabilities/<id>_<class>.png   255 * probability of the detection classes (lesion,
                                     calcification) where the dataset outlines them: FROC input
    metrics.json, report.html        written by `eval.scoring` and `eval.report_data` at the end

An image's files are written before its row, so a row in predictions.csv means its outputs are
complete; a kill loses at most the images in flight, and `resume` skips every image with a row.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from eval.dataset import open_dataset
from eval.report_data import build_report
from eval.scoring import score_run
from eval.table import Row, format_value, read_rows, safe_name, score_cells, write_json, write_rows
from mammo.datasets import DatasetLoader
from mammo.errors import MammoInputError
from mammo.export import map_to_u8, write_png
from mammo.metrics import mask_score
from mammo.pipelines.base import Result, run_with
from mammo.pipelines.registry import PIPELINES, check_name, get_pipeline
from mammo.preprocess.prompt import Box, format_box, jitter_box, mask_boxes

ProgressCallback = Callable[[int, int], None]
#: Classes whose probability maps are kept for lesion-level detection (FROC).
DETECTION_CLASSES = ("lesion", "calcification")
RUN_KEYS = ("pipeline", "dataset", "split", "limit", "prompt", "dicom")


@dataclass(frozen=True)
class PromptSpec:
    """Box prompts taken from the reference masks (`--prompt-from-reference`): the tight box of
    each 8-connected component of the reference `cls` mask with at least `min_pixels` pixels,
    each edge then moved by a uniform amount in [-jitter, +jitter] x the box's width or height
    (seeded per image from `seed` and the image id, so a rerun draws the same boxes)."""

    cls: str = "lesion"
    jitter: float = 0.0
    min_pixels: int = 16
    seed: int = 0

    def boxes(self, image_id: str, truth: np.ndarray) -> list[Box]:
        """The prompts for one image's reference mask bool (H, W); [] when it is empty."""
        rng = np.random.default_rng([self.seed, zlib.crc32(image_id.encode())])
        return [jitter_box(box, self.jitter, rng, truth.shape) if self.jitter else box
                for box in mask_boxes(truth, self.min_pixels)]


class ImageEvaluator:
    """Runs the pipeline on one image of the dataset and writes its files; one per process."""

    def __init__(self, pipeline: str, dataset: str, split: str | None, limit: int | None,
                 out_dir: Path, prompt: PromptSpec | None = None, dicom: bool = False) -> None:
        self.dataset = open_dataset(dataset, split, limit)
        self.pipeline = get_pipeline(pipeline)
        self.out_dir = out_dir
        self.prompt = prompt
        self.dicom = dicom
        self.pool = ThreadPoolExecutor(max_workers=2)  # PNG encoding releases the GIL

    def __call__(self, index: int) -> Row:
        """Evaluate image `index`; any failure becomes a row with its `error` (the run goes on)."""
        ref = self.dataset.refs[index]
        row: Row = {"image_index": ref.image_id, "patient_id": ref.patient_id, "pipeline": self.pipeline.name,
                    "weights_sha256": self.pipeline.weights_sha256,
                    "benign_label": format_value(ref.labels["benign"]),
                    "malignant_label": format_value(ref.labels["malignant"])}
        start = time.perf_counter()
        try:
            row.update(self._evaluate(index))
        except Exception as err:  # noqa: BLE001 - one broken image must not end a batch of hundreds
            row["error"] = f"{type(err).__name__}: {err}".replace("\n", " ")
        row["seconds"] = format_value(time.perf_counter() - start, 3)
        return row

    def _evaluate(self, index: int) -> Row:
        sample = self.dataset[index]
        prompts: list[Box] = []
        if self.prompt is None:
            result = self.pipeline.run(sample.image, sample.meta)
        else:
            result, prompts = self._run_prompted(sample)
        result.check_shapes(sample.image.shape)
        row: Row = {"patient_id": sample.patient_id, "laterality": sample.meta.laterality or "",
                    "view": sample.meta.view or "",
                    "benign_label": format_value(sample.labels["benign"]),
                    "malignant_label": format_value(sample.labels["malignant"]),
                    "benign_pred": format_value(_score(result.scores, "benign")),
                    "malignant_pred": format_value(_score(result.scores, "malignant")),
                    "qc": ";".join(sample.meta.qc)}
        if self.prompt is not None:
            row["prompt_boxes"] = ";".join(format_box(box) for box in prompts)
        for name, truth in sample.masks.items():
            if name in result.masks:
                row.update(score_cells(name, mask_score(result.masks[name], truth)))
        self._write_maps(sample.image_id, result, set(sample.masks))
        if self.dicom and sample.meta.format == "dicom":  # other inputs have no UIDs to reference
            self._write_dicom(sample, result)
        return row

    def _write_dicom(self, sample: Any, result: Result) -> None:
        """dicom/<image>/seg.dcm and sr.dcm (`mammo.export_dicom`), via a staging folder so that a
        kill leaves no half-written file under its final name."""
        from mammo.export import staged_dir
        from mammo.export_dicom import write_dicom_outputs

        stem = safe_name(sample.image_id)
        with staged_dir(self.out_dir / "dicom" / stem) as stage:
            write_dicom_outputs(stage, sample.meta.path, sample.meta, result)

    def _run_prompted(self, sample: Any) -> tuple[Result, list[Box]]:
        """Run with boxes from the reference mask; an image without a reference region gets no
        box, so nothing is outlined (an empty mask: what a reader who drew nothing gets)."""
        assert self.prompt is not None
        truth = sample.masks.get(self.prompt.cls)
        if truth is None:
            raise MammoInputError(f"{sample.image_id}: no reference {self.prompt.cls!r} mask to take boxes from")
        boxes = self.prompt.boxes(sample.image_id, truth)
        if not boxes:
            empty = np.zeros(truth.shape, bool)
            return Result(masks={self.prompt.cls: empty}, pipeline=self.pipeline.name,
                          weights_sha256=self.pipeline.weights_sha256), []
        return run_with(self.pipeline, sample.image, sample.meta, boxes=boxes), boxes

    def _write_maps(self, image_id: str, result: Any, truth_classes: set[str]) -> None:
        stem = safe_name(image_id)
        jobs = [(self.out_dir / "masks" / f"{stem}_{name}.png", mask.view("uint8") * 255)
                for name, mask in result.masks.items()]
        jobs += [(self.out_dir / "probabilities" / f"{stem}_{name}.png", map_to_u8(prob))
                 for name, prob in result.probabilities.items()
                 if name in DETECTION_CLASSES and name in truth_classes]
        for future in [self.pool.submit(write_png, path, picture) for path, picture in jobs]:
            future.result()


def _score(scores: dict[str, float], name: str) -> float | None:
    return float(scores[name]) if name in scores else None


# -- worker processes ------------------------------------------------------------------------------
_WORKER: ImageEvaluator | None = None


def _init_worker(args: tuple[str, str, str | None, int | None, Path, PromptSpec | None, bool], threads: int) -> None:
    """Process start: cap the math libraries' threads (read when torch/TF load), build the pipeline once."""
    global _WORKER
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _WORKER = ImageEvaluator(*args)


def _work(index: int) -> tuple[int, Row]:
    assert _WORKER is not None, "worker not initialised"
    return index, _WORKER(index)


# -- the run ---------------------------------------------------------------------------------------
def check_resume(out_dir: Path, run: dict[str, Any], resume: bool) -> list[Row]:
    """Rows already done in `out_dir` (for `resume`), after checking the earlier run was the same."""
    table = out_dir / "predictions.csv"
    if not table.exists():
        return []
    if not resume:
        raise MammoInputError(f"{out_dir} already holds predictions.csv; pass --resume to continue that run "
                              "or choose another --out")
    earlier_path = out_dir / "run.json"
    earlier = json.loads(earlier_path.read_text()) if earlier_path.is_file() else {}
    changed = [key for key in RUN_KEYS if earlier.get(key) != run[key]]
    if changed:
        raise MammoInputError(f"cannot resume {out_dir}: {', '.join(changed)} differ from the earlier run "
                              f"({ {k: earlier.get(k) for k in changed} } vs { {k: run[k] for k in changed} })")
    return read_rows(table)


def evaluate(pipeline: str, dataset: str, out_dir: str | Path, *, split: str | None = None,
             limit: int | None = None, workers: int = 1, resume: bool = False,
             progress: ProgressCallback | None = None, quiet: bool = False,
             n_resamples: int = 1000, report: bool = True, prompt: PromptSpec | None = None,
             dicom: bool = False) -> dict[str, Any]:
    """Evaluate `pipeline` on `dataset` ("KIND:PATH") into `out_dir`; returns the metrics.json dict.

    Args:
        split: restrict to a committed split ("val") or the rows of a split CSV ("PATH.csv[:val]").
        limit: only the first `limit` images (after the split).
        workers: processes, each with its own copy of the model; 1 runs in this process.
        resume: continue a run in `out_dir`, skipping every image that has a row.
        progress: called as progress(done, total) after every image (resumed rows count as done).
        n_resamples: bootstrap resamples for the confidence intervals.
        report: also write report.html.
        prompt: give a prompted pipeline (box-lesion) boxes taken from the reference masks.
        dicom: also write dicom/<image>/seg.dcm and sr.dcm for every DICOM input (others get none).

    Raises:
        MammoInputError: bad dataset spec or split, unknown pipeline, or a resume that does not match.
    """
    try:
        check_name(pipeline)
    except KeyError as err:
        raise MammoInputError(err.args[0]) from err
    out = Path(out_dir)
    run = {"pipeline": pipeline, "dataset": dataset, "split": split, "limit": limit,
           "prompt": None if prompt is None else asdict(prompt), "dicom": True if dicom else None}
    check_prompt(pipeline, prompt)
    loader = open_dataset(dataset, split, limit)  # fail on a bad dataset before any model loads
    out.mkdir(parents=True, exist_ok=True)
    done_rows = check_resume(out, run, resume)
    write_json(out / "run.json", run)
    for sub in ("masks", "probabilities"):
        (out / sub).mkdir(exist_ok=True)
    rows = _run_images(loader, done_rows, (pipeline, dataset, split, limit, out, prompt, dicom), workers,
                       progress, quiet)
    return rescore(out / "predictions.csv", dataset, split=split, limit=limit, rows=rows,
                   n_resamples=n_resamples, report=report, quiet=quiet)


def check_prompt(pipeline: str, prompt: PromptSpec | None) -> None:
    """MammoInputError when a prompted pipeline gets no prompts, or an automatic one gets some."""
    prompted = PIPELINES[check_name(pipeline)[0]].prompted
    if prompted and prompt is None:
        raise MammoInputError(f"{pipeline} outlines regions inside given boxes: evaluate it with "
                              "--prompt-from-reference (boxes from the reference masks)")
    if prompt is not None and not prompted:
        raise MammoInputError(f"--prompt-from-reference is for prompted pipelines (box-lesion); {pipeline} "
                              "finds its own regions")


def rescore(predictions: str | Path, dataset: str | None, *, split: str | None = None,
            limit: int | None = None, rows: list[Row] | None = None, n_resamples: int = 1000,
            seed: int = 0, report: bool = True, quiet: bool = False) -> dict[str, Any]:
    """metrics.json (see `eval.scoring.score_run`, same arguments) and, with `report`, report.html
    beside `predictions`; returns the metrics dict."""
    scored = score_run(predictions, dataset, split=split, limit=limit, rows=rows, n_resamples=n_resamples,
                       seed=seed, quiet=quiet)
    if report:
        build_report(Path(predictions).parent, scored)
    return scored.metrics


def _run_images(loader: DatasetLoader, done_rows: list[Row], args: tuple, workers: int,
                progress: ProgressCallback | None, quiet: bool) -> list[Row]:
    """Evaluate every image without a row; returns all rows in dataset order."""
    from tqdm import tqdm

    order = {image_id: i for i, image_id in enumerate(loader.ids)}
    by_index = {order[row["image_index"]]: row for row in done_rows if row["image_index"] in order}
    todo = [i for i in range(len(loader)) if i not in by_index]
    table = args[4] / "predictions.csv"
    bar = tqdm(total=len(loader), initial=len(by_index), unit="img", disable=quiet, desc=args[0])

    def record(index: int, row: Row) -> None:
        by_index[index] = row
        write_rows(table, [by_index[i] for i in sorted(by_index)])
        bar.update(1)
        if row.get("error"):
            bar.write(f"{row['image_index']}: {row['error']}")
        if progress is not None:
            progress(len(by_index), len(loader))

    if not todo:
        write_rows(table, [by_index[i] for i in sorted(by_index)])
    elif workers <= 1:
        evaluator = ImageEvaluator(*args)
        for index in todo:
            record(index, evaluator(index))
    else:
        _run_parallel(todo, args, workers, record)
    bar.close()
    return [by_index[i] for i in sorted(by_index)]


def _run_parallel(todo: list[int], args: tuple, workers: int, record: Callable[[int, Row], None]) -> None:
    """Spread `todo` over `workers` processes (spawned: torch must not be forked); at most two images
    per worker in flight, so a kill loses little."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(args, threads)) as pool:
        pending: set[Future] = set()
        queue = list(reversed(todo))
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                pending.add(pool.submit(_work, queue.pop()))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                record(*future.result())
