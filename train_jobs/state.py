"""Run state that outlives a worker: checkpoints (model, optimizer, step, metrics_before)
and the exported model."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from torch import nn

from train_jobs.steps import unwrap

STATE_FILE = "train_state.pt"


@dataclass
class LoopState:
    step: int = 0
    metrics_before: dict[str, float] | None = None
    losses: deque[float] = field(default_factory=lambda: deque(maxlen=10))

    @property
    def recent_loss(self) -> float | None:
        """Mean loss of the last (up to) 10 steps of this attempt."""
        return sum(self.losses) / len(self.losses) if self.losses else None


def save_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: LoopState
) -> None:
    torch.save(
        {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": state.step,
            "metrics_before": state.metrics_before,
        },
        Path(directory) / STATE_FILE,
    )


def load_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> LoopState:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{directory} is not a fine-tuning checkpoint: it has no {STATE_FILE}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    unwrap(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return LoopState(step=int(saved["step"]), metrics_before=saved.get("metrics_before"))


def export_model(model: nn.Module, output_dir: str) -> None:
    """Save a loadable sentence-transformers directory; a local one appears all at once."""
    st = unwrap(model)
    parsed = urlparse(output_dir)
    if parsed.scheme not in ("", "file"):
        import pyarrow.fs

        with tempfile.TemporaryDirectory() as tmp:
            st.save(tmp)
            pyarrow.fs.copy_files(tmp, output_dir)
        return
    target = Path(unquote(parsed.path) if parsed.scheme else output_dir).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    st.save(str(staging))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
