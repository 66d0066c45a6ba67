"""``onboard bench NAME|all``: run the benchmarks under bench/ (each appends to docs/benchmarks.md)."""
from __future__ import annotations

HELP = "Run benchmarks from bench/ (runtime vs torch, env step vs mj_step, safety filter, ROS 2 loop and images)."


def _benches():
    from onboard.paths import REPO_ROOT

    return {p.stem.removeprefix("bench_"): p for p in sorted((REPO_ROOT / "bench").glob("bench_*.py"))}


def add_arguments(p):
    p.add_argument("name", nargs="?", default="list", help="a benchmark name, 'all', or 'list' (default)")


def run(args) -> int:
    import subprocess
    import sys

    from onboard.errors import OnboardError
    from onboard.paths import REPO_ROOT

    benches = _benches()
    if args.name == "list":
        print("benchmarks: " + ", ".join(benches))
        return 0
    if args.name != "all" and args.name not in benches:
        raise OnboardError(f"unknown benchmark '{args.name}'", field="name",
                           fix=f"use one of {sorted(benches)} or 'all'")
    names = list(benches) if args.name == "all" else [args.name]
    rc = 0
    for n in names:
        print(f"=== bench {n}", flush=True)
        r = subprocess.run([sys.executable, str(benches[n])], cwd=REPO_ROOT)
        rc = rc or r.returncode
    return 1 if rc else 0
