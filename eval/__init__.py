"""Batch evaluation: run a pipeline over a dataset, write predictions.csv, masks, metrics.json, report.html.

    python -m eval --pipeline cascade --dataset cdd-cesm:../shared/data/cdd_cesm --split val --out out/
    python -m eval score --predictions out/predictions.csv --dataset cdd-cesm:../shared/data/cdd_cesm
    python -m eval serve --datasets-root /data --port 7861

Modules: `runner` (evaluate: pipeline x dataset -> files, resumable), `scoring` (files -> metrics),
`report` (metrics -> report.html), `server` (a job queue behind Gradio API endpoints), `cli`.
"""
