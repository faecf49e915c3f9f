"""Helpers of ``TaskManager.submit_many``: the progress bar and the ``parallel=N`` processes."""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Sequence

from .backends import is_process_local
from .errors import ConfigurationError, SubmitFailed

PROGRESS_HINT = "progress=True needs tqdm: pip install 'sqsmaster[progress]'"


def progress_bar(total: int | None, description: str = "submitted") -> Any:
    """A tqdm bar counting messages (tqdm imported here: it is an optional extra)."""
    try:
        from tqdm import tqdm
    except ImportError as exc:
        raise ConfigurationError(PROGRESS_HINT) from exc
    return tqdm(total=total, unit="msg", desc=description, file=sys.stderr, smoothing=0.1)


def total_of(tasks: Any, total: int | None) -> int | None:
    """``total`` if given, else ``len(tasks)`` when it has one."""
    if total is not None:
        return total
    try:
        return len(tasks)
    except TypeError:
        return None


def slices(tasks: Any, parts: int) -> Iterator[tuple[int, Any]]:
    """``(start, slice)`` for ``parts`` contiguous slices of a sliceable ``tasks`` (``len()`` and ``[a:b]``)."""
    try:
        count = len(tasks)
        tasks[0:0]
    except TypeError as exc:
        raise ConfigurationError(f"parallel= needs a sliceable iterable (len() and [a:b]), not "
                                 f"{type(tasks).__name__}") from exc
    step = -(-count // parts)
    for start in range(0, count, step):
        yield start, tasks[start:start + step]


def _submit_slice(make_manager: Callable[..., Any], settings: dict[str, Any], start: int, part: Sequence[Any],
                  max_in_flight: int) -> tuple[int, list, str | None]:
    with make_manager(**settings) as manager:
        try:
            return manager.submit_many(part, max_in_flight=max_in_flight), [], None
        except SubmitFailed as exc:
            failed = [dataclasses.replace(item, index=item.index + start) for item in exc.failed]
            return exc.sent, failed, None if exc.cause is None else str(exc.cause)


def submit_parallel(make_manager: Callable[..., Any], settings: dict[str, Any], tasks: Any, parallel: int, bar: Any,
                    max_in_flight: int) -> int:
    """Submit ``tasks`` split across ``parallel`` processes, each with its own ``make_manager(**settings)``
    (the TaskManager class, passed in so this module need not import the manager that imports it;
    importable by name, as the spawned processes unpickle it) and its own window of at most
    ``max_in_flight`` requests."""
    if is_process_local(str(settings["sqs_url"])):
        raise ConfigurationError("parallel= needs a queue other processes can reach; mem:// lives in this process")
    # spawn, not fork: a forked child would inherit this process's threads and sockets (boto3's pool, a
    # test runner's channel); the slices must therefore be picklable.
    context = multiprocessing.get_context("spawn")
    sent, failed, causes = 0, [], []
    with ProcessPoolExecutor(max_workers=parallel, mp_context=context) as executor:
        futures = [executor.submit(_submit_slice, make_manager, settings, start, part, max_in_flight)
                   for start, part in slices(tasks, parallel)]
        for future in futures:
            part_sent, part_failed, cause = future.result()
            sent += part_sent
            failed.extend(part_failed)
            if cause:
                causes.append(cause)
            if bar is not None:
                bar.update(part_sent)
    if failed or causes:
        raise SubmitFailed(sent, failed, RuntimeError("; ".join(causes)) if causes else None)
    return sent
