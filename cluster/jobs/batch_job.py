"""The batch-prediction job: ``python -m cluster.jobs.batch_job --task-id ID``, run as a Ray Job.

It reads its task from the registry, streams the input through a Ray Data pipeline
(``read_text`` in windows -> ``map_batches(serve_apps.batch.BatchPredictor)`` on
actors with the deployment's resources, a window per call, order preserved) and writes the
output lines from this driver in the input's order, a block at a time. It reports progress
to the registry at most once a second, and stops when the registry answers that the task
has ended (canceled). The task ends done when the output is in place, or failed with the
job's error.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from cluster.jobs import batch_io
from cluster.schemas import BatchPredictCreate, BatchProgress, Resources

logger = logging.getLogger("modelyard.batch")

REPORT_EVERY_S = 1.0
# The input is read as windows of about SORT_ROWS rows, their number a multiple of the model
# copies (Ray Data cuts each ~8 MiB block the file is read in into equal parts), and a copy
# takes the next window only when it is free: the copies get the same share and finish
# together (with the read's own blocks, 7 of ~5,700 rows at 40,000 rows, one of two copies
# computed a whole block alone at the end). A copy sorts its window by line length, so a
# model call's rows are of a similar size: the bench's texts of 4 to 40 words are padded
# ~4.4% at 512-row windows, ~1% at 4096.
SORT_ROWS = 4096
# Output blocks of about this size (an embedding row is ~8 KB of JSON: ~1000 rows): a copy's
# window comes back as several blocks, written and counted one by one. Output still arrives a
# window at a time (on CPU, a single-thread MiniLM copy takes ~25 s per 4096 rows).
OUTPUT_BLOCK_BYTES = 8 << 20
# The steady rate is fitted to the output between these fractions of the rows, over at least
# MIN_FIT_POINTS outputs that span MIN_FIT_S seconds (see Reporter.steady_rate).
STEADY_FROM, STEADY_TO = 0.1, 0.9
MIN_FIT_POINTS, MIN_FIT_S = 3, 1.0


class Canceled(Exception):
    """The task ended while the job ran (a cancel): stop and leave no output."""


class Reporter:
    """Counts rows written and sends ``BatchProgress`` to the registry every ``every_s``.

    ``send(progress) -> bool`` is the registry call; ``False`` means the task has ended.
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], bool],
        total: int | None,
        every_s: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send, self._every_s, self._clock = send, every_s, clock
        self.total, self.done, self.errors = total, 0, 0
        self._start = self._last = clock()
        self._points: list[tuple[float, int]] = []  # (when, rows done) at each output

    def add(self, rows: int, errors: int = 0) -> None:
        now = self._clock()
        self.done += rows
        self.errors += errors
        self._points.append((now, self.done))
        if now - self._last >= self._every_s:
            self.report()

    def steady_rate(self) -> float | None:
        """Rows/s: the slope of rows done over time, fitted to the outputs from 10% to 90%
        of the rows (to those so far while the job runs; all of them in a small job).

        Start-up is left out, and the fit is steady where the output is not: it comes in
        order, so with several model copies a copy's finished rows wait for the ones before
        them and then come out in a burst."""
        window = [p for p in self._points if self._in_window(p[1])]
        for points in (window, self._points):
            if len(points) >= MIN_FIT_POINTS and points[-1][0] - points[0][0] >= MIN_FIT_S:
                return round(slope(points), 1)
        return None

    def _in_window(self, rows: int) -> bool:
        return bool(self.total) and STEADY_FROM <= rows / self.total <= STEADY_TO

    def progress(self) -> BatchProgress:
        now = self._clock()
        rate = self.steady_rate()
        total = self.total
        percent = 100.0 * self.done / total if total else (100.0 if total == 0 else 0.0)
        return BatchProgress(
            rows_done=self.done,
            rows_total=total,
            percent=round(min(percent, 100.0), 1),
            errors=self.errors,
            elapsed_s=round(now - self._start, 3),
            first_output_s=round(self._points[0][0] - self._start, 3) if self._points else None,
            rows_per_s=rate,
        )

    def report(self) -> None:
        self._last = self._clock()
        if not self._send(self.progress().model_dump()):
            raise Canceled()


def slope(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of ``y`` over ``x``."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def actor_options(resources: dict[str, Any]) -> dict[str, Any]:
    """``map_batches`` resources of one model copy: the deployment's replica resources."""
    return Resources.model_validate(resources).as_ray_options()


def windows(rows: int, copies: int) -> int:
    """Input windows to read: a multiple of ``copies``, each of at most about ``SORT_ROWS``."""
    return copies * max(1, math.ceil(rows / (copies * SORT_ROWS)))


def build_dataset(
    req: BatchPredictCreate, spec: dict[str, Any], resources: dict[str, Any], rows: int
):
    """The pipeline: ``rows`` input lines in ``windows`` blocks -> ``BatchPredictor`` actors,
    a whole window per call -> ``line``/``ok`` blocks."""
    import ray
    from ray.data import ActorPoolStrategy
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from serve_apps.batch import BatchPredictor

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.target_max_block_size = OUTPUT_BLOCK_BYTES
    read_args: dict[str, Any] = {}
    if batch_io.is_local(req.input_uri):
        # A local file lives on this (the head) node: read it here.
        node = ray.get_runtime_context().get_node_id()
        read_args["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    fs, path = batch_io.filesystem(req.input_uri)
    # num_cpus=0: reading is light, and must not wait behind the model actors for a CPU.
    ds = ray.data.read_text(
        path,
        filesystem=fs,
        num_cpus=0,
        ray_remote_args=read_args,
        override_num_blocks=windows(rows, req.concurrency),
    )
    return ds.map_batches(
        BatchPredictor,
        fn_constructor_args=(spec, req.batch_size),
        batch_size=None,  # a block (window) per call, never merged with the next
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=req.concurrency, max_tasks_in_flight_per_actor=1),
        **actor_options(resources),
    )


def write_output(blocks: Any, out: Any, reporter: Reporter) -> None:
    """Output blocks (tables of ``line``, ``ok``) to ``out`` in order, newline-terminated."""
    for block in blocks:
        lines = block.column("line").to_pylist()
        if not lines:
            continue
        out.write(b"\n".join(lines) + b"\n")
        ok = sum(1 for v in block.column("ok").to_pylist() if v)
        reporter.add(len(lines), errors=len(lines) - ok)


def run(registry: Any, task_id: str) -> BatchProgress:
    import ray

    task = ray.get(registry.get_task.remote(task_id, "batch_prediction"))
    req = BatchPredictCreate.model_validate(task.detail["request"])

    def send(progress: dict[str, Any]) -> bool:
        return ray.get(registry.report_batch_progress.remote(task_id, progress))

    reporter = Reporter(send, total=None)
    reporter.report()  # processing now, or Canceled before any work
    reporter.total = batch_io.count_rows(req.input_uri)
    logger.info("%s: %d rows in %s", task_id, reporter.total, req.input_uri)
    ds = build_dataset(req, task.detail["spec"], task.detail["resources"], reporter.total)
    with batch_io.open_output(req.output_uri) as out:
        blocks = ds.iter_batches(batch_size=None, batch_format="pyarrow")
        write_output(blocks, out, reporter)
        reporter.total = reporter.done  # the rows read are the truth
        reporter.report()  # a cancel that came in at the very end still wins
    final = reporter.progress()
    ray.get(registry.finish_batch.remote(task_id, final.model_dump()))
    return final


def main(argv: list[str] | None = None) -> int:
    import ray

    from cluster.registry.actor import registry_handle

    parser = argparse.ArgumentParser(description="Run one batch-prediction task.")
    parser.add_argument("--task-id", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    ray.init(log_to_driver=False)
    registry = registry_handle()
    try:
        final = run(registry, args.task_id)
    except Canceled:
        logger.info("task %s was canceled; stopped", args.task_id)
        return 0
    except Exception as exc:
        logger.exception("batch prediction %s failed", args.task_id)
        error = f"{type(exc).__name__}: {exc}"[-4000:]
        ray.get(registry.update_task.remote(args.task_id, status="failed", error=error))
        return 1
    logger.info("task %s done: %s", args.task_id, final.model_dump())
    return 0


if __name__ == "__main__":
    sys.exit(main())
