"""Humanoid env throughput: HumanoidVecEnv.step vs raw mj_step on the same batched world, same process.

Rows: raw ``mj_step`` on the N-robot world, the 500 Hz PD + ``mj_step`` loop
alone, and ``HumanoidVecEnv.step`` (one 50 Hz step = 10 physics steps with PD,
delay FIFOs, pushes, observation history, privileged observation and reward),
without and with DR. Ratios are against raw mj_step per robot-physics-step
(DESIGN §8 budget: env overhead <= 1.3x).

A second table (``--workers 2``) measures what splitting the robots across
processes buys: ``ShardedHumanoidEnv.step`` against ``HumanoidVecEnv.step``
(DR, same robots), and PPO training throughput (``--workers 1`` vs ``2``, a
short run each, policy inference and updates included). Needs idle cores.

A third (``--physics-dt 0.005``) measures the coarser training sim: ``HumanoidVecEnv.step``
and PPO training (push-recovery actor, 2 processes) at that physics step against the
2 ms reference, same robots.

A fourth (``--async-rollout``) measures PPO training with the push-recovery recipe at 5 ms
physics two ways on two processes: ``--workers 2`` (both step robots, then both wait for the
update) against ``--async-rollout`` (one steps robots while the other updates). Rates are
taken between the first and last log rows, so process start-up is left out of both.

    .venv/bin/python -m bench.bench_humanoid_env [--n 64] [--seconds 2] [--workers 2] [--physics-dt 0.005]
                                                 [--async-rollout]
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
    ap.add_argument("--workers", type=int, default=1, help="> 1: also compare this many env processes with one")
    ap.add_argument("--train-updates", type=int, default=40, help="PPO updates per training-throughput row")
    ap.add_argument("--physics-dt", type=float, default=0.0,
                    help="> 0: also compare a training sim at this physics step with the 2 ms reference (only)")
    ap.add_argument("--async-rollout", action="store_true",
                    help="only: PPO training (recipe, 5 ms) with --workers 2 against --async-rollout")
    a = ap.parse_args(argv)
    n = a.n
    if a.async_rollout:
        record(f"Humanoid: PPO training, --async-rollout vs --workers 2 (recipe, 5 ms physics, {n} robots)",
               _async_rows(n, a), command=f".venv/bin/python -m bench.bench_humanoid_env --n {n} --async-rollout "
                                          f"--train-updates {a.train_updates}", write=not a.no_write)
        return 0
    if a.physics_dt > 0:
        record(f"Humanoid: {a.physics_dt * 1e3:g} ms training physics vs the 2 ms reference (G1 legs, DR, {n} robots)",
               _physics_dt_rows(n, a), command=f".venv/bin/python -m bench.bench_humanoid_env --n {n} --seconds "
                                              f"{a.seconds} --physics-dt {a.physics_dt}", write=not a.no_write)
        return 0
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
    if a.workers > 1:
        record(f"Humanoid: {a.workers} processes vs 1 (G1 legs, DR, {n} robots)", _workers_rows(n, a),
               command=f".venv/bin/python -m bench.bench_humanoid_env --n {n} --seconds {a.seconds} "
                       f"--workers {a.workers}", write=not a.no_write)
    return 0


RECIPE = dict(step_in_place=True, gait_reference=0.3, force_step=True, symmetry=True, estimator=True,
              placement_gain=0.4, gantry_starts=0.3)       # the push-recovery recipe's actor and env


def _physics_dt_rows(n: int, a) -> list[dict]:
    from policies.humanoid_ppo import HumanoidPPOConfig, train
    zero = np.zeros((n, 12))
    rows, base = [], {}
    for dt in (0.002, a.physics_dt):
        env = HumanoidVecEnv(n, task="stand", dr=True, seed=0, physics_dt_s=dt)
        env.reset()
        r = _rate(lambda: env.step(zero), a.seconds)
        base.setdefault("env", r)
        rows.append({"what": f"HumanoidVecEnv.step, {dt * 1e3:g} ms physics ({env.substeps} steps), 1 process",
                     "env_steps_per_s": r * n, "vs_2_ms": r / base["env"]})
    for dt in (0.002, a.physics_dt):
        cfg = HumanoidPPOConfig(num_envs=n, total_steps=n * 24 * a.train_updates, workers=2, physics_dt_s=dt,
                                log_every=10**9, **RECIPE)
        res = train(cfg, log=lambda line: None)
        r = res.env_steps / res.wall_s
        base.setdefault("train", r)
        rows.append({"what": f"PPO training, push-recovery actor, 2 processes, {dt * 1e3:g} ms physics",
                     "env_steps_per_s": r, "vs_2_ms": r / base["train"]})
    return rows


def _async_rows(n: int, a) -> list[dict]:
    from policies.humanoid_ppo import HumanoidPPOConfig, train
    rows, base = [], None
    for name, kw in (("--workers 2 (synchronous)", dict(workers=2)),
                     ("--async-rollout (policy lag 1)", dict(async_rollout=True))):
        cfg = HumanoidPPOConfig(num_envs=n, total_steps=n * 24 * a.train_updates, physics_dt_s=0.005,
                                log_every=10, **RECIPE, **kw)
        h = train(cfg, log=lambda line: None).history
        if len(h) < 2:
            raise SystemExit("too few log rows: pass --train-updates 30 or more")
        upd = h[-1]["update"] - h[0]["update"]
        r = (h[-1]["env_steps"] - h[0]["env_steps"]) / (h[-1]["wall_s"] - h[0]["wall_s"])
        base = base or r
        rows.append({"what": f"PPO training, push-recovery recipe, 5 ms physics, {name}", "env_steps_per_s": r,
                     "vs_workers_2": r / base,
                     "learner_ms_per_update": 1e3 * sum(x["learn_s"] for x in h[1:]) / upd,
                     "worker_rollout_ms_per_update": (1e3 * sum(x["rollout_s"] for x in h[1:]) / upd
                                                      if "rollout_s" in h[-1] else "")})
    return rows


def _workers_rows(n: int, a) -> list[dict]:
    from policies.humanoid_ppo import HumanoidPPOConfig, train
    from sim.humanoid_env import ShardedHumanoidEnv
    zero = np.zeros((n, 12))
    one = HumanoidVecEnv(n, task="stand", dr=True, seed=0)
    one.reset()
    base = _rate(lambda: one.step(zero), a.seconds)
    many = ShardedHumanoidEnv(n, shards=a.workers, task="stand", dr=True, seed=0)
    try:
        many.reset()
        split = _rate(lambda: many.step(zero), a.seconds)
    finally:
        many.close()
    rows = [{"what": "HumanoidVecEnv.step, 1 process", "env_steps_per_s": base * n, "vs_1_process": 1.0},
            {"what": f"ShardedHumanoidEnv.step, {a.workers} processes", "env_steps_per_s": split * n,
             "vs_1_process": split / base}]
    # PPO training throughput with the push-recovery recipe's actor (gait reference, mirror symmetry, velocity
    # estimator, placement prior): 1 process; w processes with the update on one torch thread; and w processes
    # with the update on w threads (update_threads=0: the env workers idle during the update).
    rates = {}
    for w, ut in ((1, 1), (a.workers, 1), (a.workers, 0)):
        cfg = HumanoidPPOConfig(num_envs=n, total_steps=n * 24 * a.train_updates, workers=w, update_threads=ut,
                                log_every=10**9, **RECIPE)
        res = train(cfg, log=lambda line: None)
        rates[(w, ut)] = res.env_steps / res.wall_s
    for (w, ut), r in rates.items():
        threads = ut or w
        rows.append({"what": f"PPO training, push-recovery actor, workers={w}, update threads={threads}",
                     "env_steps_per_s": r, "vs_1_process": r / rates[(1, 1)]})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
