"""Checkpoint names and which checkpoint a run starts from. Nothing here needs Ray or torch.

Every checkpoint of a run is a directory ``<storage_path>/<run_name>/checkpoint_<step>``.
Ray Train remembers the ones it has taken in (its run snapshot) and gives the newest back
through ``ray.train.get_checkpoint()``. A job stopped right after a checkpoint was written
(a cancel, a whole-cluster restart) can leave that newest one out of the snapshot, so a
restarted job is also told the newest checkpoint it is known to have written
(``params.resume_from``), and starts from whichever of the two is further along.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

_NAME = re.compile(r"^checkpoint_(\d+)$")


def checkpoint_dir_name(step: int) -> str:
    return f"checkpoint_{step:07d}"


def checkpoint_step(path: str | None) -> int | None:
    """The step a checkpoint directory was named for, or None for another name."""
    if not path:
        return None
    m = _NAME.match(PurePosixPath(path.rstrip("/")).name)
    return int(m[1]) if m else None


def pick_checkpoint(train_checkpoint: str | None, resume_from: str | None) -> str | None:
    """Ray Train's checkpoint, unless ``resume_from`` is named for a later step.

    Ray Train's comes first: after a worker failure it is the newest of this job. Without
    one, ``resume_from`` (a user's checkpoint from another run, or the one a restarted
    task wrote last) is where the run starts.
    """
    if train_checkpoint is None or resume_from is None:
        return train_checkpoint or resume_from
    theirs, ours = checkpoint_step(train_checkpoint), checkpoint_step(resume_from)
    if theirs is not None and ours is not None and ours > theirs:
        return resume_from
    return train_checkpoint
