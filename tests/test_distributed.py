"""`training.distributed`: a 2-worker Ray Train `TorchTrainer` run (gloo, CPU) against one process.

Same seed, same data, same global batch (4 = 2 workers x 2). The curves cannot be identical:
the shards are drawn by DistributedSampler instead of one RandomSampler, BatchNorm statistics and
the Dice term are per worker batch, so the test allows LOSS_TOLERANCE (relative, per epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_training import _synthetic as synthetic  # the same blobs as the single-process tests

from training.config import TrainConfig

LOSS_TOLERANCE = 0.10  # |loss_ddp - loss_single| / loss_single, every epoch


@pytest.fixture()
def local_ray():
    """A 2-CPU local Ray for this test only."""
    from mammo.models.frameworks import import_smp

    import_smp()  # tensorboard (imported by the engine) loads tensorflow: the torch side goes first
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def _config(tmp_path: Path, name: str) -> TrainConfig:
    return TrainConfig(name=name, task="lesion", arch="unet", encoder="resnet18", input_size=[64, 32], epochs=3,
                       batch_size=4, lr=3e-3, t0=3, t_mult=1, threads=1, seed=0, val_overlays=0,
                       out_dir=str(tmp_path))


def test_two_workers_match_one_process(tmp_path: Path, local_ray) -> None:
    from training.distributed import fit
    from training.engine import train

    data = (synthetic(24), synthetic(6, seed=1))
    single = train(_config(tmp_path, "single"), tmp_path / "single", data=data)
    ddp = fit(_config(tmp_path, "ddp"), tmp_path / "ddp", workers=2, data=data)
    single_loss = np.array([m["loss"] for m in single["history"]])
    ddp_loss = np.array([m["loss"] for m in ddp["history"]])
    print("single", single_loss.round(4).tolist(), "ddp", ddp_loss.round(4).tolist())
    assert ddp_loss.shape == single_loss.shape == (3,)
    assert np.all(np.abs(ddp_loss - single_loss) / single_loss < LOSS_TOLERANCE), (single_loss, ddp_loss)
    assert ddp_loss[-1] < ddp_loss[0], "the distributed run must learn"
    # the same run folder as a single-process run
    expected = {"config.yaml", "best.pt", "last.pt", "metrics.json", "tb"}
    assert expected <= {p.name for p in (tmp_path / "ddp").iterdir()}
    saved = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert saved.keys() == single.keys() and saved["n_train"] == 24 and len(saved["history"]) == 3
    assert set(saved["history"][0]) == set(single["history"][0])


def test_batch_must_split_evenly(tmp_path: Path) -> None:
    from training.distributed import make_trainer

    with pytest.raises(ValueError, match="multiple of --workers 3"):
        make_trainer(_config(tmp_path, "odd"), tmp_path / "odd", workers=3)
    glam = TrainConfig(task="glam", batch_size=4)
    with pytest.raises(ValueError, match="'glam' trains in one process"):
        make_trainer(glam, tmp_path / "glam", workers=2)


def test_tune_trial_of_two_workers(tmp_path: Path, local_ray) -> None:
    """One Tune trial = a 2-worker TorchTrainer driven by a light function (Tuner(trainer) is refused)."""
    from tune.sweep import SweepOptions, run_sweep

    space = tmp_path / "space.yaml"
    space.write_text("lr: {choice: [0.003]}\nepochs: 2\n")
    opts = SweepOptions(config="training/configs/cascade_lesion.yaml", space=str(space), num_samples=1,
                        scheduler="none", workers=2, storage=str(tmp_path / "sweeps"), seed=0,
                        overrides=["arch=unet", "encoder=resnet18", "encoder_weights=", "input_size=[64,32]",
                                   "batch_size=4",
                                   "val_overlays=0", "t0=2", "t_mult=1", "elastic=False"])
    results, folder = run_sweep(opts, data=(synthetic(16), synthetic(6, seed=1)))
    assert not results.errors and len(results) == 1
    result = results[0]
    assert result.metrics["training_iteration"] == 2 and "score" in result.metrics
    assert (folder / "best" / "best.pt").is_file() and (folder / "best.yaml").is_file()
