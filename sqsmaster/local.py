"""sqstaskmaster's module path ``sqstaskmaster.local``: ``LocalQueue`` and ``LocalMessage``.

So ``from sqstaskmaster.local import LocalMessage, LocalQueue`` keeps working with only the
package name changed. New code imports them from ``sqsmaster`` and ``sqsmaster.testing``.
"""

from .backends import LocalQueue
from .testing import LocalMessage

__all__ = ["LocalMessage", "LocalQueue"]
