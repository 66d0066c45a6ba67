"""Humanoid env throughput: HumanoidVecEnv.step vs raw mj_step on the same batched world, same process.

Rows: raw ``mj_step`` on the N-robot world, the 500 Hz PD + ``mj_step`` loop
alone, and ``HumanoidVecEnv.step`` (one 50 Hz step = 10 physics steps with PD,
delay FIFOs, pushes, observation history, privileged observation and reward),
without and with DR. Ratios are against raw mj_step per robot-physics-step
(DESIGN §8 budget: env overhead <= 1.3x).

    .venv/bin/python -m bench.bench_humanoid_env [--n 64] [--seconds 2]
"""
from __future__ import annotations

import argparse
import time

import mujoco
import numpy as np

from bench.record import record
from sim.humanoid_env import HumanoidVecEnv


def _rate(fn, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(5):
            fn()
        n += 5
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    n = a.n
    env = HumanoidVecEnv(n, task="stand", dr=False, seed=0)
    env.reset()
    m, d = env.model, env.data
    raw = _rate(lambda: mujoco.mj_step(m, d), a.seconds)
    env.reset()

    def pd_step():
        q = env.qpos[:, 7:]
        env.ctrl[:] = np.clip(env.kp * (env.default_pose - q) - env.kd * env.qvel[:, 6:],
                              -env.desc.torque_limit, env.desc.torque_limit)
        mujoco.mj_step(m, d)
    pd = _rate(pd_step, a.seconds)
    rows = [{"what": f"raw mj_step, {n} robots", "robot_physics_steps_per_s": raw * n, "vs_raw": 1.0,
             "env_steps_per_s": ""},
            {"what": f"numpy PD + mj_step, {n} robots", "robot_physics_steps_per_s": pd * n, "vs_raw": raw / pd,
             "env_steps_per_s": ""}]
    for dr in (False, True):
        env = HumanoidVecEnv(n, task="stand", dr=dr, seed=0)
        env.reset()
        zero = np.zeros((n, 12))
        r = _rate(lambda: env.step(zero), a.seconds)
        per_phys = r * env.substeps
        rows.append({"what": f"HumanoidVecEnv.step ({'DR' if dr else 'no DR'}), {n} robots",
                     "robot_physics_steps_per_s": per_phys * n, "vs_raw": raw / per_phys,
                     "env_steps_per_s": r * n})
    record("Humanoid env step vs raw mj_step (G1 legs, 500 Hz physics, 50 Hz env)", rows,
           command=f".venv/bin/python -m bench.bench_humanoid_env --n {n} --seconds {a.seconds}",
           write=not a.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
