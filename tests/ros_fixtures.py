"""Shared by the ROS tests: one tiny artifact per pytest session, a probe node, process helpers."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ros_tiny_artifact import make_tiny_artifact


def session_artifact(tmp_path_factory) -> Path:
    """Built once per pytest session (training + export take a while on a loaded machine)."""
    root = tmp_path_factory.getbasetemp() / "ros_tiny_artifact"
    art = root / "policy.onnx"
    if not art.is_file():
        make_tiny_artifact(root)
    return art


def spin_until(executor, predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return predicate()


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a group whose members are all zombies is gone for our purposes
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pid and fields[0] != "Z":
                return True
    return False


class Launched:
    """``onboard launch FILE ARGS --no-ros2`` in its own process group, with a probe node beside it.

    The runner's output collects in ``lines``; ``node`` (an rclpy node on this
    test process's ROS_DOMAIN_ID) and ``ex`` (an events executor) are for
    subscriptions and publishers. Used as a context manager: on exit the probe
    is destroyed and the runner gets SIGINT (SIGKILL to its group after 20 s).
    Afterwards ``assert_clean_shutdown(n)`` checks exit code 0, at least ``n``
    started nodes and no orphaned process.
    """

    def __init__(self, launch_file: str, *args: str, probe: str = "e2e_probe"):
        import subprocess
        import sys
        import threading

        import rclpy

        from onboard.paths import REPO_ROOT
        from ros_nodes.common import make_executor

        env = dict(os.environ, MUJOCO_GL="egl", ORT_DISABLE_TELEMETRY="1")
        self.runner = subprocess.Popen(
            [sys.executable, "-m", "onboard.cli", "launch", launch_file, *args, "--no-ros2"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: [self.lines.append(x) for x in self.runner.stdout],
                                        daemon=True)
        self._reader.start()
        rclpy.init()
        self.node = rclpy.create_node(probe)
        self.ex = make_executor("events")
        self.ex.add_node(self.node)

    def __enter__(self) -> "Launched":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def tail(self, n: int = 30) -> str:
        return "".join(self.lines[-n:])

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.ex, predicate, timeout_s)

    def started(self, name: str | None = None) -> list[int]:
        """PIDs of the nodes the runner started (of node ``name`` only, when given)."""
        import re
        return [int(p) for n, p in re.findall(r"started \[(\w+)\] pid (\d+)", self.text) if name in (None, n)]

    def stop(self) -> int:
        import signal
        import subprocess

        import rclpy
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.shutdown()
        self.runner.send_signal(signal.SIGINT)
        try:
            self.runner.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.runner.pid, signal.SIGKILL)
            self.runner.wait(timeout=10)
        self._reader.join(5)
        return self.runner.returncode

    def assert_clean_shutdown(self, nodes: int) -> None:
        """Exit code 0, at least ``nodes`` nodes were started, none of them is left running."""
        assert self.runner.returncode == 0, self.text[-3000:]
        pids = self.started()
        assert len(pids) >= nodes, self.text[-3000:]
        assert not [p for p in pids if group_alive(p)], "orphaned processes after shutdown"
