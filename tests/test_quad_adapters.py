"""PX4 and Crazyswarm2 adapters as plain functions: field mapping, ENU/FLU <-> NED/FRD, heartbeat, failsafe."""
import math
import subprocess
import sys

import numpy as np
import pytest

from onboard.paths import REPO_ROOT
from onboard.spec import load_robot
from ros_nodes.adapters import crazyswarm2 as cs
from ros_nodes.adapters import px4
from ros_nodes.adapters.quad_common import (HOLD, LAND, OK, CommandLossFailsafe, Heartbeat, quat_wxyz_to_rot,
                                            read_command, rot_to_quat_wxyz)


def _random_rot(rng):
    q = rng.standard_normal(4)
    return quat_wxyz_to_rot(q / np.linalg.norm(q))


def test_enu_to_ned_swaps_east_north_and_flips_up():
    assert np.allclose(px4.enu_to_ned([1.0, 2.0, 3.0]), [2.0, 1.0, -3.0])     # east 1, north 2, up 3
    assert np.allclose(px4.flu_to_frd([1.0, 2.0, 3.0]), [1.0, -2.0, -3.0])
    v = np.random.default_rng(0).standard_normal((10, 3))
    assert np.allclose(px4.ned_to_enu(px4.enu_to_ned(v)), v) and np.allclose(px4.frd_to_flu(px4.flu_to_frd(v)), v)


def test_attitude_conversion_maps_body_vectors_consistently_and_round_trips():
    rng = np.random.default_rng(1)
    for _ in range(20):
        r = _random_rot(rng)
        r_ned = px4.rot_enu_flu_to_ned_frd(r)
        assert np.allclose(r_ned @ r_ned.T, np.eye(3)) and np.linalg.det(r_ned) == pytest.approx(1.0)
        v_flu = rng.standard_normal(3)
        # the same physical vector, expressed either way, agrees in the world
        assert np.allclose(px4.enu_to_ned(r @ v_flu), r_ned @ px4.flu_to_frd(v_flu))
        q = rot_to_quat_wxyz(r)
        back = px4.quat_ned_frd_to_enu_flu(px4.quat_enu_flu_to_ned_frd(q))
        assert np.allclose(quat_wxyz_to_rot(back), r, atol=1e-9)


def test_level_drone_facing_east_in_enu_faces_east_in_ned():
    q_ned = px4.quat_enu_flu_to_ned_frd([1.0, 0, 0, 0])      # ENU yaw 0 = facing east
    r = quat_wxyz_to_rot(q_ned)
    assert np.allclose(r[:, 0], [0, 1, 0])                     # FRD forward = NED east
    assert px4.yaw_enu_to_ned(0.0) == pytest.approx(math.pi / 2)
    assert px4.yaw_enu_to_ned(math.pi / 2) == pytest.approx(0.0)   # facing north


def test_rates_setpoint_uses_frd_rates_and_normalized_upward_thrust():
    f = px4.rates_setpoint_fields([0.3, 0.1, 0.2, 0.3], max_thrust_n=0.6, t_s=1.5)
    assert f["timestamp"] == 1_500_000
    assert (f["roll"], f["pitch"], f["yaw"]) == pytest.approx((0.1, -0.2, -0.3))
    assert f["thrust_body"] == pytest.approx([0.0, 0.0, -0.5])
    assert px4.rates_setpoint_fields([9.0, 0, 0, 0], 0.6, 0)["thrust_body"][2] == -1.0   # clipped


def test_trajectory_setpoint_holds_a_position_in_ned_and_leaves_velocity_uncontrolled():
    f = px4.trajectory_setpoint_fields([1.0, 2.0, 1.5], 0.0, 2.0)
    assert f["position"] == pytest.approx([2.0, 1.0, -1.5])
    assert all(math.isnan(v) for v in f["velocity"]) and f["yaw"] == pytest.approx(math.pi / 2)


def test_odometry_from_px4_comes_back_in_enu_flu():
    s = px4.odometry_to_enu_flu([2.0, 1.0, -1.5], px4.quat_enu_flu_to_ned_frd([1.0, 0, 0, 0]), [0.0, 1.0, 0.0],
                                [0.1, -0.2, -0.3])
    assert np.allclose(s["pos"], [1.0, 2.0, 1.5]) and np.allclose(s["vel"], [1.0, 0.0, 0.0])
    assert np.allclose(quat_wxyz_to_rot(s["quat_wxyz"]), np.eye(3)) and np.allclose(s["omega_body"], [0.1, 0.2, 0.3])


def test_offboard_heartbeat_stays_above_2_hz_in_every_failsafe_state():
    logic = px4.Px4OffboardLogic(max_thrust_n=0.6, heartbeat_hz=10.0)
    beats = []
    for k in range(300):                       # 3 s at 100 Hz: commands only for the first 0.5 s
        t = k * 0.01
        if t < 0.5:
            logic.on_command([0.27, 0, 0, 0], t)
        beats += [t for kind, _ in logic.tick(t) if kind == "OffboardControlMode"]
    gaps = np.diff(beats)
    assert gaps.max() <= 0.1 + 1e-6 and len(beats) >= 29
    with pytest.raises(ValueError):
        Heartbeat(2.0)


def test_px4_failsafe_holds_position_then_lands_once_when_commands_stop():
    logic = px4.Px4OffboardLogic(max_thrust_n=0.6)
    logic.on_odometry([0.5, -0.5, 1.0], 0.0)
    kinds = {}
    for k in range(200):
        t = k * 0.01
        if t < 0.5:
            logic.on_command([0.27, 0, 0, 0], t)
        for kind, f in logic.tick(t):
            kinds.setdefault(kind, []).append((t, f))
    last_cmd = 0.49
    rates_t = [t for t, _ in kinds["VehicleRatesSetpoint"]]
    assert max(rates_t) <= last_cmd + 0.2 + 1e-9                # no stale rates past the hold timeout
    holds = kinds["TrajectorySetpoint"]
    assert holds and all(f["position"] == pytest.approx([-0.5, 0.5, -1.0]) for _, f in holds)
    assert min(t for t, _ in holds) > last_cmd + 0.2 and max(t for t, _ in holds) <= last_cmd + 1.0 + 1e-9
    land = kinds["VehicleCommand"]
    assert len(land) == 1 and land[0][1]["command"] == px4.VEHICLE_CMD_NAV_LAND and land[0][0] > last_cmd + 1.0
    modes = [f for t, f in kinds["OffboardControlMode"] if t > 0.8]
    assert all(f["position"] and not f["body_rate"] for f in modes)


def test_failsafe_is_latched_after_land_and_before_the_first_command_it_holds():
    fs = CommandLossFailsafe(0.2, 1.0)
    assert fs.state(0.0) == HOLD
    fs.on_command(0.0)
    assert fs.state(0.1) == OK and fs.state(0.5) == HOLD and fs.state(1.2) == LAND
    fs.on_command(1.3)
    assert fs.state(1.3) == LAND                                  # latched until rearm
    fs.rearm()
    assert fs.state(1.35) == OK


def test_crazyflie_thrust_maps_through_the_profile_pwm_line_both_ways():
    m = cs.profile_thrust_map(load_robot("crazyflie2x"))
    weight = 0.027 * 9.81
    pwm = cs.thrust_to_pwm(weight, **m)
    assert 0 < pwm < cs.PWM_MAX
    assert cs.pwm_to_thrust(pwm, **m) == pytest.approx(weight, rel=1e-3)
    assert cs.thrust_to_pwm(10.0, **m) == cs.PWM_MAX and cs.thrust_to_pwm(-1.0, **m) == 0
    assert cs.thrust_to_pwm(float("nan"), **m) == 0


def test_crazyflie_legacy_rates_follow_the_firmware_signs_in_degrees():
    m = cs.profile_thrust_map(load_robot("crazyflie2x"))
    f = cs.cmd_vel_legacy_fields([0.265, math.radians(10), math.radians(20), math.radians(30)], m)
    assert f["linear"]["y"] == pytest.approx(10) and f["linear"]["x"] == pytest.approx(-20)
    assert f["angular"]["z"] == pytest.approx(-30)


def test_crazyflie_failsafe_hovers_then_lands_once():
    m = cs.profile_thrust_map(load_robot("crazyflie2x"))
    logic = cs.CrazyflieRateLogic(m, hover_thrust_n=0.265)
    out = []
    for k in range(200):
        t = k * 0.01
        if t < 0.5:
            logic.on_command([0.4, 1.0, 0, 0], t)
        out += [(t, kind, f) for kind, f in logic.tick(t)]
    hover = [f for t, kind, f in out if kind == "cmd_vel_legacy" and 0.7 < t <= 1.49]
    assert hover and all(f["linear"]["y"] == 0 and f["linear"]["z"] == cs.thrust_to_pwm(0.265, **m) for f in hover)
    assert [k for _, k, _ in out].count("land") == 1
    assert not [t for t, k, _ in out if k == "cmd_vel_legacy" and t > 0.49 + 1.0 + 1e-9]


def test_command_message_must_have_four_finite_values():
    assert np.allclose(read_command([0.3, 0, 0, 0]), [0.3, 0, 0, 0])
    for bad in ([0.3, 0, 0], [0.3, 0, 0, float("nan")]):
        with pytest.raises(ValueError):
            read_command(bad)


@pytest.mark.parametrize("module,package", [("ros_nodes.adapters.px4", "px4_msgs"),
                                            ("ros_nodes.adapters.crazyswarm2", "crazyflie_interfaces")])
def test_adapter_nodes_stay_off_with_exit_2_when_their_messages_are_missing(module, package):
    r = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert r.returncode == 2 and package in r.stderr and "not importable" in r.stderr
