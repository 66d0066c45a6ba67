"""`onboard collect --teleop ...` starts sim + teleop + recorder; the keyboard reader publishes a virtual gamepad."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from onboard.paths import REPO_ROOT


def test_keyboard_reader_turns_keys_into_gamepad_states_at_its_rate():
    from ros_nodes.teleop_inputs import JoyMapping
    from ros_nodes.teleop_node import keyboard_loop
    clock = {"t": 0.0}
    keys = iter([" ", "w", None, "b", None, None, "\x03"])
    published = []

    def read_key(timeout_s):
        clock["t"] += 0.05
        return next(keys)

    keyboard_loop(read_key, lambda a, b: published.append((a, b)), now=lambda: clock["t"], rate_hz=20.0)
    m = JoyMapping()
    readings = [m.read(a, b) for a, b in published]
    assert readings and all(r.enabled for r in readings)
    assert any(r.linear_m_s[0] > 0 for r in readings)
    assert sum(r.events.count("start") for r in readings) == 1


@pytest.mark.ros
def test_collect_teleop_gamepad_starts_the_three_nodes_and_stops_cleanly_on_sigint(tmp_path):
    pytest.importorskip("rclpy")
    from ros_fixtures import group_alive
    proc = subprocess.Popen([sys.executable, "-m", "onboard.cli", "collect", "--teleop", "gamepad", "--task", "reach",
                             "--no-dr", "--out", str(tmp_path / "ds")], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, MUJOCO_GL="egl"))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True)
    reader.start()
    end = time.monotonic() + 60
    def up():
        text = "".join(lines)
        return "services ~/start" in text and "teleop_node: input=gamepad" in text and "sim_node: franka_panda" in text
    while time.monotonic() < end and not up() and proc.poll() is None:
        time.sleep(0.2)
    text = "".join(lines)
    assert up(), text[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    reader.join(5)
    text = "".join(lines)
    assert proc.returncode == 0, text[-2000:]
    pids = [int(p) for p in re.findall(r"started \[\w+\] pid (\d+)", text)]
    assert len(pids) == 3 and not [p for p in pids if group_alive(p)]
