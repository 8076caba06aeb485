"""The blockwise job on a ``dask.distributed`` cluster: blocks become tasks.

Each task opens its own region of the input store and writes its own region of the output
(the graph carries block coordinates and store references, never pixels); each worker keeps
one loaded model; the normalisation was computed once, on the client, before any task; seams
are joined on the client from the small per-block summaries, then a second round of tasks
writes the final object numbers. Any cluster works: a ``LocalCluster``, a scheduler address,
or a ``dask_jobqueue`` cluster (SLURM, PBS...) handed in as a client.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.core.blockwise import (
    BlockPlan,
    block_logits,
    check_label_capacity,
    check_out_dtype,
    finish_block,
    join_objects,
    output_chunks,
    own_dtype,
    plan_blocks,
    remap_block,
    require_zarr,
    scratch_for,
    spatial_chunks,
)
from napari_unet.core.progress import Cancelled, CancelToken, ProgressCallback

if TYPE_CHECKING:
    from napari_unet.core.blocks import Block
    from napari_unet.core.predict import Predictor, Request

CONNECT_TIMEOUT = "10s"
"""How long to wait for a scheduler before saying it cannot be reached."""

_PREDICTORS: dict[str, Predictor] = {}
_PREDICTORS_LOCK = threading.Lock()


def connect(scheduler: str | None = None, workers: int | None = None) -> Any:
    """Connect to the scheduler at ``scheduler``, or start a local cluster of ``workers``.

    A local cluster runs one process per worker, one block at a time each, with torch using an
    even share of the cores.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ImportError(
            "running on a cluster needs dask.distributed: "
            "pip install 'napari-unet-segment[distributed]'"
        ) from error
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as error:
            raise ConnectionError(
                f"cannot reach the dask scheduler at {scheduler} within {CONNECT_TIMEOUT}: "
                f"{error or type(error).__name__}"
            ) from error
    count = workers or 2
    threads = max(1, (os.cpu_count() or count) // count)
    cluster = LocalCluster(
        n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    client.run(_set_torch_threads, threads)
    return client


def predict_on_cluster(
    predictor: Predictor,
    request: Request,
    client: Any,
    out: Any,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> Any:
    """Run every block as a task on ``client``'s workers; return ``out`` (or a numpy copy)."""
    _check_shareable(request.view.source, "the image")
    check_out_dtype(out, request, predictor.model.description.architecture.out_channels)
    settings = predictor.settings(request.kind)
    with _output(out, request) as target:
        _check_shareable(target, "out")
        plan = plan_blocks(predictor, request, settings, spatial_chunks(target, request.out_axes))
        blocks = plan.grid.blocks()
        with scratch_for(target, request, plan, shared=True) as scratch:
            model = client.scatter(predictor.model, broadcast=True, hash=False)
            tracker = _Tracker(request.times * len(blocks), progress, cancel)
            for t in range(request.times):
                futures = {
                    block.index: client.submit(
                        _block_task,
                        model,
                        predictor.options,
                        request,
                        plan,
                        t,
                        block,
                        scratch,
                        pure=False,
                    )
                    for block in blocks
                }
                results = tracker.gather(client, futures)
                if request.kind == "instances":
                    _renumber_on_cluster(
                        client, predictor, request, plan, t, blocks, results, scratch, target
                    )
        return target if out is not None else np.asarray(target[...])


def _renumber_on_cluster(
    client: Any,
    predictor: Predictor,
    request: Request,
    plan: BlockPlan,
    t: int,
    blocks: list[Block],
    results: dict[tuple[int, ...], Any],
    scratch: Any,
    target: Any,
) -> None:
    tables, count = join_objects(plan, blocks, results, predictor)
    check_label_capacity(target, count)
    futures = [
        client.submit(
            remap_block, scratch, target, request, t, block, tables[block.index], pure=False
        )
        for block in blocks
    ]
    client.gather(futures)


def _block_task(
    model: Any,
    options: dict[str, Any],
    request: Request,
    plan: BlockPlan,
    t: int,
    block: Block,
    target: Any,
) -> Any:
    """On a worker: predict one block with the worker's own loaded model; return its summary."""
    predictor = _worker_predictor(model, options)
    settings = predictor.settings(request.kind)
    logits, _ = block_logits(predictor, request, settings, t, block, None)
    return finish_block(predictor, request, plan, t, block, logits, target)


def _worker_predictor(model: Any, options: dict[str, Any]) -> Predictor:
    """One Predictor per worker process and model, built on the first task that needs it."""
    from napari_unet.core.predict import Predictor

    key = f"{model.name}:{sorted(options.items())}"
    with _PREDICTORS_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = Predictor(model, **options)
        return _PREDICTORS[key]


def _set_torch_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


class _Tracker:
    """Progress in blocks as tasks finish; cancelling stops waiting and cancels what is left."""

    def __init__(self, total: int, progress: ProgressCallback | None, cancel: CancelToken | None):
        self.done, self.total, self.progress, self.cancel = 0, total, progress, cancel
        if progress is not None:
            progress(0, total)

    def gather(self, client: Any, futures: dict[tuple[int, ...], Any]) -> dict[Any, Any]:
        from distributed import as_completed

        keys = {future.key: index for index, future in futures.items()}
        results = {}
        waiting = as_completed(list(futures.values()), with_results=True)
        try:
            for future, result in waiting:
                results[keys[future.key]] = result
                self.done += 1
                if self.progress is not None:
                    self.progress(self.done, self.total)
                if self.cancel is not None and self.cancel.cancelled:
                    raise Cancelled("cancelled by the user")
        except BaseException:
            client.cancel(list(futures.values()))
            raise
        return results


@contextlib.contextmanager
def _output(out: Any, request: Request) -> Iterator[Any]:
    """``out`` itself, or a temporary zarr array the workers write into (read back at the end)."""
    if out is not None:
        yield out
        return
    zarr = require_zarr()
    with tempfile.TemporaryDirectory(prefix="napari-unet-out-") as folder:
        yield zarr.create_array(
            store=folder,
            shape=request.out_shape,
            chunks=output_chunks(request, None),
            dtype=own_dtype(request.kind),
            fill_value=0,
        )


def _check_shareable(array: Any, what: str) -> None:
    """Workers open arrays themselves: only stores they can reach (zarr) may go to them."""
    module = type(array).__module__
    if not module.startswith("zarr"):
        raise ValueError(
            f"{what} is a {type(array).__name__}; on a cluster, workers read and write "
            "stores themselves: pass zarr arrays (e.g. napari_unet.read_image('x.ome.zarr'))"
        )
