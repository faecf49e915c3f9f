"""Turn bench/run.py's figures into a Markdown report with the ratios and the issue's targets."""

from __future__ import annotations

import json
import os
from typing import Any

RAW_SUBMIT, OURS_SUBMIT = "raw boto3 send_message_batch, 1 thread", "sqsmaster submit_many"
STM_SUBMIT, TQ_SUBMIT = "sqstaskmaster submit loop", "task-queue insert, default 40 threads"
RAW_DRAIN, OURS_DRAIN = "raw boto3 receive(10) + delete_message_batch", "sqsmaster task_generator(10) + MessageHandler"
STM_DRAIN, TQ_DRAIN = "sqstaskmaster task_generator + MessageHandler", "task-queue poll"


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


def targets(results: dict[str, Any]) -> list[str]:
    submit, drain, latency, rss = results["submit"], results["drain"], results["latency"], results["rss"]
    ours_rss = rss.get(OURS_SUBMIT, {})
    sizes = sorted(ours_rss, key=int)
    growth = ours_rss[sizes[-1]]["maxrss_mib"] - ours_rss[sizes[0]]["maxrss_mib"] if len(sizes) > 1 else float("nan")
    checks = [
        ("submit_many ≥ 0.95× raw boto3 batch rate", _ratio(submit, OURS_SUBMIT, RAW_SUBMIT), 0.95, True),
        ("submit_many ≥ 4× sqstaskmaster", _ratio(submit, OURS_SUBMIT, STM_SUBMIT), 4, True),
        ("submit_many client CPU/msg ≤ 1.2× raw", _ratio(submit, OURS_SUBMIT, RAW_SUBMIT, "cpu_us_per_message"),
         1.2, False),
        ("drain ≥ 0.9× raw drain", _ratio(drain, OURS_DRAIN, RAW_DRAIN), 0.9, True),
        ("drain ≥ 1.5× sqstaskmaster", _ratio(drain, OURS_DRAIN, STM_DRAIN), 1.5, True),
        ("drain ≥ 1.5× task-queue", _ratio(drain, OURS_DRAIN, TQ_DRAIN), 1.5, True),
        (f"RSS growth {sizes[0] if sizes else '?'} → {sizes[-1] if sizes else '?'} tasks < 20 MiB (MiB)", growth, 20,
         False),
        ("through 20 ms: submit_many ≥ 0.8× its direct rate",
         latency.get(OURS_SUBMIT, {}).get("rate", float("nan")) / submit[OURS_SUBMIT]["rate"], 0.8, True),
        ("(info) through 20 ms: raw 1 thread vs its direct rate",
         latency.get(RAW_SUBMIT, {}).get("rate", float("nan")) / submit[RAW_SUBMIT]["rate"], None, True),
    ]
    lines = ["| target | measured | met |", "|---|---:|:---:|"]
    for name, value, bound, at_least in checks:
        met = "" if bound is None else ("yes" if (value >= bound if at_least else value <= bound) else "**no**")
        lines.append(f"| {name} | {value:.2f} | {met} |")
    return lines


def render(results: dict[str, Any]) -> str:
    lines = [f"sqsmaster benchmark, {results['when']} ({results['machine']}, Python {results['python']}"
             f"{', QUICK' if results['quick'] else ''}); medians of {results['repeats']} runs; "
             f"wall {results.get('wall_seconds', 0):.0f} s", ""]
    lines += ["Submit, moto server process, queue kept near empty:", ""] + _table(results["submit"], RAW_SUBMIT)
    lines += ["", f"Drain of no-op tasks, moto, from a prefill of {results['depth']}:", ""]
    lines += _table(results["drain"], RAW_DRAIN)
    lines += ["", "Submit through a loopback proxy adding 20 ms per request:", ""]
    lines += _table(results["latency"], RAW_SUBMIT)
    lines += ["", "Client max RSS submitting from a generator to a sink that keeps nothing:", "",
              "| contender | tasks | max RSS MiB | msg/s | CPU µs/msg |", "|---|---:|---:|---:|---:|"]
    for name, by_count in results["rss"].items():
        for count, figures in by_count.items():
            lines.append(f"| {name} | {int(count):,} | {figures['maxrss_mib']:.1f} | {figures['rate']:,.0f} | "
                         f"{figures['cpu_us_per_message']:,.0f} |")
    lines += ["", "Targets (issue 6):", ""] + targets(results)
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    text = render(results)
    with open(os.path.join(directory, "results.json"), "w") as out:
        json.dump(results, out, indent=1)
    with open(os.path.join(directory, "results.md"), "w") as out:
        out.write(text)
    return text
