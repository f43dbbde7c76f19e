"""Where block tasks run: in this process, or on a dask.distributed cluster (``infer.dask_workers``
starts a local one, ``infer.dask_address`` joins a running scheduler, e.g. one started by dask-jobqueue
on SLURM). Either way each call shows a progress bar with an ETA and the first failure is raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from rich.progress import Progress

from .errors import UserError

log = logging.getLogger("vista2d")


class Executor:
    """Runs ``fn(*args)`` for each args tuple in this process."""

    distributed = False

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress

    def run(self, fn: Callable[..., Any], calls: list[tuple], description: str) -> None:
        """Call ``fn(*args)`` for every ``args`` in ``calls`` (a progress bar over them)."""
        task = self.progress.add_task(description, total=len(calls)) if self.progress else None
        try:
            for args in calls:
                fn(*args)
                if task is not None:
                    self.progress.advance(task)
        finally:
            if task is not None:
                self.progress.remove_task(task)


class DaskExecutor(Executor):
    """Runs the calls as tasks of a dask.distributed ``client`` (one task per call)."""

    distributed = True

    def __init__(self, client: Any, progress: Progress | None = None) -> None:
        super().__init__(progress)
        self.client = client

    def run(self, fn: Callable[..., Any], calls: list[tuple], description: str) -> None:
        from distributed import as_completed

        task = self.progress.add_task(description, total=len(calls)) if self.progress else None
        futures = [self.client.submit(fn, *args, pure=False) for args in calls]
        try:
            for future in as_completed(futures):
                future.result()  # raises the task's exception here
                if task is not None:
                    self.progress.advance(task)
        except BaseException:
            self.client.cancel(futures)
            raise
        finally:
            if task is not None:
                self.progress.remove_task(task)


def _set_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


@contextlib.contextmanager
def open_executor(workers: int, address: str | None, progress: Progress | None = None) -> Iterator[Executor]:
    """An in-process executor, or a dask one on a local cluster of ``workers`` processes (the CPU cores
    shared among them) or on the scheduler at ``address``; the cluster is closed on exit."""
    if not workers and not address:
        yield Executor(progress)
        return
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if address:
            try:
                client = stack.enter_context(Client(address, timeout="20s"))
            except OSError as exc:
                raise UserError(f"infer.dask_address: cannot reach the dask scheduler at {address} ({exc})") from None
        else:
            cluster = stack.enter_context(
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
            client.run(_set_threads, max(1, (os.cpu_count() or 1) // workers))
        log.info("dask: %d workers (%s)", len(client.scheduler_info()["workers"]), client.scheduler.address)
        yield DaskExecutor(client, progress)
