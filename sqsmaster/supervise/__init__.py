"""Supervision, the stage between the consumer and your task: deadline, heartbeat, isolation, acknowledgement.

One role per module: :mod:`~sqsmaster.supervise.policy` (pure decisions from a clock),
:mod:`~sqsmaster.supervise.deadline` (SIGALRM, scoped to ``run()``),
:mod:`~sqsmaster.supervise.heartbeat` (the thread that keeps the lease),
:mod:`~sqsmaster.supervise.supervisor` (signal isolation and the registry of modes),
:mod:`~sqsmaster.supervise.child` and :mod:`~sqsmaster.supervise.process` (process isolation),
:mod:`~sqsmaster.supervise.handler` (``MessageHandler``).
"""

from .handler import DEFAULT_HARD_TIMEOUT, MessageHandler
from .policy import ON_LEASE_LOST, HeartbeatPolicy
from .supervisor import isolation_modes, register_isolation

__all__ = ["DEFAULT_HARD_TIMEOUT", "HeartbeatPolicy", "MessageHandler", "ON_LEASE_LOST", "isolation_modes",
           "register_isolation"]
