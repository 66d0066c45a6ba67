"""Quadrotor evaluation: baseline vs exported artifacts on held-out DR draws, through the safety filter.

Owns the quadrotor comparison the issue asks for: tracking RMSE and crash
rate of (a) the geometric baseline, (b) exported ONNX artifacts run by the
one runtime, ``policies.runtime.PolicyRuntime`` (the deployment path, no
torch; one runtime row and one ``sim2real.safety.SafetyFilter`` per drone in
the command path: thrust/rate bounds, tilt, geofence CBF, watchdog), on the
same held-out seeds. ``plant`` picks the simulator under the same task
harness: ``mujoco`` (``sim.quadrotor``) or ``pybullet`` (``sim.quad_pybullet``,
the independent implementation used for sim-to-sim).

The filter's state is built from the MEASURED observation (delayed, noisy),
as on the robot: ``pos = pos_error + reference``, ``vel``, ``rpy`` from the
attitude.

    .venv/bin/python -m policies.quad_eval --artifact runs/quad/residual.onnx [--episodes 100]
        [--no-safety | --safety ENVELOPE.yaml] [--plant mujoco|pybullet] [--out results.json]

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

from onboard.paths import REPO_ROOT
from policies.runtime import PolicyRuntime
from sim.quad_controllers import GeometricController
from sim.quad_env import QuadVecEnv, split_obs

HELD_OUT_SEED = 10_000
# The envelope the quadrotor evaluation uses by default: the figure-8 envelope (docs/quadrotor.md,
# "Safety envelope"). With the robot's default envelope the CBF binds on most figure-8 steps.
DEFAULT_QUAD_ENVELOPE = REPO_ROOT / "config" / "safety" / "crazyflie2x_figure8.yaml"


def rpy_from_rot6d(r6: np.ndarray) -> np.ndarray:
    """(n, 6) first two rotation columns -> (n, 3) roll, pitch, yaw (ZYX)."""
    c1, c2 = r6[:, 0:3], r6[:, 3:6]
    c3 = np.cross(c1, c2)
    roll = np.arctan2(c2[:, 2], c3[:, 2])
    pitch = -np.arcsin(np.clip(c1[:, 2], -1, 1))
    yaw = np.arctan2(c1[:, 1], c1[:, 0])
    return np.stack([roll, pitch, yaw], 1)


def filter_states(env, obs: np.ndarray) -> list[dict]:
    """Safety-filter states (one per drone) from the measured observation: pos, vel, rpy."""
    o = split_obs(obs)
    pref, _, _ = env.reference(env.t_step * env.dt_s)
    pos, rpy = o["pos_error_m"] + pref, rpy_from_rot6d(o["rot6d"].astype(float))
    vel = o["vel_m_s"].astype(float)
    return [{"pos": pos[i].astype(float), "vel": vel[i], "rpy": rpy[i]} for i in range(len(obs))]


QUAD_TASKS = {"quad_track": ("track", "figure8"), "quad_figure8": ("track", "figure8"),
              "quad_waypoints": ("track", "waypoints"), "quad_hover": ("hover", None)}


def resolve_task(name: str | None, contract=None) -> tuple[str, str | None]:
    """CLI task name -> (env task, trajectory). ``None``: the task the policy was trained on."""
    from onboard.errors import OnboardError
    if name is None:
        cfg = (contract.provenance.get("train_config") or {}) if contract is not None else {}
        return cfg.get("task", "track"), cfg.get("trajectory") if cfg.get("task", "track") == "track" else None
    key = name if name.startswith("quad_") else f"quad_{name}"
    if key not in QUAD_TASKS:
        raise OnboardError(f"unknown quadrotor task '{name}'", field="--task", fix=f"use one of {list(QUAD_TASKS)}")
    return QUAD_TASKS[key]


def envelope_for(contract, task: str) -> Path:
    """The envelope to evaluate with: the one the artifact's contract records, else the task's default."""
    rec = (contract.safety_envelope or {}).get("path") if contract is not None else None
    if rec:
        p = Path(rec) if Path(rec).is_absolute() else REPO_ROOT / rec
        if p.is_file():
            return p
    return DEFAULT_QUAD_ENVELOPE if task == "track" else REPO_ROOT / "config" / "safety" / "crazyflie2x.yaml"


def make_env(n, *, task, trajectory, dr, seed, plant="mujoco"):
    return QuadVecEnv(n, task=task, trajectory=trajectory, dr=dr, seed=seed, plant=plant)


def run_episodes(controller: str | Path, *, episodes=100, task="track", trajectory="figure8", dr=True,
                 seed=HELD_OUT_SEED, num_envs=50, safety=True, safety_path: str | Path | None = None,
                 plant: str = "mujoco", progress=None) -> dict:
    """``controller``: "baseline" or a path to an exported artifact. First episode per env slot is scored."""
    from onboard.spec import load_robot
    from sim2real.safety import SafetyFilter

    safety_path = Path(safety_path) if safety_path else envelope_for(None, task)
    rmse, crash, interventions = [], [], {}
    t0 = time.perf_counter()
    prof = load_robot("crazyflie2x")
    for r in range(math.ceil(episodes / num_envs)):
        n = min(num_envs, episodes - r * num_envs)
        env = make_env(n, task=task, trajectory=trajectory, dr=dr, seed=seed + r, plant=plant)
        obs, _ = env.reset()
        filters = [SafetyFilter.from_yaml(prof, safety_path, dt_s=env.dt_s) for _ in range(n)] if safety else None
        rt = None
        if controller == "baseline":
            ctl = GeometricController.for_env(env)
        else:
            rt = PolicyRuntime(controller, safety=filters, num_envs=n)
        t_s = np.zeros(n)
        states = filter_states(env, obs)
        if rt is not None:
            rt.reset_envs(None, states, 0.0)
        elif filters is not None:
            for f, st in zip(filters, states):
                f.reset(st, 0.0)
        got = np.zeros(n, bool)
        e_rmse, e_crash = np.zeros(n), np.zeros(n, bool)
        for _ in range(env.max_steps):
            states = filter_states(env, obs)
            if rt is not None:
                a = rt.to_normalized(rt.act_batch(split_obs(obs), t=t_s, states=states))
            else:
                a = ctl.act(split_obs(obs))
                if filters is not None:
                    cmd = env.action_to_command(a)
                    cmd = np.stack([f.filter(cmd[i], t_s[i], states[i]) for i, f in enumerate(filters)])
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
                t_s[idx] = 0.0
                new_states = filter_states(env, obs)
                if rt is not None:
                    rt.reset_envs(idx, [new_states[i] for i in idx], 0.0)
                else:
                    ctl.reset(idx)
                    if filters is not None:
                        for i in idx:
                            filters[i].reset(new_states[i], 0.0)
            if got.all():
                break
        rmse += e_rmse.tolist()
        crash += e_crash.tolist()
        if filters is not None:
            for f in filters:
                for k, v in f.summary()["counts"].items():
                    interventions[k] = interventions.get(k, 0) + int(v)
        if progress:
            progress(n)
    rmse, crash = np.asarray(rmse), np.asarray(crash)
    return {"controller": str(controller), "plant": plant, "task": task, "trajectory": trajectory,
            "episodes": len(rmse), "safety_filter": (str(safety_path) if safety else None),
            "rmse_m_mean": float(rmse.mean()), "rmse_m_median": float(np.median(rmse)),
            "rmse_m_p95": float(np.percentile(rmse, 95)), "crashes": int(crash.sum()),
            "crash_rate": float(crash.mean()), "safety_interventions": interventions,
            "safety_interventions_total": int(sum(interventions.values())),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", action="append", default=[], help="exported .onnx (repeatable)")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--trajectory", default="figure8")
    ap.add_argument("--plant", default="mujoco", choices=["mujoco", "pybullet"])
    ap.add_argument("--no-safety", action="store_true")
    ap.add_argument("--safety", default=None, help=f"envelope YAML (default {DEFAULT_QUAD_ENVELOPE.name})")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    rows = [run_episodes(c, episodes=a.episodes, trajectory=a.trajectory, safety=not a.no_safety,
                         safety_path=a.safety, plant=a.plant)
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
