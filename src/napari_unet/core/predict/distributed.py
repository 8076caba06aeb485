"""The blockwise job on a ``dask.distributed`` cluster: blocks become tasks.

Each task opens its own region of the input store and writes its own region of the output
(the graph carries block coordinates and store references, never pixels); each worker keeps
one loaded model; the normalisation was computed once, on the client, before any task; seams
are joined on the client from the small per-block summaries, then a second round of tasks
writes the final object numbers. Any cluster works: a ``LocalCluster``, a scheduler address,
or a ``dask_jobqueue`` cluster (SLURM, PBS...) handed in as a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import numbers
import os
import reprlib
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.core.io.results import result_dtype
from napari_unet.core.predict.blockwise import (
    BlockPlan,
    block_logits,
    check_label_capacity,
    check_out_dtype,
    finish_block,
    join_objects,
    output_chunks,
    plan_blocks,
    remap_block,
    require_zarr,
    scratch_for,
    spatial_chunks,
)
from napari_unet.core.progress import CancelToken, ProgressCallback, WorkCounter

if TYPE_CHECKING:
    from napari_unet.core.predict.blocks import Block
    from napari_unet.core.predict.engine import Engine
    from napari_unet.core.predict.options import PredictOptions
    from napari_unet.core.predict.request import Request

CONNECT_TIMEOUT = "10s"
"""How long to wait for a scheduler before saying it cannot be reached."""
WORKERS_OPTION, SCHEDULER_OPTION = "workers/--workers", "scheduler/--scheduler"
"""How messages name the options: as the API and the CLI spell them."""
DEFAULT_WORKERS = 2
"""Local workers when no count is given (fewer on a machine with fewer cores)."""
FILES_PER_WORKER = 16
"""Open files one local worker costs this process (pipes and sockets: 10 measured)."""
FILES_KEPT_FREE = 64
"""Open files left for reading images and writing results beside the workers."""

_PREDICTORS: dict[str, Engine] = {}
_PREDICTORS_LOCK = threading.Lock()


def connect(scheduler: str | None = None, workers: int | None = None) -> Any:
    """Connect to the scheduler at ``scheduler``, or start a local cluster of ``workers``.

    Both are checked before anything starts. A scheduler is asked who it is with dask's own
    protocol, so within :data:`CONNECT_TIMEOUT` any address that is not a dask scheduler (no
    server, a server speaking another protocol, a worker) is refused. A local cluster runs one
    process per worker, one block at a time each, with torch using an even share of the cores.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ImportError(
            "running on a cluster needs dask.distributed: "
            "pip install 'napari-unet-segment[distributed]'"
        ) from error
    if scheduler is not None and workers is not None:
        raise ValueError(
            f"give {WORKERS_OPTION} (a new local cluster) or {SCHEDULER_OPTION} (a running "
            "one), not both"
        )
    address = None if scheduler is None else check_scheduler_address(scheduler)
    count = check_workers(workers) if address is None else 0
    if address is not None:
        return _connect_to_scheduler(Client, address)
    cluster = LocalCluster(
        n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    client.run(_set_torch_threads, max(1, usable_cores() // count))
    return client


def check_workers(workers: int | None) -> int:
    """Local worker processes for ``workers``: at least 1, at most what the machine can run.

    More workers than cores only compete for them, and each costs this process open files:
    a larger count is capped, with a warning that says so.
    """
    cap, reason = _worker_cap()
    if workers is None:
        return min(DEFAULT_WORKERS, cap)
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral):
        raise ValueError(
            f"{WORKERS_OPTION} must be a whole number of processes, not {reprlib.repr(workers)}"
        )
    if workers < 1:
        raise ValueError(f"{WORKERS_OPTION} must be at least 1, not {workers}")
    if workers > cap:
        warnings.warn(
            f"napari-unet: {WORKERS_OPTION} {workers} is more than {reason}; using {cap}",
            RuntimeWarning,
            stacklevel=2,
        )
    return min(int(workers), cap)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else all the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _worker_cap() -> tuple[int, str]:
    """Return the most local workers this process can run, and what limits them (words)."""
    cores = usable_cores()
    limit = _open_files_limit()
    if limit is None:
        return cores, f"the {cores} cores this process may use"
    by_files = (limit - _open_files() - FILES_KEPT_FREE) // FILES_PER_WORKER
    if by_files < 1:
        raise ValueError(
            f"the open-file limit ({limit}, ulimit -n) leaves no room for a dask worker; "
            "raise it to run on a local cluster"
        )
    if by_files < cores:
        return by_files, f"the open-file limit allows (ulimit -n {limit}: {by_files} workers)"
    return cores, f"the {cores} cores this process may use"


def _open_files_limit() -> int | None:
    """Return the soft limit on open files; ``None`` where there is none (or no way to ask)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _open_files() -> int:
    """Files this process has open now (0 where the system does not say)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def check_scheduler_address(address: Any) -> str:
    """``address`` if it reads as a dask scheduler address (``tcp://host:8786``, ``host:8786``).

    Only its form is checked here, at once; :func:`connect` asks the server itself.
    """
    text = address.strip() if isinstance(address, str) else ""
    hint = "e.g. tcp://host:8786"
    if not text:
        raise ValueError(
            f"{SCHEDULER_OPTION} must be a dask scheduler address ({hint}), "
            f"not {reprlib.repr(address)}"
        )
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    scheme, location = parse_address(text)
    if scheme not in backends:
        raise ValueError(
            f"{SCHEDULER_OPTION} {text!r} is not a dask scheduler address: {scheme}:// is not "
            f"one of {', '.join(sorted(backends))} ({hint})"
        )
    if scheme == "inproc":
        return text
    try:
        host, port = parse_host_port(location)
    except ValueError:
        host, port = "", None
    if not host or port is None or not 0 < port < 2**16:
        raise ValueError(
            f"{SCHEDULER_OPTION} {text!r} is not a dask scheduler address: it needs a host and "
            f"a port from 1 to 65535 ({hint})"
        )
    return text


def _connect_to_scheduler(client_type: Any, address: str) -> Any:
    """Return a client of the scheduler at ``address``, or say in one line why not, in time."""
    from dask.utils import parse_timedelta

    seconds = parse_timedelta(CONNECT_TIMEOUT)
    deadline = time.monotonic() + seconds
    reply = _identify(address, seconds)
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        kind = reply.get("type") if isinstance(reply, dict) else None
        raise ConnectionError(
            f"{address} answers, but as a dask {kind or 'peer'}, not a scheduler; give the "
            f"scheduler's address to {SCHEDULER_OPTION}"
        )
    try:
        return client_type(address, timeout=max(1.0, deadline - time.monotonic()))
    except (OSError, TimeoutError, ValueError) as error:
        raise ConnectionError(
            f"cannot reach the dask scheduler at {address} within {CONNECT_TIMEOUT}: "
            f"{error or type(error).__name__}"
        ) from error


def _identify(address: str, seconds: float) -> Any:
    """Ask the server at ``address`` what it is, in dask's protocol, within ``seconds``.

    Runs on a thread of its own, so it works whether or not the caller has an event loop.
    The answer comes within ``seconds`` (plus one for the thread) whatever the server does.
    """

    async def ask() -> Any:
        from distributed.comm import connect as open_comm
        from distributed.security import Security

        comm = await open_comm(address, timeout=seconds, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    thread = ThreadPoolExecutor(max_workers=1)
    answer = thread.submit(asyncio.run, asyncio.wait_for(ask(), seconds))
    thread.shutdown(wait=False)  # a name lookup that hangs must not hold the caller
    try:
        return answer.result(timeout=seconds + 1)
    except (asyncio.TimeoutError, FutureTimeoutError, TimeoutError) as error:
        reason = "no dask scheduler answered (nothing listens, or it speaks no dask)"
        raise ConnectionError(_unreachable(address, reason)) from error
    except OSError as error:  # refused, unreachable, closed mid-handshake
        raise ConnectionError(_unreachable(address, str(error) or "closed")) from error
    except Exception as error:  # garbage read as a dask message
        raise ConnectionError(
            f"{address} answers, but not as a dask scheduler ({type(error).__name__}); "
            f"give the scheduler's address to {SCHEDULER_OPTION} (usually port 8786; the "
            "dashboard's 8787 is not it)"
        ) from error


def _unreachable(address: str, reason: str) -> str:
    return f"cannot reach the dask scheduler at {address} within {CONNECT_TIMEOUT}: {reason}"


def predict_on_cluster(
    engine: Engine,
    request: Request,
    client: Any,
    out: Any,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> Any:
    """Run every block as a task on ``client``'s workers; return ``out`` (or a numpy copy)."""
    _check_shareable(request.view.source, "the image")
    check_out_dtype(out, request, engine.model.description.architecture.out_channels)
    settings = engine.settings(request.kind)
    with _output(out, request) as target:
        _check_shareable(target, "out")
        plan = plan_blocks(engine, request, settings, spatial_chunks(target, request.out_axes))
        blocks = plan.grid.blocks()
        with scratch_for(target, request, plan, shared=True) as scratch:
            model = client.scatter(engine.model, broadcast=True, hash=False)
            tracker = _Tracker(request.times * len(blocks), progress, cancel)
            for t in range(request.times):
                futures = {
                    block.index: client.submit(
                        _block_task,
                        type(engine),
                        model,
                        engine.options,
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
                        client, engine, request, plan, t, blocks, results, scratch, target
                    )
        return target if out is not None else np.asarray(target[...])


def _renumber_on_cluster(
    client: Any,
    engine: Engine,
    request: Request,
    plan: BlockPlan,
    t: int,
    blocks: list[Block],
    results: dict[tuple[int, ...], Any],
    scratch: Any,
    target: Any,
) -> None:
    tables, count = join_objects(plan, blocks, results, engine)
    check_label_capacity(target, count)
    futures = [
        client.submit(
            remap_block, scratch, target, request, t, block, tables[block.index], pure=False
        )
        for block in blocks
    ]
    client.gather(futures)


def _block_task(
    build: Callable[..., Engine],
    model: Any,
    options: PredictOptions,
    request: Request,
    plan: BlockPlan,
    t: int,
    block: Block,
    target: Any,
) -> Any:
    """On a worker: predict one block with the worker's own loaded model; return its summary."""
    engine = _worker_predictor(build, model, options)
    settings = engine.settings(request.kind)
    logits, _ = block_logits(engine, request, settings, t, block, None)
    return finish_block(engine, request, plan, t, block, logits, target)


def _worker_predictor(build: Callable[..., Engine], model: Any, options: PredictOptions) -> Engine:
    """One engine per worker process and model, built on the first task that needs it.

    ``build`` is the client's engine class (the Predictor), handed in so that this
    strategy never imports the engine above it (no import circle).
    """
    key = f"{model.name}:{sorted(options.as_dict().items())}"
    with _PREDICTORS_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = build(model, options=options)
        return _PREDICTORS[key]


def _set_torch_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


class _Tracker(WorkCounter):
    """Progress in blocks as tasks finish; cancelling stops waiting and cancels what is left."""

    def gather(self, client: Any, futures: dict[tuple[int, ...], Any]) -> dict[Any, Any]:
        from distributed import as_completed

        keys = {future.key: index for index, future in futures.items()}
        results = {}
        waiting = as_completed(list(futures.values()), with_results=True)
        try:
            for future, result in waiting:
                results[keys[future.key]] = result
                self.add(1)
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
            dtype=result_dtype(request.kind),
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
