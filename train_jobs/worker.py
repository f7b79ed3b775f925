"""The function every Ray Train worker runs (``train_loop_per_worker``).

Life of a worker: load the base model, restore the newest checkpoint (Ray Train's, after a
worker failure or from the run's snapshot, or ``params.resume_from`` when that one is further
along: ``train_jobs.checkpoints``), evaluate once (rank 0, unless the checkpoint
already holds ``metrics_before``), train to ``total_steps`` under DDP with checkpoints along
the way, then rank 0 evaluates again, exports the model and returns the run's numbers (they
become ``Result.return_value``).
"""

from __future__ import annotations

import tempfile
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn

from train_jobs.checkpoints import checkpoint_dir_name, pick_checkpoint
from train_jobs.config import FinetuneParams
from train_jobs.metrics import evaluate
from train_jobs.progress import ProgressSink
from train_jobs.state import LoopState, export_model, load_state, save_state
from train_jobs.steps import StepPlan, epoch_batches, epochs_done, train_step


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """``config`` is built by ``train_jobs.finetune.train_loop_config``."""
    return Worker(config).run()


class Worker:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.params = FinetuneParams.model_validate(config["params"])
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.train_pairs = config["train_pairs"]
        self.eval_pairs = config["eval_pairs"]
        p = self.params
        self.plan = StepPlan.build(
            len(self.train_pairs), self.world, p.batch_size, p.epochs, p.max_steps
        )
        self.sink = None
        if self.rank == 0:
            self.sink = ProgressSink.connect(
                config["task_id"], config["progress_buffer"], config["progress_actor"]
            )

    def emit(self, event: str, **fields: Any) -> None:
        if self.sink is not None:
            self.sink.emit(event, **fields)

    def run(self) -> dict[str, Any] | None:
        from sentence_transformers import SentenceTransformer

        torch.manual_seed(self.params.seed)
        model = SentenceTransformer(self.config["base_model_path"], device=str(self.device))
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.params.learning_rate)
        state = self.restore(model, optimizer)
        start_step = state.step
        self.emit(
            "started",
            step=start_step,
            total_steps=self.plan.total_steps,
            world_size=self.world,
            train_pairs=len(self.train_pairs),
            eval_pairs=len(self.eval_pairs),
        )
        if self.rank == 0 and state.metrics_before is None:
            state.metrics_before = evaluate(model, self.eval_pairs)
            self.emit("eval_before", step=start_step, metrics_before=state.metrics_before)
        # Models often hold parameters the embedding never uses (BERT's pooler under mean
        # pooling, the other branch of a Router); DDP must not wait for their gradients.
        ddp = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True}
        )
        ddp.train()
        self.train(ddp, optimizer, state)
        if self.rank != 0:
            return None
        return self.finish(model, state, start_step)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> LoopState:
        checkpoint = ray.train.get_checkpoint()
        path = pick_checkpoint(checkpoint and checkpoint.path, self.params.resume_from)
        if path is None:
            return LoopState()
        if checkpoint is None or path != checkpoint.path:
            checkpoint = ray.train.Checkpoint(path)
        with checkpoint.as_directory() as directory:
            return load_state(directory, model, optimizer)

    def train(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
        p, plan = self.params, self.plan
        while state.step < plan.total_steps:
            epoch, offset = divmod(state.step, plan.steps_per_epoch)
            batches = epoch_batches(self.train_pairs, plan, epoch, self.rank, self.world, p.seed)
            for batch in batches[offset:]:
                loss = train_step(model, optimizer, batch, p.similarity_scale, self.device)
                state.losses.append(loss)
                state.step += 1
                self.emit(
                    "step",
                    step=state.step,
                    total_steps=plan.total_steps,
                    epoch=epochs_done(state.step, plan),
                    loss=loss,
                )
                if self.checkpoint_due(state.step):
                    self.checkpoint(model, optimizer, state)
                if state.step >= plan.total_steps:
                    break

    def checkpoint_due(self, step: int) -> bool:
        every = self.params.checkpoint_every_steps or self.plan.steps_per_epoch
        return step == self.plan.total_steps or step % every == 0

    def checkpoint(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: LoopState
    ) -> None:
        """Every worker reports (it is a barrier); only rank 0 hands over the files."""
        metrics = {
            "step": state.step,
            "epoch": epochs_done(state.step, self.plan),
            "loss": state.recent_loss,
        }
        name = checkpoint_dir_name(state.step)
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_state(tmp, model, optimizer, state)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        self.emit("checkpoint", step=state.step, total_steps=self.plan.total_steps)

    def finish(self, model: nn.Module, state: LoopState, start_step: int) -> dict[str, Any]:
        metrics_after = evaluate(model, self.eval_pairs)
        export_model(model, self.config["output_dir"])
        summary = {
            "start_step": start_step,
            "steps": state.step,
            "total_steps": self.plan.total_steps,
            "epochs": epochs_done(state.step, self.plan),
            "loss": state.recent_loss,
            "metrics_before": state.metrics_before or {},
            "metrics_after": metrics_after,
        }
        self.emit("done", step=state.step, output_dir=self.config["output_dir"], **summary)
        if self.sink is not None:
            self.sink.flush()
        return summary
