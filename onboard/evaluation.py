"""Closed-loop evaluation of an artifact in MuJoCo, through the one runtime and the safety filter.

This is glue at the top layer: it composes a task environment (``sim``), the
safety filter (``sim2real``) and the runtime (``policies.runtime``). The same
runtime and filter run in the ROS 2 policy node, so what is measured here is
what runs on the robot.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onboard.errors import OnboardError


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (well-behaved at 0 and n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 or 1 the bound equals p analytically; rounding can put it a hair on the wrong side
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


@dataclass
class EvalConfig:
    task: str = "push"
    episodes: int = 50
    seed: int = 1000           # evaluation seeds differ from collection seeds (collect starts at 0)
    dr: bool = True
    num_steps: int | None = None     # sampler steps; None = the contract's default
    temporal_ensemble: float | None = None
    video_episodes: int = 2
    image_size: tuple[int, int] = (240, 320)
    safety: bool = True
    robot: str | None = None


@dataclass
class EvalResult:
    config: dict
    successes: int
    episodes: int
    success_rate: float
    ci95: tuple[float, float]
    per_episode: list = field(default_factory=list)
    interventions: dict = field(default_factory=dict)
    inference_ms: dict = field(default_factory=dict)
    wall_s: float = 0.0


def _state_from_obs(obs: dict) -> dict:
    q = np.concatenate([np.asarray(obs["joint_pos"], float), np.asarray(obs["gripper_width"], float).ravel()])
    dq = np.concatenate([np.asarray(obs["joint_vel"], float), [0.0]])
    return {"q": q, "dq": dq}


def evaluate(artifact: str | Path, cfg: EvalConfig, out_dir: str | Path | None = None,
             progress: bool = True) -> EvalResult:
    from tqdm import tqdm

    from policies.runtime import PolicyRuntime

    artifact = Path(artifact)
    rt = PolicyRuntime(artifact, robot=cfg.robot, num_steps=cfg.num_steps,
                       temporal_ensemble=cfg.temporal_ensemble, seed=cfg.seed)
    contract = rt.contract
    robot = cfg.robot or contract.robot["name"]
    dt_s = 1.0 / contract.control_rate_hz
    from sim.arm_env import ArmEnv
    from sim2real.safety import SafetyFilter

    safety = SafetyFilter.for_robot(robot, dt_s=dt_s) if cfg.safety else None
    rt.safety = safety

    cameras = ("front",) if cfg.video_episodes > 0 and out_dir is not None else ()
    # Rendering costs more than physics and inference together: only the recorded episodes render.
    # Episodes are seeded one by one (reset(seed=...)), so both envs see the same draws for a seed.
    env = ArmEnv(task=cfg.task, dr=cfg.dr, seed=cfg.seed)
    video_env = (ArmEnv(task=cfg.task, dr=cfg.dr, seed=cfg.seed, cameras=cameras, image_size=cfg.image_size)
                 if cameras else None)
    missing = [k for k in contract.obs_keys if k not in env.observation_space.spaces]
    if missing:
        raise OnboardError(f"artifact needs observation keys {missing} that task '{cfg.task}' does not provide",
                           file=str(artifact), field="observation.keys",
                           fix=f"evaluate on the task the policy was trained for (provenance: "
                               f"{contract.provenance.get('task', 'unknown')})")

    per_episode, frames_per_video = [], []
    t0 = time.perf_counter()
    it = range(cfg.episodes)
    bar = tqdm(it, desc=f"eval {cfg.task}", unit="ep", disable=not progress)
    successes = 0
    for ep in bar:
        recording = video_env is not None and ep < cfg.video_episodes
        env_ep = video_env if recording else env
        obs, info = env_ep.reset(seed=cfg.seed + ep)
        state = _state_from_obs(obs)
        rt.reset(state=state, t=0.0)
        frames = [] if recording else None
        success, steps, t = False, 0, 0.0
        done = False
        while not done:
            if frames is not None:
                frames.append(obs["image.front"])
            cmd = rt.act(obs, t=t, state=state)
            obs, _reward, terminated, truncated, info = env_ep.step(cmd)
            state = _state_from_obs(obs)
            steps += 1
            t += dt_s
            success = success or bool(info.get("success", False))
            done = terminated or truncated or success
        if frames is not None:
            frames.append(obs["image.front"])
            frames_per_video.append((ep, frames))
        successes += int(success)
        per_episode.append({"episode": ep, "seed": cfg.seed + ep, "success": success, "steps": steps,
                            **{k: float(v) for k, v in info.items()
                               if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}})
        bar.set_postfix(success=f"{successes}/{ep + 1}")
    wall = time.perf_counter() - t0
    lo, hi = wilson_interval(successes, cfg.episodes)
    result = EvalResult(config={**cfg.__dict__, "artifact": str(artifact),
                                "num_steps": rt.num_steps, "robot": robot},
                        successes=successes, episodes=cfg.episodes,
                        success_rate=successes / max(cfg.episodes, 1), ci95=(lo, hi),
                        per_episode=per_episode,
                        interventions=safety.summary() if safety is not None else {},
                        inference_ms=rt.timing_summary() if hasattr(rt, "timing_summary") else {},
                        wall_s=wall)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(out_dir / "eval_report.json", _jsonable(result.__dict__))
        for ep, frames in frames_per_video:
            write_mp4(out_dir / f"episode_{ep:03d}.mp4", frames, fps=contract.control_rate_hz)
    return result


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return o


def _write_json_atomic(path: Path, doc) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Encode RGB frames (H, W, 3 uint8) to H.264 mp4 with the ffmpeg binary bundled by imageio-ffmpeg."""
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    tmp = path.with_name(path.stem + ".tmp.mp4")
    writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=float(fps), codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1,
                                         output_params=["-loglevel", "error"])
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f, dtype=np.uint8))
    writer.close()
    os.replace(tmp, path)


def plot_success(rows: list[dict], path: Path, title: str) -> None:
    """Bar chart of success rate with 95% intervals, one bar per row (``label``, ``rate``, ``lo``, ``hi``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(rows), 3.2))
    x = np.arange(len(rows))
    rates = np.array([r["rate"] for r in rows])
    err = np.array([[r["rate"] - r["lo"] for r in rows], [r["hi"] - r["rate"] for r in rows]])
    ax.bar(x, rates, yerr=err, capsize=4, color="#4C72B0")
    ax.set_xticks(x, [r["label"] for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- humanoid: survival against push size ---------------------------------------------------
def fatal_push_bins(pushes, width: float = 0.1) -> list[dict]:
    """[(|dv|, fatal), ...] -> per ``width`` m/s bin of push size: pushes, fatal ones, Wilson 95% interval."""
    bins: dict[int, list[int]] = {}
    for mag, fatal in pushes:
        b = bins.setdefault(int(mag / width + 1e-9), [0, 0])
        b[0] += 1
        b[1] += int(bool(fatal))
    return [{"lo": round(k * width, 3), "hi": round((k + 1) * width, 3), "pushes": n, "fatal": f,
             "ci95": list(wilson_interval(f, n))} for k, (n, f) in sorted(bins.items())]


def humanoid_push_sweep(prefix: str, levels=(0.0, 0.3, 0.5, 1.0), *, episodes: int = 50, seed: int = 10_000,
                        out_dir: str | Path | None = None, log=print, gantry_s: tuple | None = None) -> list[dict]:
    """G1 stand: survival against push size. The artifact through the runtime + safety filter (MuJoCo, the
    stand DR with ``max_vel_m_s`` set to each level; 0 = no pushes), ``episodes`` each on the same seeds.
    ``gantry_s`` (low, high): each episode starts on the gantry for U(low, high) s (see ``evaluate``).
    Writes ``push_sweep.json`` and ``push_sweep.png`` (survival with 95% intervals) into ``out_dir``."""
    import copy

    from policies.humanoid_ppo import FATAL_PUSH_S, evaluate, load_checkpoint, runtime_act_fn
    from sim2real.humanoid_randomization import load_humanoid_dr_config
    res, _ = load_checkpoint(f"{prefix}.pt")
    base = load_humanoid_dr_config(task="stand")
    interval = base.sections.get("pushes", {}).get("interval_s")
    if not interval:
        raise OnboardError("the stand DR YAML has no push interval to sweep over", field="pushes.interval_s",
                           fix="restore the pushes section of config/randomization/g1_12dof_stand.yaml")
    rows, pushes = [], []
    for v in levels:
        if v < 0:
            raise OnboardError(f"push size {v} < 0", field="--push-sweep", fix="give push sizes in m/s, >= 0")
        cfg = copy.deepcopy(base)
        if v == 0:
            cfg.sections.pop("pushes", None)
        else:
            cfg.sections["pushes"]["max_vel_m_s"] = float(v)
        n = min(50, episodes)
        r = evaluate(runtime_act_fn(f"{prefix}.onnx", n), task="stand", episodes=episodes, dr=cfg,
                     history=res.config.history, num_envs=n, seed=seed, gantry_s=gantry_s)
        ok = r["episodes"] - r["falls"]
        lo, hi = wilson_interval(ok, r["episodes"])
        rows.append({"push_max_vel_m_s": float(v), "survived": ok, "episodes": r["episodes"],
                     "survival": r["survival"], "ci95": [lo, hi], "mean_episode_s": r["mean_episode_s"],
                     "pushes": len(r["pushes"]), "fatal_pushes": sum(k for _, k in r["pushes"]),
                     "gantry_s": list(gantry_s) if gantry_s else None})
        pushes += r["pushes"]
        log(json.dumps(rows[-1]))
    per_push = fatal_push_bins(pushes)
    for b in per_push:
        log(json.dumps({"push_m_s": [b["lo"], b["hi"]], "pushes": b["pushes"], "fatal": b["fatal"]}))
    if out_dir is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(out / "push_sweep.json", {"artifact": f"{prefix}.onnx", "rows": rows,
                                                     "fatal_push_s": FATAL_PUSH_S, "per_push": per_push})
        x = [r["push_max_vel_m_s"] for r in rows]
        y = np.array([r["survival"] for r in rows])
        err = np.array([[r["survival"] - r["ci95"][0] for r in rows], [r["ci95"][1] - r["survival"] for r in rows]])
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.2, 3.2))
        if per_push:   # right: the fraction of single pushes followed by a fall, against the push's size
            mid = [(b["lo"] + b["hi"]) / 2 for b in per_push]
            frac = np.array([b["fatal"] / b["pushes"] for b in per_push])
            e2 = np.array([[f - b["ci95"][0] for f, b in zip(frac, per_push)],
                           [b["ci95"][1] - f for f, b in zip(frac, per_push)]])
            ax2.errorbar(mid, frac, yerr=e2, marker="o", capsize=3, color="C3")
        ax2.set_xlabel("push size [m/s] (0.1 m/s bins, all levels pooled)")
        ax2.set_ylabel(f"pushes followed by a fall within {FATAL_PUSH_S:g} s")
        ax2.set_ylim(-0.03, 1.05)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=4)
        ax.axhline(0.95, color="grey", ls="--", lw=0.8, label="target 95%")
        ax.set_xlabel(f"largest push [m/s] (uniform over the disk, every {interval[0]:g}-{interval[1]:g} s)")
        ax.set_ylabel("20 s episodes survived (95% CI)")
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(f"{Path(prefix).parent.name}/{Path(prefix).name}: runtime + safety filter, DR", fontsize=8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "push_sweep.png", dpi=120)
        plt.close(fig)
    return rows


# ---- residual policies: base vs base+residual on the same seeds ---------------------------------
@dataclass
class ResidualEvalResult:
    config: dict
    rows: list                       # one EvalResult-like dict per variant ("base", "base+residual")
    paired: dict                     # per-seed outcome counts: both, neither, only_base, only_residual
    residual_per_step: list          # mean |correction| (max over axes) at each control step, over episodes
    wall_s: float = 0.0


def _run_variant(rt, env, cfg: EvalConfig, safety, label: str, progress: bool) -> dict:
    from tqdm import tqdm

    dt_s = 1.0 / rt.contract.control_rate_hz
    per_episode, successes = [], 0
    bar = tqdm(range(cfg.episodes), desc=f"eval {label}", unit="ep", disable=not progress)
    for ep in bar:
        obs, info = env.reset(seed=cfg.seed + ep)
        state = _state_from_obs(obs)
        rt.reset(state=state, t=0.0, seed=cfg.seed + ep)     # same sampler noise for both variants
        success, steps, t, done, mags = False, 0, 0.0, False, []
        while not done:
            cmd = rt.act(obs, t=t, state=state)
            mags.append(rt.last_residual_magnitude)
            obs, _reward, terminated, truncated, info = env.step(cmd)
            state = _state_from_obs(obs)
            steps += 1
            t += dt_s
            success = success or bool(info.get("success", False))
            done = terminated or truncated or success
        successes += int(success)
        per_episode.append({"episode": ep, "seed": cfg.seed + ep, "success": success, "steps": steps,
                            "residual_abs_mean": float(np.mean(mags)) if mags else 0.0,
                            "residual_abs_max": float(np.max(mags)) if mags else 0.0,
                            "residual_abs_per_step": [round(float(m), 5) for m in mags]})
        bar.set_postfix(success=f"{successes}/{ep + 1}")
    lo, hi = wilson_interval(successes, cfg.episodes)
    return {"label": label, "successes": successes, "episodes": cfg.episodes,
            "success_rate": successes / max(cfg.episodes, 1), "ci95": [lo, hi],
            "max_residual_share": rt.max_residual_share, "per_episode": per_episode,
            "interventions": safety.summary() if safety is not None else {},
            "inference_ms": rt.timing_summary()}


def evaluate_residual(artifact: str | Path, cfg: EvalConfig, out_dir: str | Path | None = None,
                      progress: bool = True, base: str | Path | None = None,
                      max_residual_share: float = 1.0) -> ResidualEvalResult:
    """Run the residual's base alone (residual share 0) and base+residual on the same seeds (env draws
    and sampler noise), through the same runtime and safety filter. Writes eval_report.json and
    eval_residual.png (success with 95% CI, and mean residual magnitude per step) when ``out_dir`` is set."""
    from policies.residual_runtime import ResidualRuntime
    from sim.arm_env import ArmEnv
    from sim2real.safety import SafetyFilter

    artifact = Path(artifact)
    t0 = time.perf_counter()
    rows = []
    for label, share in (("base", 0.0), ("base+residual", float(max_residual_share))):
        rt = ResidualRuntime(base, artifact, robot=cfg.robot, num_steps=cfg.num_steps, seed=cfg.seed,
                             max_residual_share=share)
        robot = cfg.robot or rt.contract.robot["name"]
        safety = SafetyFilter.for_robot(robot, dt_s=1.0 / rt.contract.control_rate_hz) if cfg.safety else None
        rt.safety = safety
        env = ArmEnv(task=cfg.task, dr=cfg.dr, seed=cfg.seed)
        missing = [k for k in rt.obs_keys if k not in env.observation_space.spaces]
        if missing:
            raise OnboardError(f"artifact needs observation keys {missing} that task '{cfg.task}' does not provide",
                               file=str(artifact), field="observation.keys",
                               fix="evaluate on the task the residual was trained for")
        rows.append(_run_variant(rt, env, cfg, safety, label, progress))
    a = [e["success"] for e in rows[0]["per_episode"]]
    b = [e["success"] for e in rows[1]["per_episode"]]
    paired = {"both": sum(x and y for x, y in zip(a, b)), "neither": sum(not x and not y for x, y in zip(a, b)),
              "only_base": sum(x and not y for x, y in zip(a, b)), "only_residual": sum(y and not x for x, y in zip(a, b))}
    per_step = [e["residual_abs_per_step"] for e in rows[1]["per_episode"]]
    longest = max((len(p) for p in per_step), default=0)
    mean_step = [float(np.mean([p[i] for p in per_step if len(p) > i])) for i in range(longest)]
    result = ResidualEvalResult(config={**cfg.__dict__, "artifact": str(artifact), "num_steps": rt.num_steps,
                                        "base": str(rt.base_path), "scale": rt.scale},
                                rows=rows, paired=paired, residual_per_step=mean_step,
                                wall_s=time.perf_counter() - t0)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(out_dir / "eval_report.json", _jsonable(result.__dict__))
        plot_residual_comparison(result, out_dir / "eval_residual.png", f"{artifact.name} on {cfg.task}")
    return result


def plot_residual_comparison(result: ResidualEvalResult, path: Path, title: str) -> None:
    """One figure: success (95% CI) of base vs base+residual, and mean residual magnitude per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8, 3.2), gridspec_kw={"width_ratios": [1, 1.6]})
    rates = np.array([r["success_rate"] for r in result.rows])
    err = np.array([[r["success_rate"] - r["ci95"][0] for r in result.rows],
                    [r["ci95"][1] - r["success_rate"] for r in result.rows]])
    ax.bar(np.arange(len(rates)), rates, yerr=err, capsize=4, color=["#999999", "#4C72B0"][:len(rates)])
    ax.set_xticks(np.arange(len(rates)), [r["label"] for r in result.rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(title, fontsize=8)
    bx.plot(np.arange(len(result.residual_per_step)), result.residual_per_step, lw=1.2)
    bx.axhline(result.config.get("scale", 0.0), ls="--", c="k", lw=0.8, label="bound (scale)")
    bx.set_xlabel("control step")
    bx.set_ylabel("mean max|correction| (normalized)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
