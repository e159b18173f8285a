"""Hyperparameter sweeps with Ray Tune over `training.config.TrainConfig` fields (`python -m tune`).

Trials call `training.engine.train`, the function `python -m training.train` runs; see
`tune.sweep` (running/resuming), `tune.space` (search-space YAML), `tune.trainables` (torch,
distributed and Keras trials) and `tune.outputs` (table, best config, export).
"""
