"""Closed-loop evaluation of a VLA artifact on the language splits, through the runtime and the safety filter.

Top-layer glue like ``onboard.evaluation``: ``sim.lang_env.LangArmEnv`` renders
the cameras the contract names, ``policies.vla.runtime.VLARuntime`` runs the
three ONNX graphs (text encoder once per instruction, observation encoder per
chunk, action head K times) and ``sim2real.safety.SafetyFilter`` filters every
command, as in the ROS 2 policy node.

Splits (``sim.lang_env.SPLITS``): ``seen`` (training templates and
combinations, evaluation seeds), ``paraphrase`` (sentences never used in
training), ``unseen_combo`` (colour/position combinations held out of
training). Each split reports successes, the rate with a 95% Wilson interval
and a breakdown by task kind; a bar plot shows the splits side by side.

Grounding is measured apart from success: at the end of each episode the cube
that moved most from its start (by more than ``MOVED_M``) is the one the policy
acted on; ``right_cube`` says whether it is the named one (``None``: no cube
moved). A policy that executes the motion well on the wrong cube scores low
success and low right-cube rate; one that finds the cube but fumbles it scores
a high right-cube rate.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from onboard.errors import OnboardError
from onboard.evaluation import _jsonable, _state_from_obs, _write_json_atomic, plot_success, wilson_interval, write_mp4

EVAL_SPLITS = ("seen", "paraphrase", "unseen_combo")
MOVED_M = 0.02          # a cube displaced by more than this was acted on


def _cameras_of(contract) -> tuple[tuple[str, ...], tuple[int, int]]:
    keys = [k for k in contract.observation["keys"] if len(k["shape"]) == 3]
    cams = tuple(k["name"].split(".", 1)[1] for k in keys if k["name"].startswith("image."))
    if not cams:
        raise OnboardError("the contract lists no camera images", field="observation.keys",
                           fix="evaluate a VLA artifact (exported by `onboard export` from a vla checkpoint)")
    h, w = keys[0]["shape"][:2]
    return cams, (int(h), int(w))


def run_split(rt, split: str, *, episodes: int, seed: int, dr: bool, video_episodes: int = 0,
              progress: bool = True, safety=None) -> dict:
    """Episodes ``seed .. seed+episodes-1`` of one split. Returns the split's row (and video frames)."""
    from tqdm import tqdm

    from sim.lang_env import LangArmEnv

    cams, size = _cameras_of(rt.contract)
    env = LangArmEnv(split=split, dr=dr, seed=seed, cameras=cams, image_size=size)
    dt_s = 1.0 / rt.contract.control_rate_hz
    per_episode, videos = [], []
    successes = 0
    t0 = time.perf_counter()
    bar = tqdm(range(episodes), desc=f"eval vla {split}", unit="ep", disable=not progress)
    try:
        for ep in bar:
            obs, info = env.reset(seed=seed + ep)
            rt.set_instruction(info["instruction"])
            state = _state_from_obs(obs)
            rt.reset(state=state, t=0.0)
            start = env.cube_positions()
            frames = [] if ep < video_episodes else None
            success, steps, t, done = False, 0, 0.0, False
            while not done:
                if frames is not None:
                    frames.append(np.concatenate([obs[f"image.{c}"] for c in cams], axis=1))
                cmd = rt.act(obs, t=t, state=state)
                obs, _r, terminated, truncated, step_info = env.step(cmd)
                state = _state_from_obs(obs)
                steps += 1
                t += dt_s
                success = success or bool(step_info.get("success", False))
                done = terminated or truncated or success
            if frames is not None:
                videos.append((ep, frames))
            successes += int(success)
            moved = np.linalg.norm(env.cube_positions() - start, axis=1)
            acted = int(np.argmax(moved)) if moved.max() > MOVED_M else None
            per_episode.append({"episode": ep, "seed": seed + ep, "success": success, "steps": steps,
                                "instruction": info["instruction"], "task": info.get("task"),
                                "colour": info.get("colour"), "moved_cube": acted, "named_cube": int(env.goal_cube),
                                "right_cube": None if acted is None else acted == int(env.goal_cube)})
            bar.set_postfix(success=f"{successes}/{ep + 1}")
    finally:
        env.close()
    lo, hi = wilson_interval(successes, episodes)
    by_task: dict = {}
    for e in per_episode:
        b = by_task.setdefault(str(e["task"]), [0, 0])
        b[0] += int(e["success"])
        b[1] += 1
    right = sum(1 for e in per_episode if e["right_cube"])
    return {"split": split, "successes": successes, "episodes": episodes, "success_rate": successes / episodes,
            "ci95": (lo, hi), "right_cube": right, "right_cube_ci95": wilson_interval(right, episodes),
            "no_cube_moved": sum(1 for e in per_episode if e["right_cube"] is None), "by_task": {k: {"successes": s, "episodes": n} for k, (s, n) in by_task.items()},
            "per_episode": per_episode, "wall_s": time.perf_counter() - t0, "_videos": videos}


def evaluate_vla(artifact: str | Path, *, splits=EVAL_SPLITS, episodes: int = 50, seed: int = 1000,
                 dr: bool = True, num_steps: int | None = None, safety: bool = True, video_episodes: int = 1,
                 out_dir: str | Path | None = None, progress: bool = True) -> dict:
    from policies.vla.runtime import VLARuntime
    from sim.lang_env import SPLITS
    from sim2real.safety import SafetyFilter

    bad = [s for s in splits if s not in SPLITS or s == "train"]
    if bad:
        raise OnboardError(f"unknown evaluation split(s) {bad}", field="--split",
                           fix=f"use a comma list of {list(EVAL_SPLITS)}")
    if episodes < 1:
        raise OnboardError("must be at least 1", field="--episodes", fix="pass --episodes N with N >= 1")
    rt = VLARuntime(artifact, num_steps=num_steps)
    dt_s = 1.0 / rt.contract.control_rate_hz
    filt = SafetyFilter.for_robot(rt.contract.robot["name"], dt_s=dt_s) if safety else None
    rt.safety = filt
    rows = []
    for split in splits:
        rows.append(run_split(rt, split, episodes=episodes, seed=seed, dr=dr, video_episodes=video_episodes,
                              progress=progress))
    report = {"artifact": str(artifact), "episodes_per_split": episodes, "seeds": [seed, seed + episodes - 1],
              "dr": dr, "safety": safety, "num_steps": getattr(rt, "num_steps", None),
              "interventions": filt.summary() if filt is not None else {},
              "inference_ms": rt.timing_summary() if hasattr(rt, "timing_summary") else {},
              "splits": [{k: v for k, v in r.items() if k != "_videos"} for r in rows]}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for r in rows:
            for ep, frames in r["_videos"]:
                write_mp4(out / f"{r['split']}_episode_{ep:03d}.mp4", frames, fps=rt.contract.control_rate_hz)
        plot_success([{"label": r["split"], "rate": r["success_rate"], "lo": r["ci95"][0], "hi": r["ci95"][1]}
                      for r in rows], out / "eval_vla_splits.png",
                     f"{Path(artifact).parent.name}: success by split ({episodes} episodes each, "
                     f"DR {'on' if dr else 'off'})")
        _write_json_atomic(out / "eval_report.json", _jsonable(report))
        report["out_dir"] = str(out)
    return report


def print_report(report: dict) -> None:
    print(f"[eval] vla {Path(report['artifact']).parent.name} | DR {'on' if report['dr'] else 'off'} | safety "
          f"{'on' if report['safety'] else 'off'} | {report['num_steps']} flow steps | seeds "
          f"{report['seeds'][0]}..{report['seeds'][1]}")
    print(f"{'split':<14}{'success':>10}{'rate':>8}{'95% CI':>16}{'right cube':>12}{'none moved':>12}   by task")
    for r in report["splits"]:
        lo, hi = r["ci95"]
        tasks = ", ".join(f"{k} {v['successes']}/{v['episodes']}" for k, v in sorted(r["by_task"].items()))
        print(f"{r['split']:<14}{r['successes']:>5}/{r['episodes']:<4}{r['success_rate']:>8.1%}"
              f"{lo:>8.1%}-{hi:<7.1%}{r['right_cube']:>7}/{r['episodes']:<4}{r['no_cube_moved']:>12}   {tasks}")
    ints = report.get("interventions") or {}
    if ints:
        print(f"[eval] safety interventions {ints.get('total', 0)}"
              + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(ints.get('counts', {}).items())) + ")"
                 if ints.get("counts") else ""))
    if report.get("inference_ms"):
        print("[eval] inference: " + ", ".join(f"{k}={v:.2f} ms" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in report["inference_ms"].items()))
    if report.get("out_dir"):
        print(f"[eval] report: {Path(report['out_dir']) / 'eval_report.json'}")
        print(f"[eval] plot: {Path(report['out_dir']) / 'eval_vla_splits.png'}")
