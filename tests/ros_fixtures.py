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
