"""Property-based specification of the safety filter (hypothesis).

For any command stream (NaN, inf, huge values included) the output meets every
limit; a stream already inside every limit passes unchanged; the watchdog fires
within one control period after its threshold; a command never clears the e-stop.
"""
import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from onboard.spec import load_robot
from sim2real.safety import ESTOP, HOLD, SafetyFilter
from sim2real.safety_envelope import load_envelope
from onboard.config import load_yaml
from onboard.paths import config_dir

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.filter_too_much])
REL = 1e-9

WILD = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0]),
                 st.floats(-5, 5))


def _envelope_doc(robot, **changes):
    doc = copy.deepcopy(load_yaml(config_dir() / "safety" / f"{robot}.yaml"))
    for dotted, value in changes.items():
        sec, key = dotted.split("__")
        doc.setdefault(sec, {})[key] = value
    return doc


def _stream_ok(f, outputs, q0):
    """Assert the finite differences of [q0, q0, q0, outputs...] meet every limit."""
    lim, dt = f.limits, f.dt
    q = np.vstack([q0, q0, q0, np.asarray(outputs)])
    assert np.all(np.isfinite(q))
    assert np.all(q >= lim.hard_lo - 1e-12) and np.all(q <= lim.hard_hi + 1e-12)
    w = np.diff(q, axis=0)
    assert np.all(np.abs(w) <= lim.vel * dt * (1 + REL) + 1e-12), "velocity limit"
    d2 = np.diff(w, axis=0)
    assert np.all(np.abs(d2) <= lim.acc * dt ** 2 * (1 + REL) + 1e-12), "acceleration limit"
    d3 = np.diff(d2, axis=0)
    assert np.all(np.abs(d3) <= lim.jerk * dt ** 3 * (1 + REL) + 1e-12), "jerk limit"


def _start_pose(profile, offsets):
    q0 = profile.default_pose + np.asarray(offsets)[: profile.n_joints]
    if profile.kind == "arm":
        q0 = np.r_[q0, 0.04]
    return q0


@pytest.mark.parametrize("robot", ["franka_panda", "g1_12dof"])
@settings(**SETTINGS)
@given(data=st.data())
def test_safety_filter_never_exceeds_any_joint_limit_for_any_input(robot, data):
    f = SafetyFilter.for_robot(robot)
    D = f.action_dim
    q0 = _start_pose(f.profile, data.draw(arrays(float, 12, elements=st.floats(-0.05, 0.05))))
    cmds = data.draw(st.lists(arrays(float, D, elements=WILD), min_size=1, max_size=40))
    state = {"q": q0, "rpy": np.zeros(3)}
    f.reset(state, 0.0)
    outs = [f.filter(c, (k + 1) * f.dt, state) for k, c in enumerate(cmds)]
    _stream_ok(f, outs, q0)
    if robot == "franka_panda":   # the TCP never leaves the workspace box
        for o in outs:
            x = f.kin.tcp_position(o[:7])
            assert np.all(x >= f.env.box_min - 1e-9) and np.all(x <= f.env.box_max + 1e-9)


@settings(**SETTINGS)
@given(cmds=st.lists(arrays(float, 4, elements=WILD), min_size=1, max_size=30),
       pos=arrays(float, 3, elements=st.floats(-1.4, 1.4)), rpy=arrays(float, 3, elements=st.floats(-0.3, 0.3)))
def test_quadrotor_output_stays_within_thrust_and_rate_bounds_for_any_input(cmds, pos, rpy):
    f = SafetyFilter.for_robot("crazyflie2x")
    state = {"pos": pos + [0, 0, 0.5], "vel": np.zeros(3), "rpy": rpy}
    f.reset(state, 0.0)
    for k, c in enumerate(cmds):
        out = f.filter(c, (k + 1) * f.dt, state)
        assert np.all(np.isfinite(out))
        assert np.all(out >= f._u_lo - 1e-12) and np.all(out <= f._u_hi + 1e-12)


def _in_limit_stream(f, data, n_steps):
    """A command stream inside every limit and viable (it can still brake inside the soft range)."""
    lim, dt, D = f.limits, f.dt, f.action_dim
    q0 = _start_pose(f.profile, data.draw(arrays(float, 12, elements=st.floats(-0.1, 0.1))))
    frac = data.draw(arrays(float, (n_steps, D), elements=st.floats(-1, 1)))
    q, v, a_prev = q0.copy(), np.zeros(D), np.zeros(D)
    out = []
    for k in range(n_steps):
        v_new = np.clip(v + 0.4 * lim.acc * frac[k] * dt, -0.4 * lim.vel, 0.4 * lim.vel)
        q_new = q + v_new * dt
        w = q_new - q
        ms = lim._max_step(np.concatenate((q - lim.soft_lo, lim.soft_hi - q)))
        dn, up = ms[:D], ms[D:]
        assume(np.all(w <= up - 1e-9) and np.all(-w <= dn - 1e-9))
        out.append(q_new)
        q, v = q_new, v_new
    return q0, out


@pytest.mark.parametrize("robot", ["franka_panda", "g1_12dof"])
@settings(**SETTINGS)
@given(data=st.data())
def test_joint_limit_layer_is_the_identity_for_streams_inside_every_limit(robot, data):
    profile = load_robot(robot)
    doc = _envelope_doc(robot, ramp_in__duration_s=0.0)
    if robot == "franka_panda":
        doc["workspace"]["enabled"] = False
        doc["cbf"]["enabled"] = False
    f = SafetyFilter(profile, load_envelope(profile, doc))
    q0, cmds = _in_limit_stream(f, data, data.draw(st.integers(1, 30)))
    state = {"q": q0, "rpy": np.zeros(3)}
    f.reset(state, 0.0)
    for k, c in enumerate(cmds):
        out = f.filter(c, (k + 1) * f.dt, state)
        assert np.array_equal(out, c)
    assert f.summary()["total"] == 0


@settings(**SETTINGS)
@given(data=st.data())
def test_full_arm_filter_is_the_identity_inside_limits_box_and_barrier(data):
    profile = load_robot("franka_panda")
    f = SafetyFilter(profile, load_envelope(profile, _envelope_doc("franka_panda", ramp_in__duration_s=0.0)))
    q0, cmds = _in_limit_stream(f, data, data.draw(st.integers(1, 15)))
    prev = q0
    for c in cmds:   # keep only streams that are inside the box and satisfy the barrier rows
        x = f.kin.tcp_position(c[:7])
        assume(np.all(x > f.env.box_min) and np.all(x < f.env.box_max))
        G, b = f.arm_cbf.rows(prev[:7])
        assume(np.all(G @ ((c[:7] - prev[:7]) / f.dt) >= b))
        prev = c
    state = {"q": q0}
    f.reset(state, 0.0)
    for k, c in enumerate(cmds):
        assert np.array_equal(f.filter(c, (k + 1) * f.dt, state), c)


@pytest.mark.parametrize("robot", ["franka_panda", "g1_12dof", "crazyflie2x"])
@settings(**SETTINGS)
@given(t0=st.floats(0, 100), n_fresh=st.integers(0, 20), which=st.sampled_from(["state", "command"]))
def test_watchdog_fires_within_one_control_period_after_its_threshold(robot, t0, n_fresh, which):
    f = SafetyFilter.for_robot(robot)
    dt = f.dt
    if f.kind == "quadrotor":
        state = {"pos": [0, 0, 1.0], "vel": [0, 0, 0], "rpy": [0, 0, 0]}
        cmd = np.r_[f.hover_thrust, 0, 0, 0]
    else:
        cmd = _start_pose(f.profile, np.zeros(12))
        state = {"q": cmd, "rpy": np.zeros(3)}
    f.reset(state, t0)
    last_state, last_cmd = t0, t0
    t = t0
    for _ in range(n_fresh):
        t += dt
        f.filter(cmd, t, state)
        last_state = last_cmd = t
    fallback = {"arm": HOLD, "humanoid": "DAMPING", "quadrotor": "LAND"}[f.kind]
    threshold = f.env.state_timeout_s if which == "state" else f.env.command_timeout_s
    stamp = last_state if which == "state" else last_cmd
    for _ in range(10_000):
        t += dt
        if which == "state":
            f.filter(cmd, t)                 # commands keep coming, the state does not
        else:
            f.update_state(state, t)         # the state keeps coming, commands do not
            f.filter(None, t)
        if f.mode == fallback:
            break
    assert f.mode == fallback
    assert stamp + threshold - 1e-9 < t <= stamp + threshold + dt + 1e-9


@pytest.mark.parametrize("robot", ["franka_panda", "g1_12dof", "crazyflie2x"])
@settings(**SETTINGS)
@given(data=st.data())
def test_no_command_or_state_clears_a_latched_estop(robot, data):
    f = SafetyFilter.for_robot(robot)
    D = f.action_dim
    if f.kind == "quadrotor":
        state = {"pos": [0, 0, 1.0], "vel": [0, 0, 0], "rpy": [0, 0, 0]}
    else:
        state = {"q": _start_pose(f.profile, np.zeros(12)), "rpy": np.zeros(3)}
    f.reset(state, 0.0)
    f.estop("test")
    cmds = data.draw(st.lists(arrays(float, D, elements=WILD), min_size=1, max_size=20))
    for k, c in enumerate(cmds):
        t = (k + 1) * f.dt
        action = data.draw(st.sampled_from(["filter", "chunk", "reset", "resume", "none"]))
        if action == "filter":
            out = f.filter(c, t, state)
            assert np.all(np.isfinite(out))
        elif action == "chunk":
            out = f.filter_chunk(np.tile(c, (4, 1)), state, t)
            assert np.all(np.isfinite(out))
        elif action == "reset":
            f.reset(state, t)
        elif action == "resume":
            f.resume(t)
        else:
            f.filter(None, t, state)
        assert f.mode == ESTOP
    f.reset_estop(t)
    assert f.mode != ESTOP


@pytest.mark.parametrize("robot", ["franka_panda", "g1_12dof", "crazyflie2x"])
@settings(**SETTINGS)
@given(data=st.data())
def test_non_finite_values_never_pass_a_chunk_check(robot, data):
    f = SafetyFilter.for_robot(robot)
    D = f.action_dim
    if f.kind == "quadrotor":
        state = {"pos": [0, 0, 1.0], "vel": [0, 0, 0], "rpy": [0, 0, 0]}
    else:
        state = {"q": _start_pose(f.profile, np.zeros(12)), "rpy": np.zeros(3)}
    f.reset(state, 0.0)
    chunk = data.draw(arrays(float, (data.draw(st.integers(1, 16)), D), elements=WILD))
    out = f.filter_chunk(chunk, state, 0.5)
    assert out.shape == chunk.shape and np.all(np.isfinite(out))


def test_tcp_never_leaves_the_workspace_box_under_adversarial_bang_bang_streams():
    """Wild commands build speed toward a face; the filter must keep 'inside and able to stop inside'."""
    rng = np.random.default_rng(7)
    for trial in range(80):
        f = SafetyFilter.for_robot("franka_panda")
        q0 = np.r_[f.profile.default_pose + rng.uniform(-0.05, 0.05, 7), 0.04]
        state = {"q": q0}
        f.reset(state, 0.0)
        outs = []
        for k in range(30):
            c = rng.choice([0.0, 2.0, -2.0, 1.0], size=8) if rng.random() < 0.7 else rng.uniform(-3, 3, 8)
            outs.append(f.filter(c, (k + 1) * f.dt, state))
            x = f.kin.tcp_position(outs[-1][:7])
            assert np.all(x >= f.env.box_min - 1e-9) and np.all(x <= f.env.box_max + 1e-9), (trial, k, x)
        _stream_ok(f, outs, q0)
