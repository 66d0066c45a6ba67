"""Quadrotor evaluation: baseline vs exported artifacts on held-out DR draws, through the safety filter.

Owns the quadrotor comparison the issue asks for: tracking RMSE and crash
rate of (a) the geometric baseline, (b) exported ONNX artifacts run by
``policies.mlp_runtime.MLPArtifact`` (the deployment path, no torch), each
optionally with one ``sim2real.safety.SafetyFilter`` per drone in the
command path (thrust/rate bounds, tilt, geofence CBF, watchdog), on the same
held-out seeds.

The filter's state is built from the MEASURED observation (delayed, noisy),
as on the robot: ``pos = pos_error + reference``, ``vel``, ``rpy`` from the
attitude.

    .venv/bin/python -m policies.quad_eval --artifact runs/quad/residual.onnx [--episodes 100]
        [--no-safety | --safety ENVELOPE.yaml] [--out results.json]

Imports numpy, onnxruntime (via the runtime), sim and sim2real. Never torch.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from policies.mlp_runtime import MLPArtifact
from sim.quad_controllers import GeometricController
from sim.quad_env import QuadVecEnv, split_obs

HELD_OUT_SEED = 10_000


def rpy_from_rot6d(r6: np.ndarray) -> np.ndarray:
    """(n, 6) first two rotation columns -> (n, 3) roll, pitch, yaw (ZYX)."""
    c1, c2 = r6[:, 0:3], r6[:, 3:6]
    c3 = np.cross(c1, c2)
    roll = np.arctan2(c2[:, 2], c3[:, 2])
    pitch = -np.arcsin(np.clip(c1[:, 2], -1, 1))
    yaw = np.arctan2(c1[:, 1], c1[:, 0])
    return np.stack([roll, pitch, yaw], 1)


def run_episodes(controller: str | Path, *, episodes=100, task="track", trajectory="figure8", dr=True,
                 seed=HELD_OUT_SEED, num_envs=50, safety=True, safety_path: str | Path | None = None) -> dict:
    """``controller``: "baseline" or a path to an exported artifact. First episode per env slot is scored."""
    rmse, crash, interventions = [], [], {}
    t0 = time.perf_counter()
    for r in range(math.ceil(episodes / num_envs)):
        n = min(num_envs, episodes - r * num_envs)
        env = QuadVecEnv(n, task=task, trajectory=trajectory, dr=dr, seed=seed + r)
        obs, _ = env.reset()
        if controller == "baseline":
            ctl = GeometricController.for_env(env)
            act = lambda o: ctl.act(split_obs(o))          # noqa: E731
            reset = ctl.reset
        else:
            art = MLPArtifact(controller)
            art.reset(n)
            act = lambda o: art.act_normalized(split_obs(o))   # noqa: E731
            reset = lambda idx: art.reset(n, idx)           # noqa: E731
        filters = None
        if safety:
            from onboard.spec import load_robot
            from sim2real.safety import SafetyFilter
            prof = load_robot("crazyflie2x")
            filters = [SafetyFilter.from_yaml(prof, safety_path, dt_s=env.dt_s) if safety_path
                       else SafetyFilter.for_robot(prof, dt_s=env.dt_s) for _ in range(n)]
        got = np.zeros(n, bool)
        e_rmse, e_crash = np.zeros(n), np.zeros(n, bool)
        t_s = np.zeros(n)
        for _ in range(env.max_steps):
            a = act(obs)
            if filters is not None:
                cmd = env.action_to_command(a)
                o = split_obs(obs)
                pref, _, _ = env.reference(env.t_step * env.dt_s)
                pos, rpy = o["pos_error_m"] + pref, rpy_from_rot6d(o["rot6d"].astype(float))
                for i, f in enumerate(filters):
                    st = {"pos": pos[i].astype(float), "vel": o["vel_m_s"][i].astype(float), "rpy": rpy[i]}
                    if t_s[i] == 0.0:
                        f.reset(st, 0.0)
                    cmd[i] = f.filter(cmd[i], t_s[i], st)
                lo = np.r_[0.0, -np.asarray(env.action_spec["physical_max"][1:])]
                hi = np.asarray(env.action_spec["physical_max"])
                a = 2 * (cmd - lo) / (hi - lo) - 1
            obs, _, _, _, info = env.step(a)
            t_s += env.dt_s
            if "done_idx" in info:
                idx = info["done_idx"]
                for j, i in enumerate(idx):
                    if not got[i]:
                        got[i], e_rmse[i], e_crash[i] = True, info["episode_rmse_m"][j], info["crash"][i]
                reset(idx)
                t_s[idx] = 0.0
        rmse += e_rmse.tolist()
        crash += e_crash.tolist()
        if filters is not None:
            for f in filters:
                for k, v in f.summary()["counts"].items():
                    interventions[k] = interventions.get(k, 0) + int(v)
    rmse, crash = np.asarray(rmse), np.asarray(crash)
    return {"controller": str(controller), "episodes": len(rmse),
            "safety_filter": (str(safety_path or "config/safety/crazyflie2x.yaml") if safety else None),
            "rmse_m_mean": float(rmse.mean()), "rmse_m_median": float(np.median(rmse)),
            "rmse_m_p95": float(np.percentile(rmse, 95)), "crashes": int(crash.sum()),
            "crash_rate": float(crash.mean()), "safety_interventions": interventions,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", action="append", default=[], help="exported .onnx (repeatable)")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--trajectory", default="figure8")
    ap.add_argument("--no-safety", action="store_true")
    ap.add_argument("--safety", default=None, help="envelope YAML (default config/safety/crazyflie2x.yaml)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    rows = [run_episodes(c, episodes=a.episodes, trajectory=a.trajectory, safety=not a.no_safety,
                         safety_path=a.safety)
            for c in ["baseline", *a.artifact]]
    base = rows[0]["rmse_m_mean"]
    for r in rows:
        r["rmse_vs_baseline"] = r["rmse_m_mean"] / base
        print(json.dumps(r))
    if a.out:
        p = Path(a.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2))
        tmp.replace(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
