"""sqstaskmaster's module path ``sqstaskmaster.message_handler``: ``MessageHandler``.

So ``from sqstaskmaster.message_handler import MessageHandler`` keeps working with only the
package name changed. New code imports it from ``sqsmaster``.
"""

from .supervise import MessageHandler

__all__ = ["MessageHandler"]
