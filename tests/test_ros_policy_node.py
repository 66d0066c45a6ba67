"""policy_node under bad inputs: it stays up, says what is wrong in diagnostics, never commands unsafely.

Most cases drive ``PolicyLoop`` (the node's logic, no ROS graph); one test runs
the real node process over DDS and feeds it every bad input at once.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from onboard.paths import REPO_ROOT  # noqa: E402
from ros_fixtures import session_artifact, spin_until  # noqa: E402
from ros_nodes.policy_node import NO_POLICY, RUNNING, STALE, WAITING, PolicyLoop  # noqa: E402
from ros_tiny_artifact import PANDA  # noqa: E402

pytestmark = pytest.mark.ros
JOINTS = list(PANDA.joint_names) + ["panda_finger_joint1", "panda_finger_joint2"]
LO, HI = PANDA.limits.position[:, 0], PANDA.limits.position[:, 1]
TASK = {"target_pos": np.array([0.5, 0.0, 0.3])}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return session_artifact(tmp_path_factory)


def _state(q=None):
    q = PANDA.default_pose if q is None else q
    return JOINTS, list(q) + [0.02, 0.02], [0.0] * 9


def _assert_safe(cmds):
    c = np.array(cmds)
    assert np.all(np.isfinite(c))
    assert np.all(c[:, :7] >= LO) and np.all(c[:, :7] <= HI)
    steps = np.abs(np.diff(c[:, :7], axis=0))
    assert np.all(steps <= PANDA.limits.velocity * 0.1 + 1e-9)      # never faster than the limits at 10 Hz


@pytest.mark.parametrize("make", ["missing", "corrupt", "wrong_robot"])
def test_a_missing_corrupt_or_mismatched_artifact_is_reported_and_never_commands(artifact, tmp_path, make):
    path, robot = str(tmp_path / "policy.onnx"), "franka_panda"
    if make == "corrupt":
        (tmp_path / "policy.onnx").write_bytes(b"\x08\x01garbage" * 50)
    if make == "wrong_robot":
        path, robot = str(artifact), "g1_12dof"
    loop = PolicyLoop(path, robot=robot)
    loop.on_joint_state(*_state(), stamp_s=1.0, receive_s=1.0) if robot == "franka_panda" else None
    assert loop.tick(1.0) is None and loop.status == NO_POLICY
    level, message, values = loop.diagnostics(1.0)
    assert level == "error" and "no policy loaded" in message and values["error"]


def test_policy_node_strict_exits_2_at_startup_naming_the_artifact(tmp_path):
    missing = tmp_path / "nope.onnx"
    r = subprocess.run([sys.executable, "-m", "ros_nodes.policy_node", "--strict", "--ros-args",
                        "-p", f"artifact:={missing}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and str(missing) in r.stderr and "not found" in r.stderr


def test_joint_states_missing_a_joint_never_start_the_policy(artifact):
    loop = PolicyLoop(str(artifact))
    names, pos, vel = _state()
    loop.on_task_state(TASK)
    for k in range(5):
        loop.on_joint_state(names[1:], pos[1:], vel[1:], stamp_s=k * 0.01, receive_s=k * 0.01)
        assert loop.tick(k * 0.01) is None
    level, message, values = loop.diagnostics(0.05)
    assert loop.status == WAITING and values["state_rejected.missing_joint"] == 5


def test_nan_and_out_of_order_state_are_rejected_and_commands_stay_safe(artifact):
    loop = PolicyLoop(str(artifact))
    loop.on_task_state(TASK)
    cmds, t = [], 0.0
    for k in range(30):
        t = 0.1 * k
        names, pos, vel = _state()
        if k % 3 == 1:
            pos = list(pos)
            pos[2] = float("nan")
        stamp = t if k % 5 != 2 else t - 1.0           # out of order
        loop.on_joint_state(names, pos, vel, stamp_s=stamp, receive_s=t)
        out = loop.tick(t + 0.001)
        if out is not None:
            cmds.append(out[0])
    _, _, values = loop.diagnostics(t)
    assert values["state_rejected.nan"] >= 9 and values["state_rejected.out_of_order"] >= 4
    assert loop.status == RUNNING and len(cmds) >= 25
    _assert_safe(cmds)


def test_state_at_ten_times_the_rate_is_reported_and_commands_stay_safe(artifact):
    loop = PolicyLoop(str(artifact), expected_state_hz=100)
    loop.on_task_state(TASK)
    cmds = []
    for k in range(2000):                                  # 1 kHz for 2 s, i.e. 10x the expected 100 Hz
        t = k * 1e-3
        loop.on_joint_state(*_state(), stamp_s=t, receive_s=t)
        if k % 100 == 99:
            out = loop.tick(t)
            cmds.append(out[0])
    level, message, _ = loop.diagnostics(2.0)
    assert level == "warn" and "over" in message and "expected" in message
    _assert_safe(cmds)


def test_stale_state_holds_and_reports_stale(artifact):
    loop = PolicyLoop(str(artifact))
    loop.on_task_state(TASK)
    cmds = []
    for k in range(10):
        loop.on_joint_state(*_state(), stamp_s=0.1 * k, receive_s=0.1 * k)
        cmds.append(loop.tick(0.1 * k + 0.001)[0])
    for k in range(10, 20):                              # the state stops arriving
        cmds.append(loop.tick(0.1 * k)[0])
    level, message, values = loop.diagnostics(2.0)
    assert loop.status == STALE and level == "stale" and values["safety_mode"] == "HOLD"
    _assert_safe(cmds)
    assert np.abs(np.diff(np.array(cmds[-4:]), axis=0)).max() < 1e-6     # settled into a hold


def test_policy_node_process_survives_every_bad_input_and_reports_it(artifact):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from ros_nodes.common import labeled_array, make_executor, read_diagnostic, s_to_stamp, sensor_qos

    proc = subprocess.Popen([sys.executable, "-m", "ros_nodes.policy_node", "--ros-args", "-p", f"artifact:={artifact}",
                             "-p", "expected_state_rate_hz:=50.0", "-p", "diagnostics_rate_hz:=5.0"],
                            cwd=REPO_ROOT, env=dict(os.environ, ORT_DISABLE_TELEMETRY="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = rclpy.create_node("bad_input_probe")
    js_pub = node.create_publisher(JointState, "/joint_states", sensor_qos())
    task_pub = node.create_publisher(Float64MultiArray, "/task_state", 10)
    cmds, diags = [], []
    node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                             lambda m: cmds.append(np.array(m.data)), 50)
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: diags.extend(read_diagnostic(s) for s in m.status), 50)
    ex = make_executor("events")
    ex.add_node(node)
    t_stamp = [time.time()]

    def send(kind: str) -> None:
        names, pos, vel = _state()
        stamp = t_stamp[0] = t_stamp[0] + 0.002
        if kind == "missing":
            names, pos, vel = names[1:], pos[1:], vel[1:]
        elif kind == "nan":
            pos = list(pos)
            pos[0] = float("nan")
        elif kind == "old":
            stamp -= 10.0
        msg = JointState(name=names, position=pos, velocity=vel)
        s_to_stamp(stamp, msg.header.stamp)
        js_pub.publish(msg)

    try:
        assert spin_until(ex, lambda: bool(diags), 60), proc.stdout.read() if proc.poll() is not None else ""
        end = time.monotonic() + 6.0
        k = 0
        while time.monotonic() < end:                      # ~500 Hz (10x the expected 50 Hz), mixed faults
            send(["ok", "missing", "nan", "old", "ok"][k % 5])
            if k % 25 == 0:
                task_pub.publish(labeled_array(TASK))
            k += 1
            ex.spin_once(timeout_sec=0.002)
        spin_until(ex, lambda: False, 0.5)
        assert proc.poll() is None, "policy_node died on bad input"
        keys = set().union(*diags)
        assert {"state_rejected.missing_joint", "state_rejected.nan", "state_rejected.out_of_order"} <= keys
        assert any("over" in d["message"] and d["level"] == 1 for d in diags)       # the rate excess, as WARN
        assert len(cmds) > 5
        _assert_safe([np.r_[c, 0.04] for c in cmds])
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        proc.send_signal(2)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
