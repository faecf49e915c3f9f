"""The public API: what users write and what they catch, at the top; the rest in its module."""

from __future__ import annotations

import inspect
import warnings

import pytest

import sqsmaster
from sqsmaster import errors


def test_every_exported_name_exists_and_nothing_is_exported_twice():
    assert len(sqsmaster.__all__) == len(set(sqsmaster.__all__))
    for name in sqsmaster.__all__:
        assert getattr(sqsmaster, name) is not None, name


def test_every_error_of_the_error_tree_is_exported_so_users_can_catch_it():
    # Given every exception class errors.py defines
    defined = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__}
    # Then each one is a top-level name
    assert defined <= set(sqsmaster.__all__)


def test_worker_shutdown_is_in_the_error_tree_and_no_exception_handler_can_eat_it():
    from sqsmaster.worker.signals import WorkerShutdown

    assert WorkerShutdown is errors.WorkerShutdown is sqsmaster.WorkerShutdown
    assert issubclass(WorkerShutdown, BaseException) and not issubclass(WorkerShutdown, Exception)
    # Not a time limit: MessageHandler releases the message for it (like Ctrl-C) instead of counting a failure
    assert not issubclass(WorkerShutdown, errors.HandlerInterrupt)


def test_backend_authors_names_live_in_backends_and_the_old_place_says_where():
    from sqsmaster.backends import Message, QueueBackend, SendEntry  # noqa: F401

    for name in ("Message", "QueueBackend", "SendEntry"):
        assert name not in sqsmaster.__all__
        with pytest.raises(AttributeError, match=f"from sqsmaster.backends import {name}"):
            getattr(sqsmaster, name)


def test_task_still_works_for_one_release_but_warns_that_it_is_now_taskcall():
    # When old code imports Task
    with pytest.warns(DeprecationWarning, match="use sqsmaster.TaskCall"):
        from sqsmaster import Task
    # Then it is TaskCall itself, so isinstance checks and submit(Task(...)) keep working
    assert Task is sqsmaster.TaskCall
    with pytest.warns(DeprecationWarning, match="use sqsmaster.TaskCall"):
        from sqsmaster.producer import Task as FromProducer
    assert FromProducer is sqsmaster.TaskCall
    assert "Task" not in sqsmaster.__all__


def test_importing_the_package_and_its_public_names_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec("from sqsmaster import *", {})
