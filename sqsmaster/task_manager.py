"""sqstaskmaster's module path ``sqstaskmaster.task_manager``: ``TaskManager``.

So ``from sqstaskmaster.task_manager import TaskManager`` keeps working with only the
package name changed. New code imports it from ``sqsmaster``.
"""

from .manager import TaskManager

__all__ = ["TaskManager"]
