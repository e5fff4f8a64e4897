"""Where shard tasks run: in this process, on loky processes, or on a dask.distributed cluster.

    for result in run_tasks(tasks, jobs=4, backend="loky"):    # results as tasks finish, any order
        bar.advance(result["samples"])

Every backend runs the same function (`stage.write_shard`) on the same picklable tasks. Ctrl-C: workers
start with SIGINT ignored (the terminal sends it to the whole process group; the parent alone decides),
the parent stops submitting, cancels what has not started and waits for the shards being written. A
worker whose parent is gone writes nothing more: each task carries the writer's lease (store/lock.py).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Iterator
from typing import Literal, get_args

from .interrupt import check_interrupt, children_ignore_interrupts, ignore_interrupts
from .stage import ShardTask, write_shard

Backend = Literal["loky", "dask"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def run_tasks(tasks: list[ShardTask], jobs: int = 1, backend: Backend = "loky",
              scheduler: str | None = None) -> Iterator[dict[str, int]]:
    """Run `write_shard` on every task; yields each result dict as its task finishes.

    jobs: worker processes (loky, or the LocalCluster's workers); backend: "loky" or "dask"; scheduler:
    a running dask scheduler's address (None: a LocalCluster of `jobs` workers). ExtractConfig checks
    the backend's name when it is built, before any work."""
    if not tasks:
        return
    if backend == "dask":
        yield from _run_dask(tasks, jobs, scheduler)
    elif backend != "loky":
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    elif jobs == 1:
        for task in tasks:
            yield write_shard(task)
    else:
        yield from _run_loky(tasks, jobs)


def _run_loky(tasks: list[ShardTask], jobs: int) -> Iterator[dict[str, int]]:
    """At most 2 tasks per worker in flight, so that Ctrl-C waits only for the shards being written."""
    from joblib.externals.loky import get_reusable_executor

    with children_ignore_interrupts():  # workers start with SIGINT ignored; the parent decides
        executor = get_reusable_executor(max_workers=jobs, initializer=ignore_interrupts)
    queue, running = list(reversed(tasks)), set()
    try:
        while queue or running:
            while queue and len(running) < 2 * jobs:
                running.add(executor.submit(write_shard, queue.pop()))
            check_interrupt()
            finished, running = cf.wait(running, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                yield future.result()
    finally:
        for future in running:
            future.cancel()  # those not started; the workers finish the shards they are writing
        cf.wait(running)


def _run_dask(tasks: list[ShardTask], jobs: int, scheduler: str | None) -> Iterator[dict[str, int]]:
    from distributed import Client, LocalCluster, wait

    with children_ignore_interrupts():
        if scheduler:
            client, cluster = Client(scheduler), None
        else:
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.CRITICAL)
            client = Client(cluster)
    running = set(client.map(write_shard, tasks, pure=False))
    try:
        while running:
            check_interrupt()
            try:
                result = wait(list(running), timeout=0.2, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            running = set(result.not_done)
            for future in result.done:
                yield future.result()
    finally:
        if running:
            client.cancel(list(running))
        client.close()
        if cluster is not None:
            cluster.close()
