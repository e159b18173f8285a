"""Batch evaluation: run a pipeline over a dataset, write predictions.csv, masks, metrics.json, report.html.

    python -m eval --pipeline cascade --dataset cdd-cesm:../shared/data/cdd_cesm --split val --out out/
    python -m eval score --predictions out/predictions.csv --dataset cdd-cesm:../shared/data/cdd_cesm
    python -m eval serve --datasets-root /data --port 7861

Modules, each importing only those after it (tests/test_eval_imports.py checks for cycles): `cli`,
`server`, `jobs` (a job queue behind Gradio API endpoints), `job_process` (one job in a child
process, stopped at its time limit), `zips` (checked extraction of uploads), `limits` (the
service's limits, argument checks, path redaction), `runner` (the top of an evaluation:
pipeline x dataset -> files, resumable, then scoring and the report; `rescore` for saved files),
`report_data` (what report.html shows), `report` (its layout), `scoring` (files -> metrics.json),
`dataset` ("KIND:PATH" -> loader) and `table` (predictions.csv, atomic writes).
"""
