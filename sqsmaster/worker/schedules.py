"""When periodic tasks are due: ``every(minutes=10)`` and ``cron("0 3 * * *")``, grids anchored in time.

A schedule is a grid of *slots* (seconds since the epoch). ``every`` puts them at
``start + k * period`` with ``start`` the Unix epoch unless given, so every worker, and
every restart of one, computes the same slots from the clock alone: nothing about when
a worker started shifts them. ``cron`` takes them from a cron expression, in UTC unless
a time zone is given (``croniter``: ``pip install 'sqsmaster[cron]'``).

What to fire after a pause (the fleet was down, a slot's claim was left unsent) is the
schedule's catch-up policy: ``latest`` (the default: missed slots collapse into the
newest one) or ``all`` (each missed slot, oldest first); ``max_lateness`` drops slots
more than that many seconds late. :func:`due_slots` is that rule, a pure function of
the clock. Who sends each slot is :mod:`sqsmaster.worker.scheduler`.
"""

from __future__ import annotations

import datetime
import math
from itertools import islice
from typing import Any, Iterator

from ..errors import ConfigurationError

#: Catch-up policies: after a pause, fire the newest missed slot only, or every missed slot.
CATCH_UP = ("latest", "all")
#: Most slots one scheduler pass sends for one schedule (``all``: the next pass goes on from there).
MAX_CATCH_UP = 100
#: A schedule that never fired sends its newest slot only if it is at most this late (s): a daily 03:00 task
#: deployed at 14:00 waits for tomorrow's 03:00 rather than running at once, 11 hours late.
FIRST_SLOT_WINDOW = 60.0
#: Shorthands croniter takes, as five fields (for the EventBridge export).
CRON_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_UNITS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def slot_iso(slot: float) -> str:
    """A slot as UTC ISO 8601 to the second (``2026-12-02T03:00:00Z``): the claim key and message attribute."""
    return datetime.datetime.fromtimestamp(slot, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Schedule:
    """A grid of slots, and what to do about missed ones. Subclasses give :meth:`previous` and :meth:`following`.

    :param catch_up: ``"latest"`` (missed slots collapse into the newest) or ``"all"``
    :param max_lateness: seconds past its slot after which a slot is not sent at all (None: no bound)
    :param queue: the queue URL to send to (default: the first queue of the worker that sends the slot)
    """

    def __init__(self, catch_up: str = "latest", max_lateness: float | None = None, queue: str | None = None) -> None:
        if catch_up not in CATCH_UP:
            raise ConfigurationError(f"catch_up must be one of {', '.join(CATCH_UP)}, not {catch_up!r}")
        if max_lateness is not None and (isinstance(max_lateness, bool) or not isinstance(max_lateness, (int, float))
                                         or not max_lateness > 0 or not math.isfinite(max_lateness)):
            raise ConfigurationError(f"max_lateness must be a number of seconds > 0, not {max_lateness!r}")
        self.catch_up = catch_up
        self.max_lateness = None if max_lateness is None else float(max_lateness)
        self.queue = queue

    def previous(self, at: float) -> float | None:
        """The latest slot at or before ``at`` (None: the grid starts later)."""
        raise NotImplementedError

    def following(self, at: float) -> float:
        """The first slot strictly after ``at``."""
        raise NotImplementedError

    def slots(self, after: float, until: float) -> Iterator[float]:
        """The slots in ``(after, until]``, oldest first."""
        slot = self.following(after)
        while slot <= until:
            yield slot
            slot = self.following(slot)

    def describe(self) -> str:
        raise NotImplementedError

    def eventbridge(self) -> str:
        """The EventBridge Scheduler ``ScheduleExpression`` firing on the same grid; raises ConfigurationError
        for a grid EventBridge cannot express."""
        raise NotImplementedError

    def eventbridge_timezone(self) -> str:
        return "UTC"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}, catch_up={self.catch_up}>"


class Every(Schedule):
    """Slots every ``period`` seconds (whole seconds, at least 1), from ``start`` (seconds since the epoch)."""

    def __init__(self, period: int, start: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.period = period
        self.start = start

    def previous(self, at: float) -> float | None:
        if at < self.start:
            return None
        return float(self.start + (math.floor(at) - self.start) // self.period * self.period)

    def following(self, at: float) -> float:
        if at < self.start:
            return float(self.start)
        return float(self.start + ((math.floor(at) - self.start) // self.period + 1) * self.period)

    def describe(self) -> str:
        for unit, seconds in _UNITS.items():
            if self.period % seconds == 0:
                count = self.period // seconds
                text = f"every {count} {unit[:-1] if count == 1 else unit}"
                break
        return text + ("" if self.start == 0 else f" from {slot_iso(self.start)}")

    def eventbridge(self) -> str:
        """A ``cron(...)`` when the grid sits on the clock (so it fires at the same instants); else ``rate(...)``,
        which EventBridge counts from the schedule's creation (the caller warns of that)."""
        period, offset = self.period, self.start % self.period
        if period % 60:
            raise ConfigurationError(f"{self.describe()}: EventBridge schedules run on whole minutes (at most "
                                     "once a minute)")
        minute, hour = offset // 60 % 60, offset // 3600 % 24
        if period < 3600 and 3600 % period == 0 and offset % 60 == 0:
            return "cron(* * * * ? *)" if period == 60 else f"cron({minute}/{period // 60} * * * ? *)"
        if period % 3600 == 0 and period < 86400 and 86400 % period == 0 and offset % 3600 == 0:
            return f"cron(0 {hour}/{period // 3600} * * ? *)"
        if period == 86400:
            return f"cron({minute} {hour} * * ? *)"
        if period == 604800:
            weekday = datetime.datetime.fromtimestamp(self.start, datetime.timezone.utc).isoweekday() % 7 + 1
            return f"cron({minute} {hour} ? * {weekday} *)"
        minutes = period // 60
        return f"rate({minutes} minute{'s' if minutes > 1 else ''})"

    def on_the_clock(self) -> bool:
        """True when :meth:`eventbridge` gives a ``cron(...)`` (the same instants), False for a ``rate(...)``."""
        return self.eventbridge().startswith("cron(")


class Cron(Schedule):
    """Slots where a five-field cron expression matches, in UTC or the IANA time zone ``tz``."""

    def __init__(self, expression: str, tz: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        croniter = _croniter()
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise ConfigurationError(f"not a cron expression: {expression!r} (five fields: minute hour "
                                     "day-of-month month day-of-week)")
        fields = CRON_ALIASES.get(expression.strip(), expression).split()
        if len(fields) != 5:
            raise ConfigurationError(f"cron expression {expression!r}: give five fields (minute hour day-of-month "
                                     "month day-of-week); slots are whole minutes")
        self.expression = expression
        self.fields = fields
        self.tz = tz
        self._zone = _zone(tz)

    def _at(self, at: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(at, self._zone)

    def previous(self, at: float) -> float | None:
        # croniter's get_prev is strictly before its start: start a second later, so a slot at ``at`` counts
        # (slots are whole minutes, so nothing lies between ``at`` and ``floor(at) + 1``).
        return float(_croniter()(self.expression, self._at(math.floor(at) + 1)).get_prev(float))

    def following(self, at: float) -> float:
        return float(_croniter()(self.expression, self._at(at)).get_next(float))

    def describe(self) -> str:
        return f"cron {self.expression!r}" + (f" ({self.tz})" if self.tz else " (UTC)")

    def eventbridge(self) -> str:
        minute, hour, day, month, weekday = self.fields
        if weekday == "*":
            weekday = "?"
        elif day == "*":
            day = "?"
        else:
            raise ConfigurationError(f"{self.describe()}: cron runs when the day of the month OR the day of the "
                                     "week matches; EventBridge cannot say that (give one of them as *)")
        return f"cron({minute} {hour} {day} {month} {_eventbridge_weekdays(weekday, self)} *)"

    def eventbridge_timezone(self) -> str:
        return self.tz or "UTC"


def _eventbridge_weekdays(field: str, schedule: Schedule) -> str:
    """cron's day-of-week numbers (0-7, Sunday 0 or 7) as EventBridge's (1-7, Sunday 1); names stay."""
    if field == "?":
        return field
    if "/" in field:
        raise ConfigurationError(f"{schedule.describe()}: a step in the day of the week has no EventBridge form")
    parts = []
    for part in field.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            parts.append(part)  # MON-FRI and the like: the same names
        elif not high:
            parts.append(str(int(low) % 7 + 1))
        elif int(high) == 7:  # ...-Sunday: Sunday is 1 on EventBridge, so the range wraps
            parts.append(f"{int(low) % 7 + 1}-7,1" if int(low) % 7 else "1")
        else:
            parts.append(f"{int(low) + 1}-{int(high) + 1}")
    return ",".join(parts)


def every(seconds: int = 0, minutes: int = 0, hours: int = 0, days: int = 0, weeks: int = 0, *,
          start: datetime.datetime | None = None, catch_up: str = "latest", max_lateness: float | None = None,
          queue: str | None = None) -> Every:
    """A slot every so often, on a grid anchored at the Unix epoch (or ``start``, an aware datetime or UTC):
    ``every(minutes=10)`` fires at :00, :10, :20... whenever the workers started. ``weeks=1`` fires on
    Thursdays (the epoch's weekday) unless ``start`` names another day. Raises ConfigurationError."""
    amounts = {"seconds": seconds, "minutes": minutes, "hours": hours, "days": days, "weeks": weeks}
    for unit, amount in amounts.items():
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ConfigurationError(f"every({unit}=...) takes a whole number >= 0, not {amount!r}")
    period = sum(amount * _UNITS[unit] for unit, amount in amounts.items())
    if period < 1:
        raise ConfigurationError("every() needs a period of at least 1 second, e.g. every(minutes=10)")
    anchor = 0
    if start is not None:
        if not isinstance(start, datetime.datetime):
            raise ConfigurationError(f"start must be a datetime, not {start!r}")
        moment = start if start.tzinfo is not None else start.replace(tzinfo=datetime.timezone.utc)
        anchor = math.floor(moment.timestamp())
    return Every(period, anchor, catch_up=catch_up, max_lateness=max_lateness, queue=queue)


def cron(expression: str, *, tz: str | None = None, catch_up: str = "latest", max_lateness: float | None = None,
         queue: str | None = None) -> Cron:
    """Slots where ``expression`` (five fields: ``"0 3 * * *"`` is 03:00 every day) matches, in UTC or
    ``tz`` (an IANA name such as ``"Europe/Paris"``). Needs croniter (``pip install 'sqsmaster[cron]'``).
    Raises ConfigurationError."""
    return Cron(expression, tz, catch_up=catch_up, max_lateness=max_lateness, queue=queue)


def due_slots(schedule: Schedule, last: float | None, now: float) -> list[float]:
    """The slots to send at ``now`` when ``last`` is the latest slot already sent (None: never), oldest first.

    ``latest``: the newest due slot, if not sent yet. ``all``: every slot after ``last`` up to now
    (at most :data:`MAX_CATCH_UP`). Either way a slot more than ``max_lateness`` seconds old is left
    out. A schedule that never fired starts with its newest slot if that is at most
    :data:`FIRST_SLOT_WINDOW` old, else with the next one.
    """
    newest = schedule.previous(now)
    if newest is None or (last is not None and last >= newest):
        return []
    if last is None:
        return [newest] if now - newest <= min(FIRST_SLOT_WINDOW, schedule.max_lateness or FIRST_SLOT_WINDOW) else []
    if schedule.catch_up == "latest":
        slots = [newest]
    else:
        after = last if schedule.max_lateness is None else max(last, now - schedule.max_lateness - 1)
        slots = list(islice(schedule.slots(after, newest), MAX_CATCH_UP))
    bound = schedule.max_lateness
    return [slot for slot in slots if bound is None or now - slot <= bound]


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise ConfigurationError("cron schedules need croniter: pip install 'sqsmaster[cron]'") from None
    return croniter


def _zone(tz: str | None) -> datetime.tzinfo:
    if tz is None:
        return datetime.timezone.utc
    try:
        import zoneinfo

        return zoneinfo.ZoneInfo(tz)
    except (ImportError, ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ConfigurationError(f"unknown time zone {tz!r} (give an IANA name such as 'Europe/Paris')") from exc
