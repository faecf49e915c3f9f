"""Turn bench/run.py's figures into a Markdown report with the ratios and the issue's targets."""

from __future__ import annotations

import json
import os
from typing import Any

RAW_SUBMIT, OURS_SUBMIT = "raw boto3 send_message_batch, 1 thread", "sqsmaster submit_many"
STM_SUBMIT, TQ_SUBMIT = "sqstaskmaster submit loop", "task-queue insert, default 40 threads"
RAW_DRAIN, OURS_DRAIN = "raw boto3 receive(10) + delete_message_batch", "sqsmaster task_generator(10) + MessageHandler"
STM_DRAIN, TQ_DRAIN = "sqstaskmaster task_generator + MessageHandler", "task-queue poll"
WORKER_DRAIN = "sqsmaster Worker, signal isolation"


def _table(section: dict[str, Any], raw: str) -> list[str]:
    lines = ["| contender | msg/s (median) | × raw | client CPU µs/msg | × raw CPU |", "|---|---:|---:|---:|---:|"]
    base = section.get(raw, {})
    for name, figures in section.items():
        if "skipped" in figures:
            lines.append(f"| {name} | skipped: {figures['skipped']} | | | |")
            continue
        ratio = figures["rate"] / base["rate"] if base else float("nan")
        cpu_ratio = figures["cpu_us_per_message"] / base["cpu_us_per_message"] if base else float("nan")
        lines.append(f"| {name} | {figures['rate']:,.0f} | {ratio:.2f} | {figures['cpu_us_per_message']:,.0f} | "
                     f"{cpu_ratio:.2f} |")
    return lines


def _ratio(section: dict[str, Any], a: str, b: str, key: str = "rate") -> float:
    try:
        return float(section[a][key] / section[b][key])
    except (KeyError, ZeroDivisionError):
        return float("nan")


def _best_raw(section: dict[str, Any]) -> tuple[str, float]:
    name = max((name for name in section if name.startswith("raw")), key=lambda name: section[name]["rate"])
    return name, section[name]["rate"]


def sink_table(sink: dict[str, Any]) -> list[str]:
    """One row per contender, the 0 ms and 20 ms figures side by side, each against the best raw boto3 there."""
    delays = list(sink)
    lines = ["| contender | " + " | ".join(f"{d} ms msg/s | × best raw | CPU µs/msg" for d in delays) + " |",
             "|---|" + "---:|---:|---:|" * len(delays)]
    for name in sink[delays[0]]:
        cells = []
        for delay in delays:
            figures, best = sink[delay][name], _best_raw(sink[delay])[1]
            rate, cpu = figures["rate"], figures["cpu_us_per_message"]
            cells.append(f"{rate:,.0f} | {rate / best:.2f} | {cpu:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets that this run's sections measured: (target, measured, met)."""
    checks: list[tuple[str, float, float | None, bool]] = []
    submit, drain, sink, bill = (results.get(key) for key in ("submit", "drain", "sink", "bill"))
    if sink and "20" in sink:
        best_name, best = _best_raw(sink["20"])
        checks += [(f"20 ms sink: submit_many ≥ 0.9× best raw ({best_name.split(', ')[-1]})",
                    sink["20"][OURS_SUBMIT]["rate"] / best, 0.9, True),
                   ("20 ms sink: submit_many ≥ 1.1× task-queue 40 threads", _ratio(sink["20"], OURS_SUBMIT, TQ_SUBMIT),
                    1.1, True)]
    if submit:
        checks += [("moto: submit_many ≥ 0.95× raw boto3 batch rate", _ratio(submit, OURS_SUBMIT, RAW_SUBMIT), 0.95,
                    True),
                   ("moto: submit_many client CPU/msg ≤ 1.2× raw",
                    _ratio(submit, OURS_SUBMIT, RAW_SUBMIT, "cpu_us_per_message"), 1.2, False),
                   ("moto: submit_many ≥ 4× sqstaskmaster", _ratio(submit, OURS_SUBMIT, STM_SUBMIT), 4, True)]
    if drain:
        worker = WORKER_DRAIN if "rate" in drain.get(WORKER_DRAIN, {}) else OURS_DRAIN
        checks += [(f"moto: drain ({worker}) ≥ 0.9× raw drain", _ratio(drain, worker, RAW_DRAIN), 0.9, True),
                   ("moto: that drain ≥ 1.5× sqstaskmaster", _ratio(drain, worker, STM_DRAIN), 1.5, True),
                   ("moto: that drain ≥ 1.5× task-queue", _ratio(drain, worker, TQ_DRAIN), 1.5, True)]
    if bill:
        checks.append(("idle worker process: ≤ 3 ReceiveMessage a minute (issue 12 item 2)",
                       bill["idle"]["sqsmaster worker"]["receives_per_minute"], 3, False))
    rss = results.get("rss", {}).get(OURS_SUBMIT, {})
    if len(rss) > 1:
        sizes = sorted(rss, key=int)
        checks.append((f"RSS growth {int(sizes[0]):,} → {int(sizes[-1]):,} tasks < 20 MiB (MiB)",
                       rss[sizes[-1]]["maxrss_mib"] - rss[sizes[0]]["maxrss_mib"], 20, False))
    lines = ["| target | measured | met |", "|---|---:|:---:|"]
    for name, value, bound, at_least in checks:
        met = "" if bound is None else ("yes" if (value >= bound if at_least else value <= bound) else "**no**")
        lines.append(f"| {name} | {value:.2f} | {met} |")
    return lines


def render(results: dict[str, Any]) -> str:
    lines = [f"sqsmaster benchmark, {results['when']} ({results['machine']}, Python {results['python']}"
             f"{', QUICK' if results['quick'] else ''}); medians of {results['repeats']} runs; "
             f"wall {results.get('wall_seconds', 0):.0f} s; load at end {results.get('load_at_end', '?')}", ""]
    if "submit" in results:
        lines += ["Submit, moto server process, queue kept near empty:", ""] + _table(results["submit"], RAW_SUBMIT)
        lines += ["", f"Drain of no-op tasks, moto, from a prefill of {results['depth']}:", ""]
        lines += _table(results["drain"], RAW_DRAIN) + [""]
    if "sink" in results:
        lines += ["Submit to a stub SQS endpoint answering every request after 0 or 20 ms, concurrently "
                  f"(rounds interleave the contenders; {results['counts']['sink']['default']:,} messages a run):", ""]
        lines += sink_table(results["sink"]) + [""]
    if "bill" in results:
        lines += [bill_tables(results["bill"])]
    if "rss" in results:
        lines += ["Client max RSS submitting from a generator to a sink that keeps nothing:", "",
                  "| contender | tasks | max RSS MiB | msg/s | CPU µs/msg |", "|---|---:|---:|---:|---:|"]
        for name, by_count in results["rss"].items():
            for count, figures in by_count.items():
                lines.append(f"| {name} | {int(count):,} | {figures['maxrss_mib']:.1f} | {figures['rate']:,.0f} | "
                             f"{figures['cpu_us_per_message']:,.0f} |")
        lines.append("")
    lines += ["Targets:", ""] + targets(results)
    return "\n".join(lines) + "\n"


def rst_tables(markdown: str) -> str:
    """The report with each Markdown table as a reStructuredText simple table (what README.rst shows)."""
    out: list[str] = []
    table: list[list[str]] = []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-:") for cell in cells):
                table.append(cells)
            continue
        if table:
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            rule = "  ".join("=" * width for width in widths)
            rows = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
            out += [rule, rows[0], rule, *rows[1:], rule]
            table = []
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    """``python bench/report.py [--rst] [results.json]``: render a run's figures again (default: the last run)."""
    import sys

    args = [arg for arg in sys.argv[1:] if arg != "--rst"]
    with open(args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                "results.json")) as file:
        text = render(json.load(file))
    print(rst_tables(text) if "--rst" in sys.argv else text)


def write_report(results: dict[str, Any], directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    text = render(results)
    with open(os.path.join(directory, "results.json"), "w") as out:
        json.dump(results, out, indent=1)
    with open(os.path.join(directory, "results.md"), "w") as out:
        out.write(text)
    return text


BILL_KINDS = ["send", "receive", "visibility", "delete", "other"]


def _bill_rows(section: dict[str, Any]) -> list[str]:
    lines = ["| contender | " + " | ".join(BILL_KINDS) + " | requests/task | $ per million tasks |",
             "|---|" + "---:|" * (len(BILL_KINDS) + 2)]
    for name, figures in section.items():
        kinds = " | ".join(f"{figures['per_task'].get(kind, 0):.2f}" for kind in BILL_KINDS)
        lines.append(f"| {name} | {kinds} | {figures['total']:.2f} | {figures['usd_per_million_tasks']:.2f} |")
    return lines


def bill_tables(bill: dict[str, Any]) -> str:
    """The request-bill tables of bench/bill.py's figures, in Markdown."""
    scale, price = bill["scale"], bill["price_per_million"]
    lines = [f"SQS requests per task, counted at the server (${price:.2f} per million requests):", "",
             f"Quick (no-op) task, {bill['tasks']} per contender:", ""] + _bill_rows(bill["quick"])
    lines += ["", f"10-minute task with a 30 s heartbeat, {bill['long_tasks']} per contender, at 1/{scale:g} of the "
              f"time ({600 / scale:g} s tasks, a heartbeat every {30 / scale:g} s):", ""] + _bill_rows(bill["long"])
    lines += ["", f"Idle worker process ({bill['idle_seconds']:g} s on empty queues):", "",
              "| contender | ReceiveMessage a minute | $ a month |", "|---|---:|---:|"]
    for name, figures in bill["idle"].items():
        lines.append(f"| {name} | {figures['receives_per_minute']:.1f} | {figures['usd_per_month']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
