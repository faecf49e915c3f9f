"""sqstaskmaster's module path ``sqstaskmaster.queue_scale``: ``Provisioner`` and ``ServiceState``.

So ``from sqstaskmaster.queue_scale import Provisioner`` keeps working with only the package
name changed. They live in :mod:`sqsmaster.ops.scaling`, with ``sqsmaster scale``'s code.
"""

from .ops.scaling import Provisioner, ServiceState

__all__ = ["Provisioner", "ServiceState"]
