"""The safety filter, check by check: configuration, responses, logging, chunks, workspace, modes."""
import copy

import numpy as np
import pytest

from onboard.config import load_yaml
from onboard.errors import ConfigError
from onboard.paths import config_dir
from onboard.spec import load_robot
from sim2real.safety import DAMPING, ESTOP, HOLD, LAND, RAMP_IN, RUN, SafetyFilter
from sim2real.safety_envelope import load_envelope

PANDA = load_robot("franka_panda")
Q0 = np.r_[PANDA.default_pose, 0.04]


def _doc(robot="franka_panda"):
    return copy.deepcopy(load_yaml(config_dir() / "safety" / f"{robot}.yaml"))


def _panda(**sections):
    doc = _doc()
    doc["ramp_in"] = {"duration_s": 0.0}
    doc["watchdog"].update(state_timeout_s=1e6, command_timeout_s=1e6)   # tested on its own below
    for k, v in sections.items():
        doc.setdefault(k, {}).update(v)
    f = SafetyFilter(PANDA, load_envelope(PANDA, doc), 0.1)
    f.reset({"q": Q0}, 0.0)
    return f


def _write(tmp_path, doc):
    import yaml
    p = tmp_path / "env.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


# ---------------------------------------------------------------- configuration
def test_every_shipped_envelope_loads_for_its_robot():
    for name in ("franka_panda", "g1_12dof", "crazyflie2x"):
        f = SafetyFilter.for_robot(name)
        assert f.dt == pytest.approx(load_robot(name).control_dt_s)
        assert f.mode == RUN and f.summary()["total"] == 0


def test_from_yaml_matches_the_documented_interface():
    f = SafetyFilter.from_yaml(PANDA, "config/safety/franka_panda.yaml", dt_s=0.1)
    f.reset({"q": Q0}, 0.0)
    out = f.filter(Q0, 0.1, {"q": Q0})
    assert out.shape == (8,) and f.filter_chunk(np.tile(Q0, (16, 1)), {"q": Q0}, 0.1).shape == (16, 8)


@pytest.mark.parametrize("section,key,value,field", [
    ("joint_limits", "response", "explode", "joint_limits.response"),
    ("joint_limits", "position_margin_rad", -0.1, "joint_limits.position_margin_rad[0]"),
    ("joint_limits", "velocity_scale", 1.5, "joint_limits.velocity_scale"),
    ("workspace", "box_min_m", [1.0, 0.0, 0.0], "workspace.box_min_m[0]"),
    ("watchdog", "response", "land", "watchdog.response"),
    ("watchdog", "state_timeout_s", -1, "watchdog.state_timeout_s"),
    ("chunk", "velocity", "clamp", "chunk.velocity"),
    ("cbf", "alpha", 0, "cbf.alpha"),
    ("workspace", "bogus", 1, "workspace.bogus"),
])
def test_malformed_envelope_raises_config_error_naming_file_and_field(tmp_path, section, key, value, field):
    doc = _doc()
    doc[section][key] = value
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as e:
        SafetyFilter.from_yaml(PANDA, path, 0.1)
    assert str(path) in str(e.value) and field in str(e.value) and "Fix" in str(e.value)


def test_envelope_for_another_robot_is_refused(tmp_path):
    doc = _doc("g1_12dof")
    with pytest.raises(ConfigError, match="robot"):
        SafetyFilter.from_yaml(PANDA, _write(tmp_path, doc), 0.1)


def test_malformed_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("joint_limits: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        SafetyFilter.from_yaml(PANDA, p, 0.1)


def test_filter_before_reset_without_state_refuses():
    f = SafetyFilter.for_robot("franka_panda")
    with pytest.raises(RuntimeError):
        f.filter(Q0, 0.0)


# ---------------------------------------------------------------- joint limits and responses
def test_a_jump_is_clamped_to_the_velocity_and_acceleration_limits_and_logged():
    f = _panda()
    out = f.filter(Q0 + np.r_[1.0, 0, 0, 0, 0, 0, 0, 0], 0.1)
    step = out[0] - Q0[0]
    assert 0 < step <= 7.5 * 0.1 ** 2 * 2 + 1e-12       # from rest: acceleration-limited
    s = f.summary()
    assert s["counts"]["joint_limits"] == 1 and s["total"] == 1
    rec = s["last"][-1]
    assert rec["check"] == "joint_limits" and rec["axis"] == "panda_joint1"
    assert rec["before"] == pytest.approx(Q0[0] + 1.0) and rec["after"] == pytest.approx(out[0])


def test_commands_approach_but_never_cross_the_soft_position_limit():
    f = _panda(workspace={"enabled": False}, cbf={"enabled": False})
    target = Q0.copy()
    target[0] = 10.0
    outs = [f.filter(target, 0.1 * (k + 1)) for k in range(80)]
    assert max(o[0] for o in outs) <= 2.8973 - 0.05 + 1e-12
    assert outs[-1][0] == pytest.approx(2.8973 - 0.05, abs=1e-6)


def test_scale_response_keeps_the_direction_of_the_step():
    f = _panda(joint_limits={"response": "scale"})
    delta = np.r_[0.4, -0.2, 0, 0, 0, 0, 0, 0]
    out = f.filter(Q0 + delta, 0.1)
    d = out - Q0
    assert d[0] > 0 and d[1] < 0 and d[0] / d[1] == pytest.approx(-2.0)


def test_stop_response_latches_the_estop_and_holds():
    f = _panda(joint_limits={"response": "stop"})
    out = f.filter(Q0 + 1.0, 0.1)
    assert f.mode == ESTOP and np.allclose(out, Q0)
    assert np.allclose(f.filter(Q0, 0.2), Q0) and f.mode == ESTOP
    f.reset_estop(0.3)
    assert f.mode == RUN


def test_gripper_width_is_limited_to_its_range_and_speed():
    f = _panda()
    out = f.filter(np.r_[PANDA.default_pose, 0.5], 0.1)
    assert out[7] == pytest.approx(0.04 + 0.05 * 0.1)
    for k in range(20):
        out = f.filter(np.r_[PANDA.default_pose, -1.0], 0.2 + 0.1 * k)
    assert out[7] == 0.0 and f.summary()["counts"]["gripper"] > 0


def test_non_finite_command_holds_the_last_safe_command():
    f = _panda()
    out = f.filter(np.r_[np.nan, Q0[1:]], 0.1)
    assert np.array_equal(out, Q0) and f.summary()["counts"]["nonfinite"] == 1


def test_intervention_log_is_bounded():
    f = _panda()
    for k in range(500):
        f.filter(Q0 + (1.0 if k % 2 else -1.0), 0.1 * (k + 1))
    assert len(f.log) == f.env.log_size and f.summary()["total"] >= 500


# ---------------------------------------------------------------- ramp-in, watchdog, e-stop
def test_ramp_in_blends_from_the_current_state_over_its_duration():
    doc = _doc()
    doc["ramp_in"] = {"duration_s": 1.0}
    doc["joint_limits"]["velocity_scale"] = 1.0
    f = SafetyFilter(PANDA, load_envelope(PANDA, doc), 0.1)
    f.reset({"q": Q0}, 0.0)
    assert f.mode == RAMP_IN
    target = Q0 + np.r_[0.05, 0, 0, 0, 0, 0, 0, 0]
    out = f.filter(target, 0.5, {"q": Q0})
    assert out[0] == pytest.approx(Q0[0] + 0.5 * 0.05)
    f.filter(target, 1.0, {"q": Q0})
    assert f.mode == RUN


def test_stale_state_holds_and_fresh_state_resumes_with_a_ramp():
    f = SafetyFilter.for_robot("franka_panda")
    f.reset({"q": Q0}, 0.0)
    f.filter(Q0, 0.1, {"q": Q0})
    for k in range(2, 6):
        out = f.filter(Q0 + 0.3, 0.1 * k)       # no state: stale after 0.25 s
    assert f.mode == HOLD and f.summary()["counts"]["watchdog"] == 1
    held = out.copy()
    assert np.allclose(f.filter(Q0 + 0.3, 0.6), held, atol=1e-3)
    f.filter(Q0, 0.7, {"q": held})
    assert f.mode == RAMP_IN


def test_explicit_estop_holds_until_reset_estop():
    f = _panda()
    f.estop("operator")
    assert f.mode == ESTOP and f.summary()["estop_reason"] == "operator"
    for k in range(5):
        assert np.allclose(f.filter(Q0 + 0.5, 0.1 * (k + 1)), Q0)
    f.reset({"q": Q0}, 1.0)
    assert f.mode == ESTOP
    f.reset_estop(1.1)
    assert f.mode == RUN


# ---------------------------------------------------------------- chunks
def test_chunk_with_nan_is_rejected_as_a_hold_chunk():
    f = _panda()
    chunk = np.tile(Q0, (8, 1))
    chunk[3, 2] = np.nan
    out = f.filter_chunk(chunk, {"q": Q0}, 0.1)
    assert np.array_equal(out, np.tile(Q0, (8, 1))) and f.summary()["counts"]["chunk_nonfinite"] == 1


def test_chunk_outside_bounds_is_clamped():
    f = _panda()
    chunk = np.tile(Q0, (4, 1))
    chunk[:, 7] = 0.2
    out = f.filter_chunk(chunk, {"q": Q0}, 0.1)
    assert np.all(out[:, 7] <= 0.08)
    assert f.summary()["counts"]["chunk_bounds"] == 1


def test_chunk_with_a_first_step_jump_is_time_scaled_to_the_limits():
    f = _panda()
    goal = Q0 + np.r_[0.8, 0, 0, 0, 0, 0, 0, 0]
    chunk = np.tile(goal, (16, 1))
    out = f.filter_chunk(chunk, {"q": Q0}, 0.1)
    assert abs(out[0, 0] - Q0[0]) <= 0.3 + 1e-9
    steps = np.diff(np.vstack([Q0, out]), axis=0)
    assert np.all(np.abs(steps[:, :7]) <= PANDA.limits.velocity * 0.1 + 1e-9)
    assert np.all(np.diff(out[:, 0]) >= -1e-12)        # same path, slower: monotone toward the goal
    assert f.summary()["counts"]["chunk_first_step"] == 1


def test_chunk_rejection_per_configuration():
    f = _panda(chunk={"first_step": "hold"})
    out = f.filter_chunk(np.tile(Q0 + 0.8, (4, 1)), {"q": Q0}, 0.1)
    assert np.array_equal(out, np.tile(Q0, (4, 1)))


def test_chunk_inside_every_limit_is_returned_unchanged():
    f = _panda()
    chunk = Q0 + np.outer(np.arange(1, 9) * 0.01, np.r_[1, 0, 0, 0, 0, 0, 0, 0])
    assert np.array_equal(f.filter_chunk(chunk, {"q": Q0}, 0.1), chunk)


def test_a_one_step_gripper_close_does_not_slow_the_arm_chunk():
    # The gripper is its own actuator: closing it in one 0.1 s step (16x its 0.05 m/s) is rate-limited
    # per step, not by re-timing the arm's chunk (which made every grasp 16x slower; session 4 finding).
    f = _panda()
    chunk = Q0 + np.outer(np.arange(1, 9) * 0.01, np.r_[1, 0, 0, 0, 0, 0, 0, 0])
    chunk[2:, 7] = 0.0                                   # close the fingers at the third step
    out = f.filter_chunk(chunk, {"q": Q0}, 0.1)
    assert np.array_equal(out, chunk)
    assert "chunk_velocity" not in f.summary()["counts"]
    q, widths = Q0.copy(), []
    for k, cmd in enumerate(out):
        q = f.filter(cmd, 0.1 * (k + 1))
        widths.append(q[7])
    assert np.all(np.abs(np.diff(np.r_[0.04, widths])) <= 0.05 * 0.1 + 1e-12)   # still 0.05 m/s per step
    assert f.summary()["counts"]["gripper"] >= 1
    arm_too_fast = chunk.copy()
    arm_too_fast[:, 0] = Q0[0] + np.arange(1, 9) * 0.5   # 5 rad/s on joint 1: the chunk is re-timed
    assert f.filter_chunk(arm_too_fast, {"q": q}, 0.9)[0, 0] < arm_too_fast[0, 0]


# ---------------------------------------------------------------- workspace
def test_command_outside_the_workspace_box_is_projected_inside():
    # At 30 % speed the arm can always brake within one step, so the hard box holds on its own.
    f = _panda(cbf={"enabled": False}, joint_limits={"velocity_scale": 0.3})
    q = Q0.copy()
    target = Q0 + np.r_[0, 1.7, 0, 0.3, 0, 0, 0, 0]   # its TCP is 2.7 cm below the floor face
    assert f.kin.tcp_position(target[:7])[2] < 0
    for k in range(60):
        q = f.filter(target, 0.1 * (k + 1))
        x = f.kin.tcp_position(q[:7])
        assert np.all(x >= f.env.box_min - 1e-9) and np.all(x <= f.env.box_max + 1e-9)
    assert f.summary()["counts"]["workspace"] > 0
    assert f.kin.tcp_position(q[:7])[2] == pytest.approx(0.0, abs=0.02)   # pressed against the floor face


def test_workspace_cbf_slows_the_approach_before_the_face():
    f = _panda()
    for k in range(60):
        q = f.filter(Q0 + np.r_[0, 1.7, 0, 0.3, 0, 0, 0, 0], 0.1 * (k + 1))
        x = f.kin.tcp_position(q[:7])
        assert x[2] >= -1e-9
    assert f.summary()["counts"].get("cbf", 0) > 0


# ---------------------------------------------------------------- humanoid
def _g1():
    f = SafetyFilter.for_robot("g1_12dof")
    q = load_robot("g1_12dof").default_pose
    f.reset({"q": q, "rpy": np.zeros(3)}, 0.0)
    return f, q


def test_humanoid_roll_beyond_limit_enters_damping_with_measured_targets():
    f, q = _g1()
    measured = q + 0.05
    out = f.filter(q + 0.3, 0.02, {"q": measured, "rpy": [0.7, 0, 0]})
    assert f.mode == DAMPING and np.allclose(out, measured)
    out = f.filter(q, 0.04, {"q": measured, "rpy": [0, 0, 0]})   # stays latched
    assert f.mode == DAMPING
    f.resume(0.06)
    assert f.mode == RAMP_IN


def test_humanoid_stale_state_enters_damping():
    f, q = _g1()
    f.filter(q, 0.02, {"q": q, "rpy": np.zeros(3)})
    for k in range(2, 8):
        f.filter(q, 0.02 * k)
    assert f.mode == DAMPING


# ---------------------------------------------------------------- quadrotor
def _cf(pos=(0, 0, 1.0), vel=(0, 0, 0), rpy=(0, 0, 0)):
    f = SafetyFilter.for_robot("crazyflie2x")
    state = {"pos": np.array(pos, float), "vel": np.array(vel, float), "rpy": np.array(rpy, float)}
    f.reset(state, 0.0)
    return f, state


def test_quadrotor_thrust_bounds_come_from_mass_kf_and_thrust_to_weight():
    f, _ = _cf()
    assert f.env.thrust_max == pytest.approx(2.25 * 0.027 * 9.81)
    assert f.env.thrust_min == pytest.approx(0.05 * f.env.thrust_max)


def test_quadrotor_commands_are_clamped_to_thrust_and_rate_limits():
    f, state = _cf()
    state = {"rpy": np.zeros(3)}          # no position: the geofence barrier stays out of this test
    out = f.filter(np.array([5.0, 10.0, -10.0, 10.0]), 1.0, state)
    assert out[0] == pytest.approx(f.env.thrust_max)
    assert np.all(np.abs(out[1:]) <= f.env.max_body_rate + 1e-12)


def test_quadrotor_tilt_limit_scales_roll_rate():
    f, state = _cf(rpy=(0.6, 0, 0))
    state = {"rpy": np.array([0.6, 0, 0])}   # attitude only: the geofence barrier stays out of this test
    out = f.filter(np.array([0.3, 3.8, 0.0, 0.0]), 1.0, state)
    assert 0 <= out[1] < 3.8
    assert np.cos(0.6 + out[1] * f.dt) >= np.cos(f.env.max_tilt) - 1e-9


def test_quadrotor_geofence_cbf_turns_thrust_away_from_the_ceiling():
    f, state = _cf(pos=(0, 0, 1.95), vel=(0, 0, 1.0))
    out = f.filter(np.array([f.env.thrust_max, 0, 0, 0]), 1.0, state)
    assert out[0] < f.hover_thrust and f.summary()["counts"]["cbf"] == 1


def test_quadrotor_stale_state_lands_with_a_descending_thrust():
    f, state = _cf()
    f.filter(np.array([0.3, 0, 0, 0]), 0.6, state)
    out = None
    for k in range(1, 10):
        out = f.filter(np.array([0.5, 0, 0, 0]), 0.6 + 0.01 * k)
    assert f.mode == LAND and out[0] < f.hover_thrust


def test_without_the_cbf_a_fast_overshoot_returns_inside_the_box():
    f = _panda(cbf={"enabled": False})
    target = Q0 + np.r_[0, 1.7, 0, 0.3, 0, 0, 0, 0]
    z = [f.kin.tcp_position(f.filter(target, 0.1 * (k + 1))[:7])[2] for k in range(40)]
    assert min(z) > -0.05 and z[-1] >= -1e-9     # joint limits win while braking, then back inside
