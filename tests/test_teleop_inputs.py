"""Teleop input mapping (ros_nodes.teleop_inputs), plain Python: Joy, keyboard, twist, leader arm, IK, deadman."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onboard.errors import ConfigError
from onboard.spec.robot import load_robot
from ros_nodes.teleop_inputs import (DifferentialIK, JoyMapping, KeyboardJoy, LeaderArmMap, TeleopController,
                                     twist_command)
from sim2real.kinematics import SerialArmKinematics

PANDA = load_robot("franka_panda")
Q0 = PANDA.default_pose[:7]


def _joy(lx=0.0, ly=0.0, rx=0.0, ry=0.0, **buttons):
    axes = [lx, ly, 0.0, rx, ry, 0.0, 0.0, 0.0]
    b = [0] * 11
    names = {"a": 0, "b": 1, "y": 3, "lb": 4, "back": 6, "start": 7}
    for k, v in buttons.items():
        b[names[k]] = int(v)
    return axes, b


def test_joy_sticks_map_to_cartesian_velocity_with_a_deadzone_and_buttons_fire_once_per_press():
    m = JoyMapping(max_linear_m_s=0.2)
    r = m.read(*_joy(ly=1.0, lx=0.05, lb=1, start=1))
    assert r.enabled and r.events == ["start"]
    np.testing.assert_allclose(r.linear_m_s, [0.2, 0.0, 0.0])     # lx inside the deadzone
    r = m.read(*_joy(ly=1.0, lb=1, start=1))                       # start still held: no new event
    assert r.events == []
    r = m.read(*_joy(ry=-0.55, y=1))
    assert not r.enabled and r.events == ["stop"]
    assert r.linear_m_s[2] == pytest.approx(-0.2 * 0.5)           # continuous at the deadzone edge
    assert m.read(*_joy(a=1)).gripper == "close"
    assert m.read(*_joy(b=1)).gripper == "open"


def test_keyboard_keys_become_a_virtual_gamepad_with_held_axes_and_an_enable_latch():
    kb, m = KeyboardJoy(hold_s=0.3), JoyMapping()
    kb.press(" ", 0.0)
    kb.press("w", 0.0)
    kb.press("b", 0.0)
    r = m.read(*kb.state(0.1))
    assert r.enabled and r.linear_m_s[0] > 0 and r.events == ["start"]
    r = m.read(*kb.state(0.5))                                     # key released (no repeat) -> stop moving
    assert r.enabled and np.allclose(r.linear_m_s, 0) and r.events == []
    kb.press(" ", 0.6)
    assert not m.read(*kb.state(0.6)).enabled


def test_twist_is_clamped_to_the_teleop_speed():
    r = twist_command([1.0, 0.0, 0.0], [0, 0, 5.0], max_linear_m_s=0.1, max_angular_rad_s=0.5)
    np.testing.assert_allclose(r.linear_m_s, [0.1, 0, 0])
    np.testing.assert_allclose(r.angular_rad_s, [0, 0, 0.5])


def test_differential_ik_moves_the_tcp_along_the_commanded_direction_and_keeps_its_orientation():
    kin = SerialArmKinematics.from_profile(PANDA)
    ik = DifferentialIK(kin, Q0, PANDA.limits.position, 0.5 * PANDA.limits.velocity)
    ik.reset(Q0)
    p0, R0 = ik.pose(Q0)
    for _ in range(50):                         # 1 s at 50 Hz, 0.1 m/s along +x
        q = ik.step([0.1, 0.0, 0.0], [0, 0, 0], 0.02)
    p1, R1 = ik.pose(q)
    np.testing.assert_allclose(p1 - p0, [0.1, 0.0, 0.0], atol=0.01)
    angle = np.arccos(np.clip((np.trace(R1 @ R0.T) - 1) / 2, -1, 1))
    assert angle < 0.02


def test_yaw_rate_turns_the_tool_about_the_vertical():
    kin = SerialArmKinematics.from_profile(PANDA)
    ik = DifferentialIK(kin, Q0, PANDA.limits.position, 0.5 * PANDA.limits.velocity)
    ik.reset(Q0)
    p0, R0 = ik.pose(Q0)
    for _ in range(50):
        q = ik.step([0, 0, 0], [0, 0, 0.3], 0.02)
    p1, R1 = ik.pose(q)
    dR = R1 @ R0.T
    assert np.arctan2(dR[1, 0], dR[0, 0]) == pytest.approx(0.3, abs=0.03)
    np.testing.assert_allclose(p1, p0, atol=0.01)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)),
                min_size=1, max_size=40))
def test_ik_targets_stay_inside_joint_limits_and_the_per_step_speed_cap_for_any_stick_input(seq):
    c = TeleopController(PANDA, "gamepad", rate_hz=50.0)
    q_prev = Q0.copy()
    for i, (lx, ly, rx, ry) in enumerate(seq):
        c.on_joy(*_joy(lx, ly, rx, ry, lb=1), now_s=i * 0.02)
        out = c.step(i * 0.02, Q0, 0.04)
        q = out[:7]
        lo, hi = PANDA.limits.position.T
        assert np.all(q >= lo - 1e-9) and np.all(q <= hi + 1e-9)
        assert np.all(np.abs(q - q_prev) <= 0.5 * PANDA.limits.velocity * 0.02 + 1e-9)
        q_prev = q


def test_deadman_release_holds_and_reengaging_starts_from_the_measured_joints():
    c = TeleopController(PANDA, "gamepad", rate_hz=50.0)
    c.on_joy(*_joy(ly=1.0, lb=1), now_s=0.0)
    assert c.step(0.0, Q0, 0.04) is not None
    c.on_joy(*_joy(ly=1.0, lb=0), now_s=0.02)
    assert c.step(0.02, Q0, 0.04) is None                 # released: no command (the node holds)
    q_moved = Q0 + 0.1
    c.on_joy(*_joy(lb=1), now_s=0.04)
    out = c.step(0.04, q_moved, 0.04)
    np.testing.assert_allclose(out[:7], q_moved, atol=1e-3)   # no jump back to the old target
    assert c.engagements == 2
    assert c.step(1.0, q_moved, 0.04) is None             # stale input counts as released


def test_gripper_buttons_move_the_width_at_the_rated_speed():
    c = TeleopController(PANDA, "gamepad", rate_hz=50.0, gripper_speed_m_s=0.05)
    c.on_joy(*_joy(lb=1, a=1), now_s=0.0)
    w = [c.step(0.0, Q0, 0.08)[7]]
    for i in range(1, 5):
        c.on_joy(*_joy(lb=1), now_s=i * 0.02)
        w.append(c.step(i * 0.02, Q0, 0.08)[7])
    np.testing.assert_allclose(np.diff(w), -0.001)
    assert c.take_events() == [] and c.width_target == 0.0


def test_leader_arm_maps_joints_with_signs_and_offsets_from_calibration(tmp_path):
    path = tmp_path / "leader.yaml"
    path.write_text("calibration_kind: leader_arm\n"
                    f"leader_joint_names: {[f'l{i}' for i in range(7)]}\n"
                    "signs: [1, -1, 1, 1, 1, 1, -1]\n"
                    "zero_offsets_rad: [0.1, 0, 0, 0, 0, 0, -0.2]\n"
                    "gripper: {joint: lg, scale: 2.0, offset_m: 0.0}\n")
    m = LeaderArmMap.from_yaml(path, PANDA.joint_names)
    q, w = m.follower([f"l{i}" for i in range(7)] + ["lg"], [0.5] * 7 + [0.02])
    np.testing.assert_allclose(q, [0.6, -0.5, 0.5, 0.5, 0.5, 0.5, -0.7])
    assert w == pytest.approx(0.04)
    c = TeleopController(PANDA, "leader", leader_map=m)
    assert c.on_leader([f"l{i}" for i in range(7)] + ["lg"], list(Q0 - m.offsets_rad) * 0 + [0.0] * 7 + [0.03], 0.0)
    out = c.step(0.0, Q0, 0.04)
    assert out is not None and len(out) == 8
    assert not c.on_leader(["l0"], [0.0], 0.01)           # a leader message missing joints is ignored


def test_a_malformed_leader_calibration_names_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("signs: [1, 2, 1, 1, 1, 1, 1]\n")
    with pytest.raises(ConfigError, match="signs"):
        LeaderArmMap.from_yaml(path, PANDA.joint_names)
    path.write_text("zero_offsets_rad: [0, 0]\n")
    with pytest.raises(ConfigError, match="zero_offsets_rad"):
        LeaderArmMap.from_yaml(path, PANDA.joint_names)


def test_teleop_takes_priority_over_a_fresh_policy_command():
    from ros_nodes.teleop_inputs import select_command

    last = np.r_[np.zeros(7), 0.04]
    teleop = np.r_[np.full(7, 0.1), 0.02]
    policy = np.full(7, -0.3)
    raw, src = select_command(teleop, policy, 0.01, 0.5, 0.05, last)
    assert src == "teleop" and np.array_equal(raw, teleop)
    raw, src = select_command(None, policy, 0.01, 0.5, 0.05, last)
    assert src == "policy" and np.array_equal(raw, np.r_[policy, 0.05])
    raw, src = select_command(None, policy, 0.01, 0.5, None, last)       # no policy gripper: keep width
    assert src == "policy" and raw[-1] == 0.04
    raw, src = select_command(None, policy, 0.8, 0.5, 0.05, last)         # stale policy: hold
    assert src == "hold" and np.array_equal(raw, last)
    raw, src = select_command(None, None, 0.0, 0.5, None, last)
    assert src == "hold" and np.array_equal(raw, last)
