"""Cost per step of the safety filter's layers, against a bare numpy clip in the same run.

Targets (issue 3): limits + box <= 50 us, CBF-QP <= 1 ms, on 2 cores.

    .venv/bin/python bench/bench_safety.py [--steps 3000] [--no-write]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import record  # noqa: E402
from onboard.config import load_yaml  # noqa: E402
from onboard.paths import config_dir  # noqa: E402
from onboard.spec import load_robot  # noqa: E402
from sim2real.safety import SafetyFilter  # noqa: E402
from sim2real.safety_envelope import load_envelope  # noqa: E402


def _per_step_us(fn, n):
    for _ in range(min(200, n)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _panda(workspace: bool, cbf: bool):
    p = load_robot("franka_panda")
    doc = copy.deepcopy(load_yaml(config_dir() / "safety" / "franka_panda.yaml"))
    doc["workspace"]["enabled"] = workspace
    doc["cbf"]["enabled"] = cbf
    doc["ramp_in"] = {"duration_s": 0.0}
    doc["watchdog"].update(state_timeout_s=1e9, command_timeout_s=1e9)
    f = SafetyFilter(p, load_envelope(p, doc))
    q0 = np.r_[p.default_pose, 0.04]
    f.reset({"q": q0}, 0.0)
    return f, q0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    n = args.steps
    rng = np.random.default_rng(0)
    rows = []

    p = load_robot("franka_panda")
    q0 = np.r_[p.default_pose, 0.04]
    lo, hi = np.r_[p.limits.position[:, 0], 0.0], np.r_[p.limits.position[:, 1], 0.08]
    # A smooth stream inside every limit (the usual case) and a noisy one clamped at every step.
    ts = np.arange(200) * 0.1
    smooth = q0 + 0.2 * np.sin(2 * np.pi * 0.2 * ts)[:, None] * np.r_[np.ones(7), 0.0]
    wiggle = q0 + 0.02 * rng.standard_normal((64, 8))
    base = _per_step_us(lambda: np.clip(wiggle[0], lo, hi), n)
    rows.append({"layer": "baseline: np.clip of one (8,) command", "us_per_step": base, "ratio": 1.0,
                 "target_us": ""})

    def stream(f, cmds):
        state = {"t": 0.0, "k": 0}

        def step():
            state["t"] += f.dt
            state["k"] += 1
            f.filter(cmds[state["k"] % len(cmds)], state["t"])
        return step

    f, _ = _panda(False, False)
    us = _per_step_us(stream(f, smooth), n)
    rows.append({"layer": "arm: non-finite + joint limits (pos/vel/acc/jerk) + gripper", "us_per_step": us,
                 "ratio": us / base, "target_us": ""})
    f, _ = _panda(False, False)
    us = _per_step_us(stream(f, wiggle), n)
    rows.append({"layer": "arm: joint limits, clamping + logging every step (noisy stream)", "us_per_step": us,
                 "ratio": us / base, "target_us": ""})
    f, _ = _panda(True, False)
    us = _per_step_us(stream(f, smooth), n)
    rows.append({"layer": "arm: limits + workspace box (FK)", "us_per_step": us, "ratio": us / base,
                 "target_us": 50})
    f, _ = _panda(True, True)
    us = _per_step_us(stream(f, smooth), n)
    rows.append({"layer": "arm: limits + box + CBF, no conflict (identity shortcut)", "us_per_step": us,
                 "ratio": us / base, "target_us": ""})
    # CBF-QP that has to solve: the TCP 2 cm above the floor face, commanded down fast.
    f, _ = _panda(True, True)
    q_low = q0.copy()
    q_low[1] += 1.5
    q_low[3] += 0.5
    x, J = f.kin.position_jacobian(q_low[:7])
    qd_down = np.linalg.pinv(J) @ np.array([0, 0, -0.5])
    lim = p.limits.velocity
    solves = [0]

    def arm_qp():
        f.arm_cbf.filter_velocity(q_low[:7], qd_down, -lim, lim)
        solves[0] += f.arm_cbf.qp.last_status != "identity"
    us = _per_step_us(arm_qp, max(n // 3, 100))
    rows.append({"layer": f"arm: CBF-QP solve (OSQP, 7 vars + 6 slacks; status {f.arm_cbf.qp.last_status})",
                 "us_per_step": us, "ratio": us / base, "target_us": 1000})

    g = SafetyFilter.for_robot("g1_12dof")
    g.env.state_timeout_s = g.env.command_timeout_s = 1e9
    q = load_robot("g1_12dof").default_pose
    g.reset({"q": q, "rpy": np.zeros(3)}, 0.0)
    gw = q + 0.1 * np.sin(2 * np.pi * 1.0 * np.arange(200) * 0.02)[:, None] * np.ones(12)
    us = _per_step_us(stream(g, gw), n)
    rows.append({"layer": "humanoid: limits + attitude", "us_per_step": us, "ratio": us / base, "target_us": 50})

    c = SafetyFilter.for_robot("crazyflie2x")
    c.env.state_timeout_s = c.env.command_timeout_s = 1e9
    st = {"pos": np.array([0.0, 0.0, 1.9]), "vel": np.array([0.0, 0.0, 0.8]), "rpy": np.zeros(3)}
    c.reset(st, 0.0)
    cmds = np.tile([0.5, 0.0, 0.0, 0.0], (64, 1))
    us = _per_step_us(stream(c, cmds), max(n // 3, 100))
    rows.append({"layer": f"quadrotor: bounds + geofence CBF-QP solve + tilt (status {c.geofence_cbf.qp.last_status})",
                 "us_per_step": us, "ratio": us / base, "target_us": 1000})
    record("Safety filter: cost per step", rows, write=not args.no_write,
           command="python bench/bench_safety.py",
           notes="ratio = time / the bare np.clip baseline in the same run. CBF rows solve a real conflict "
                 "(OSQP, one problem object reused with updated values).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
