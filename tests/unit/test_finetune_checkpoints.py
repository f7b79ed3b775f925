"""Which checkpoint a fine-tuning run starts from (``train_jobs.checkpoints``)."""

from __future__ import annotations

import pytest

from train_jobs.checkpoints import checkpoint_dir_name, checkpoint_step, pick_checkpoint

RUN = "/root/checkpoints/task-s0"


@pytest.mark.parametrize(
    ("path", "step"),
    [
        (f"{RUN}/checkpoint_0000010", 10),
        (f"{RUN}/checkpoint_0000010/", 10),
        ("s3://bucket/ckpt/task-s0/checkpoint_0001234", 1234),
        ("/elsewhere/my-export", None),
        (None, None),
    ],
)
def test_checkpoint_step_reads_the_name(path, step):
    assert checkpoint_step(path) == step


def test_names_round_trip():
    assert checkpoint_step(f"{RUN}/{checkpoint_dir_name(42)}") == 42


def test_ray_trains_checkpoint_wins_unless_resume_from_is_further_along():
    train, newer, older = (f"{RUN}/{checkpoint_dir_name(s)}" for s in (20, 30, 10))
    assert pick_checkpoint(None, None) is None
    assert pick_checkpoint(train, None) == train
    assert pick_checkpoint(None, older) == older
    # A restarted job whose predecessor was stopped before Ray Train took in step 30.
    assert pick_checkpoint(train, newer) == newer
    # After a worker failure within the job, Train's own newer checkpoint wins.
    assert pick_checkpoint(train, older) == train
    assert pick_checkpoint(train, "/elsewhere/my-export") == train
