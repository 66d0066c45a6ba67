"""ArmEnv.step (DR, latency FIFO, observation building) vs a raw mj_step loop, same process.

Budget (DESIGN §8): env step overhead <= 1.3x raw ``mj_step`` over the same
number of physics steps. ``--experts N`` also measures each scripted expert's
success rate under DR over N episodes (the figure the tests only sample).

    .venv/bin/python bench/bench_env_step.py [--steps 2000] [--experts 40] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from bench.record import record  # noqa: E402
from sim.arm_env import ArmEnv  # noqa: E402
from sim.experts import make_expert, run_episode  # noqa: E402


def _hold_actions(env, n, seed=0):
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    q = obs["joint_pos"].astype(float)
    return [np.concatenate([q + 0.05 * np.sin(0.1 * k + rng.normal(0, 0.01, 7)), [0.04]]) for k in range(n)]


def bench_step(task: str, steps: int, repeats: int = 5) -> dict:
    env = ArmEnv(task, dr=True, seed=0)
    actions = _hold_actions(env, steps)
    env_best = raw_best = np.inf
    for _ in range(repeats):
        env.reset(seed=0)
        t = time.perf_counter()
        for a in actions:
            env.step(a)
        env_best = min(env_best, time.perf_counter() - t)

        # Baseline: the same model and the same number of physics steps, ctrl set directly.
        env.reset(seed=0)
        m, d, ix, n_sub = env.model, env.data, env.ix, env.n_substeps
        t = time.perf_counter()
        for a in actions:
            d.ctrl[ix.arm_actuator_ids] = a[:7]
            d.ctrl[ix.gripper_actuator_id] = a[7]
            mujoco.mj_step(m, d, nstep=n_sub)
        raw_best = min(raw_best, time.perf_counter() - t)
    return {"task": task, "control steps": steps, "physics steps/control": env.n_substeps,
            "env step [us]": 1e6 * env_best / steps, "raw mj_step x50 [us]": 1e6 * raw_best / steps,
            "ratio": env_best / raw_best, "env steps/s": steps / env_best}


def bench_experts(task: str, episodes: int) -> dict:
    env = ArmEnv(task, dr=True, seed=0)
    expert = make_expert(env)
    wins, steps, routes = 0, 0, {}
    t = time.perf_counter()
    for i in range(episodes):
        r = run_episode(env, expert, seed=10_000 + i)
        wins += r["success"]
        steps += r["steps"]
        routes[r["route"]] = routes.get(r["route"], 0) + 1
    wall = time.perf_counter() - t
    return {"task": task, "episodes": episodes, "success": f"{wins}/{episodes}",
            "success rate": wins / episodes, "mean steps": steps / episodes,
            "episodes/s (with expert IK)": episodes / wall,
            "routes": ", ".join(f"{k}:{v}" for k, v in routes.items() if k) or "-"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--experts", type=int, default=0, help="episodes per task for the expert success rate")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    rows = [bench_step(task, args.steps) for task in ("push", "pick_place")]
    record("ArmEnv.step vs raw mj_step", rows, write=not args.no_write,
           notes="ratio = env step time / raw mj_step(nstep=50) time; budget <= 1.3 (DESIGN §8).")
    if args.experts:
        rows = [bench_experts(task, args.experts) for task in ("reach", "push", "pick_place")]
        record("Scripted expert success under DR", rows, write=not args.no_write,
               notes="ArmEnv(dr=True), seeds 10000.., success = info['success'] before the time limit.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
