"""``onboard launch FILE [name:=value ...]``: run a ROS 2 YAML launch file.

Hands over to ``ros2 launch`` (``os.execvp``) when it is on PATH, unless
``--no-ros2``; otherwise runs the file with ``onboard.launch_runner``.
"""
from __future__ import annotations

import os
import shutil

HELP = "Run a ROS 2 YAML launch file (via ros2 launch when installed, else onboard's runner)."


def add_arguments(parser) -> None:
    parser.add_argument("file", help="launch file, e.g. launch/arm_sim.launch.yaml")
    parser.add_argument("launch_args", nargs="*", metavar="name:=value", help="launch arguments")
    parser.add_argument("--no-ros2", action="store_true",
                        help="use onboard's runner even when `ros2 launch` is available")
    parser.add_argument("--show-args", action="store_true", help="list the file's arguments and exit")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the processes the file would start and exit")


def run(args) -> int:
    import shlex

    from onboard import launch_runner as lr

    given = lr.parse_cli_args(args.launch_args)
    if args.show_args:
        for a in lr.read_launch_args(args.file):
            default = f" (default: {a['default']!r})" if "default" in a else " (required)"
            print(f"{a.get('name')}{default}\n    {a.get('description', '')}")
        return 0
    if args.print_only:
        for spec in lr.load_launch(args.file, given):
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(spec.env.items()))
            print(f"[{spec.name}] {env + ' ' if env else ''}{shlex.join(spec.cmd)}")
        return 0
    ros2 = shutil.which("ros2")
    if ros2 and not args.no_ros2:
        lr.load_launch(args.file, given)   # fail here, with onboard's clear error, on a bad file
        os.execvp(ros2, ["ros2", "launch", args.file, *args.launch_args])
    return lr.run_launch(args.file, given)
