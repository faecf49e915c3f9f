"""What a job log says: a summary table, a CSV export and a Gantt timeline (like ezpq's).

The timeline needs matplotlib, an optional extra (``pip install 'sqsmaster[plot]'``),
imported only when a picture is drawn.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import asdict, fields
from typing import Any, Iterable, Sequence

from ..errors import ConfigurationError
from ..outcomes import Outcome
from ..worker.jobs import OUTCOMES, JobRecord

#: Bar colours by outcome (colour-blind safe, from the Okabe-Ito palette). None is grey: grey is the wait.
OUTCOME_COLOURS: dict[str, str] = {
    Outcome.SUCCEEDED: "#009E73", Outcome.FAILED: "#D55E00", Outcome.TIMED_OUT: "#E69F00", Outcome.KILLED: "#CC79A7",
    Outcome.RELEASED: "#56B4E9", Outcome.DEAD_LETTERED: "#0072B2",
}
_OTHER_COLOUR = "#000000"
#: The wait before an attempt (since submission, or since the attempt before), whatever its outcome.
WAIT_COLOUR = "#BBBBBB"
#: The narrowest bar, as a fraction of the time axis: an attempt of 0 s (a task that failed at once,
#: a message dead-lettered on receipt) must still show.
MIN_BAR_FRACTION = 0.004


def summary_rows(records: Sequence[JobRecord]) -> list[dict[str, Any]]:
    """One row per task (sorted by name) and a final ``(all)`` row: messages, attempts,
    attempts per outcome, mean and max runtime (s), peak memory (MB)."""
    by_task: dict[str, list[JobRecord]] = defaultdict(list)
    for record in records:
        by_task[record.task or "(unknown)"].append(record)
    groups = [(task, by_task[task]) for task in sorted(by_task)] + [("(all)", list(records))]
    rows = []
    for task, group in groups:
        runtimes = [r.runtime for r in group] or [0.0]
        memory = [r.peak_memory for r in group if r.peak_memory]
        row: dict[str, Any] = {"task": task, "messages": len({r.message_id for r in group}), "attempts": len(group)}
        row.update({outcome: sum(r.outcome == outcome for r in group) for outcome in OUTCOMES})
        row.update({"mean s": sum(runtimes) / len(runtimes), "max s": max(runtimes),
                    "peak MB": max(memory) / 2**20 if memory else None})
        rows.append(row)
    return rows


def format_summary(records: Sequence[JobRecord]) -> str:
    """The summary as an aligned text table, with the span of time and the number of workers."""
    if not records:
        return "no job records"
    rows = summary_rows(records)
    columns = ["task", "messages", "attempts"] + [o for o in OUTCOMES if rows[-1][o]] + ["mean s", "max s", "peak MB"]
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths)))]
    for line in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    start = min(r.submitted or r.started for r in records)
    end = max(r.ended for r in records)
    lines.append(f"{len(records)} attempts by {len({r.worker for r in records})} worker(s) over {end - start:.1f}s")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_csv(records: Iterable[JobRecord], path: str | os.PathLike[str]) -> None:
    """Every record as a CSV row, one column per JobRecord field (times in epoch seconds)."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=[f.name for f in fields(JobRecord)])
        writer.writeheader()
        for record in records:
            writer.writerow(asdict(record))


def _wait_starts(records: Sequence[JobRecord]) -> list[float | None]:
    """When each attempt began waiting: its message's submission, or the end of the attempt before."""
    previous_end: dict[str | None, float] = {}
    starts: list[float | None] = [None] * len(records)
    for index in sorted(range(len(records)), key=lambda i: records[i].started):
        record = records[index]
        starts[index] = previous_end.get(record.message_id, record.submitted)
        previous_end[record.message_id] = record.ended
    return starts


def draw_timeline(records: Sequence[JobRecord], path: str | os.PathLike[str], title: str | None = None) -> None:
    """Draw a Gantt chart to ``path`` (PNG, SVG or PDF, by extension): a bar per attempt from start
    to end coloured by outcome (at least :data:`MIN_BAR_FRACTION` of the axis wide, so an attempt of 0 s
    shows), the wait before it grey, one row group per worker (host:pid).

    Raises ConfigurationError (with the install hint) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise ConfigurationError("the timeline needs matplotlib: pip install 'sqsmaster[plot]'") from None
    if not records:
        raise ConfigurationError("the job log has no records to draw")
    waits = _wait_starts(records)
    origin = min([r.started for r in records] + [w for w in waits if w is not None])
    workers = sorted({r.worker for r in records})
    rows = [(w, i) for w in workers for i in sorted((i for i, r in enumerate(records) if r.worker == w),
                                                    key=lambda i: records[i].started)]
    height = min(2 + 0.28 * len(rows), 40)
    span = max(max(r.ended for r in records) - origin, 1e-3)
    figure, axes = plt.subplots(figsize=(11, height))
    for y, (_, index) in enumerate(rows):
        record, wait = records[index], waits[index]
        colour = OUTCOME_COLOURS.get(record.outcome, _OTHER_COLOUR)
        if wait is not None and wait < record.started:
            axes.barh(y, record.started - wait, left=wait - origin, height=0.7, color=WAIT_COLOUR)
        axes.barh(y, max(record.ended - record.started, span * MIN_BAR_FRACTION), left=record.started - origin,
                  height=0.7, color=colour)
        if len(rows) <= 60:
            axes.text(record.ended - origin, y, f" {record.task} #{record.attempt}", va="center", fontsize=7)
    _label_workers(axes, rows, workers)
    axes.set_xlabel("seconds since the first submission")
    axes.invert_yaxis()
    axes.grid(axis="x", alpha=0.3)
    present = [o for o in OUTCOME_COLOURS if any(r.outcome == o for r in records)]
    handles = [Patch(color=OUTCOME_COLOURS[o], label=o) for o in present]
    handles.append(Patch(color=WAIT_COLOUR, label="waiting"))
    # Outside the plot, so it never hides a bar; room on the right for the last bar's label.
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes.set_xlim(0, span * 1.1)
    axes.set_title(title or f"{len(records)} attempts, {len(workers)} worker(s)")
    figure.tight_layout()
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)


def _label_workers(axes: Any, rows: list[tuple[str, int]], workers: list[str]) -> None:
    """One y label per worker, at the middle of its rows, with a line between groups."""
    ticks, labels = [], []
    for worker in workers:
        ys = [y for y, (w, _) in enumerate(rows) if w == worker]
        ticks.append((ys[0] + ys[-1]) / 2)
        labels.append(worker)
        if ys[0] > 0:
            axes.axhline(ys[0] - 0.5, color="#666666", linewidth=0.6)
    axes.set_yticks(ticks)
    axes.set_yticklabels(labels, fontsize=8)
    axes.set_ylim(-0.5, len(rows) - 0.5)
