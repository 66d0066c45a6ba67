"""Shared by every benchmark: print a table and append it to docs/benchmarks.md.

Benchmarks measure ratios against a baseline run in the same process, so
figures stay comparable across machines. Each entry records the machine, the
date and the command that reproduces it.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def record(title: str, rows: list[dict], *, command: str | None = None, notes: str = "",
           write: bool = True) -> str:
    """Print the table; append it (with machine, date, command) to docs/benchmarks.md."""
    command = command or " ".join([Path(sys.executable).name, *sys.argv])
    body = table(rows)
    print(f"\n## {title}\n\n{body}")
    if notes:
        print(notes)
    if not write:
        return body
    DOC.parent.mkdir(parents=True, exist_ok=True)
    if not DOC.exists():
        DOC.write_text("# Benchmarks\n\nEach section is appended by a script under `bench/`; the newest run of a "
                       "benchmark is the last section with its title.\n")
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with DOC.open("a") as f:
        f.write(f"\n## {title}\n\n- machine: {machine()}\n- date: {stamp}\n- command: `{command}`\n\n{body}")
        if notes:
            f.write(f"\n{notes}\n")
    return body
