"""Quadrotor env throughput: QuadVecEnv.step vs raw mj_step on the same world, same process.

Rows: raw ``mj_step`` (physics only), ``QuadrotorBatch.step`` (rate loop +
motors + forces + mj_step), and ``QuadVecEnv.step`` (one 100 Hz control step =
5 physics steps, FIFOs, reference, reward) for 1 and N drones, with and
without DR; and the independent PyBullet plant (``sim.quad_pybullet``, used by
``onboard sim2sim``). Ratios are against raw mj_step per drone-physics-step.

    .venv/bin/python -m bench.bench_quad_env [--n 64] [--seconds 2]
"""
from __future__ import annotations

import argparse
import time

import mujoco
import numpy as np

from bench.record import record
from sim.quad_controllers import GeometricController
from sim.quad_env import QuadVecEnv, split_obs
from sim.quadrotor import QuadrotorBatch


def _rate(fn, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            fn()
        n += 20
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    raw_per_drone = None
    for n in (1, a.n):
        q = QuadrotorBatch(n)
        q.reset_drones(np.arange(n), np.tile([0, 0, 1.0], (n, 1)))
        r = _rate(lambda: mujoco.mj_step(q.model, q.data), a.seconds)
        if n == 1:
            raw_per_drone = r
        rows.append({"what": f"raw mj_step, {n} drone(s)", "calls_per_s": r, "drone_physics_steps_per_s": r * n,
                     "vs_raw_1": r * n / raw_per_drone, "env_steps_per_s": ""})
        r = _rate(q.step, a.seconds)
        rows.append({"what": f"QuadrotorBatch.step (rate loop+motors+forces), {n}", "calls_per_s": r,
                     "drone_physics_steps_per_s": r * n, "vs_raw_1": r * n / raw_per_drone, "env_steps_per_s": ""})
    for n, dr in ((1, False), (a.n, False), (a.n, True)):
        env = QuadVecEnv(n, task="track", dr=dr, seed=0)
        ctl = GeometricController.for_env(env)
        obs = [env.reset()[0]]
        hover = np.tile(env.hover_action, (n, 1))

        def step():
            obs[0] = env.step(hover)[0]
        r = _rate(step, a.seconds)
        rows.append({"what": f"QuadVecEnv.step, {n} env(s), dr={dr}", "calls_per_s": r,
                     "drone_physics_steps_per_s": r * n * env.substeps,
                     "vs_raw_1": r * n * env.substeps / raw_per_drone, "env_steps_per_s": r * n})

        def step_ctl():
            obs[0] = env.step(ctl.act(split_obs(obs[0])))[0]
        if n > 1:
            r = _rate(step_ctl, a.seconds)
            rows.append({"what": f"QuadVecEnv.step + GeometricController, {n}, dr={dr}", "calls_per_s": r,
                         "drone_physics_steps_per_s": r * n * env.substeps,
                         "vs_raw_1": r * n * env.substeps / raw_per_drone, "env_steps_per_s": r * n})
    from sim.quad_pybullet import PyBulletQuadBatch   # the independent plant used for sim-to-sim
    for n in (1, a.n):
        q = PyBulletQuadBatch(n)
        q.reset_drones(np.arange(n), np.tile([0, 0, 1.0], (n, 1)) + np.arange(n)[:, None] * [3.0, 0, 0])
        r = _rate(q.step, a.seconds)
        rows.append({"what": f"PyBulletQuadBatch.step (own rotor/motor/rate loop), {n}", "calls_per_s": r,
                     "drone_physics_steps_per_s": r * n, "vs_raw_1": r * n / raw_per_drone, "env_steps_per_s": ""})
        q.close()
    env = QuadVecEnv(a.n, task="track", dr=True, seed=0, plant="pybullet")
    obs = [env.reset()[0]]
    ctl = GeometricController.for_env(env)

    def step_pb():
        obs[0] = env.step(ctl.act(split_obs(obs[0])))[0]
    r = _rate(step_pb, a.seconds)
    rows.append({"what": f"QuadVecEnv(plant=pybullet).step + GeometricController, {a.n}, dr=True", "calls_per_s": r,
                 "drone_physics_steps_per_s": r * a.n * env.substeps,
                 "vs_raw_1": r * a.n * env.substeps / raw_per_drone, "env_steps_per_s": r * a.n})
    record("Quadrotor env steps/s vs raw mj_step", rows, write=not a.no_write,
           notes="env step = one 100 Hz control step = 5 physics steps at 500 Hz; the CPU is shared, "
                 "so read the ratios, not the absolute rates.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
