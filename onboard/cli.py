"""The ``onboard`` command line: ``onboard VERB [options]``.

Exit codes: 0 success, 2 usage or bad input (an ``OnboardError``), 1 runtime
failure. Each verb lives in ``onboard/commands/<verb>.py``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from onboard.errors import OnboardError

# verb -> module. Keep in the order the README documents them.
VERBS = {
    "demo": "onboard.commands.demo",
    "collect": "onboard.commands.collect",
    "train": "onboard.commands.train",
    "export": "onboard.commands.export",
    "eval": "onboard.commands.eval",
    "sim2sim": "onboard.commands.sim2sim",
    "launch": "onboard.commands.launch",
    "bench": "onboard.commands.bench",
    "calibrate": "onboard.commands.calibrate",
    "replay": "onboard.commands.replay",
    "dataset": "onboard.commands.dataset",
}


def _available_verbs() -> dict:
    out = {}
    for verb, mod in VERBS.items():
        try:
            out[verb] = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:   # a verb module that exists but is broken must fail loudly
                raise
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onboard",
        description="Train robot policies in simulation, export them as self-describing ONNX "
                    "artifacts, and run them safely on real robots.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module in _available_verbs().items():
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    args = parser.parse_args(argv)   # argparse exits 2 on usage errors
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except OnboardError as exc:
        print(f"onboard {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"onboard {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
