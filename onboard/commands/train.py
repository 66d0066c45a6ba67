"""``onboard train``: train a policy: diffusion BC on a recorded dataset, or PPO for the quadrotor.

``--policy ppo --task hover|track [--residual]`` trains the quadrotor PPO
(``policies.ppo``: residual over the geometric controller, or from scratch)
in the vectorized MuJoCo env under DR and writes ``OUT/checkpoint.pt``,
``OUT/training_log.jsonl`` and ``OUT/training_curve.png``; ``onboard export``
turns the checkpoint into the artifact.

Defaults are the demo's: a (32, 64, 128) U-Net (1.2 M parameters), batch 64,
6000 steps, which train in about 6-7 minutes on 2 CPU cores (14-24 steps/s
measured, depending on how busy the cores are).
Observation keys default to every 1-D observation except velocities (see
``policies.diffusion.train.default_obs_keys`` for why).
"""
from __future__ import annotations

HELP = ("Train a policy: diffusion on a LeRobot v3 dataset, or PPO for the quadrotor (--policy ppo --task "
        "hover|track [--residual]), the VLA (--policy vla --data DIR [--minutes M]), or the G1 legs "
        "(--policy humanoid --task stand|walk); writes checkpoint.pt and training_curve.png.")
POLICIES = ("diffusion", "ppo", "residual", "vla", "humanoid")
# Extra options for policies.humanoid_ppo. push-recovery, pushes <= 1.0 m/s, leg hulls on, 43 min on 2 cores, 5 ms
# training physics, evaluated at 2 ms through the runtime + safety filter (docs/humanoid.md sessions 13-14): with a
# 0.4 s gait period, seeds 0 / 1 / 2: 97% (194/200) / 92.5% (185/200) / 95% (190/200), 7.7-8.6 M env steps; with
# 0.5 s 94% (seed 1) and 68% (seed 0); with unitree_rl_gym's 0.8 s seed 1 scored 31-80.5% (sessions 10-12).
HUMANOID_RECIPES = {
    "basic": [],
    "push-recovery": ["--step-in-place", "--gait-reference", "0.3", "--force-step", "--symmetry", "--estimator",
                      "--placement-gain", "0.4", "--gantry-starts", "0.3", "--workers", "2", "--physics-dt", "0.005",
                      "--gait-period", "0.4", "--average-frac", "0.15"],
}


def add_arguments(p):
    p.add_argument("--policy", default="diffusion", help=f"policy kind (known: {', '.join(POLICIES)})")
    p.add_argument("--dataset", "--data", default=None,
                   help="dataset folder written by `onboard collect` (diffusion, vla)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 6000)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 64)")
    p.add_argument("--obs-keys", default=None,
                   help="comma-separated observation keys (default: all 1-D keys except velocities)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = p.add_argument_group("PPO (quadrotor; --policy ppo)")
    q.add_argument("--task", default="track", help="hover | track (default: track)")
    q.add_argument("--trajectory", default=None, help="track: figure8 | waypoints | mixed (default figure8)")
    q.add_argument("--residual", action="store_true", help="residual over the geometric controller (else from scratch)")
    q.add_argument("--residual-scale", type=float, default=None, help="bound on the residual per axis (default 0.25)")
    q.add_argument("--total-steps", type=int, default=None, help="env steps (default 1000000)")
    q.add_argument("--num-envs", type=int, default=None, help="parallel drones (default 64)")
    q.add_argument("--rollout-steps", type=int, default=None, help="steps per env per update (default 64)")
    q.add_argument("--max-wall-s", type=float, default=0.0, help="stop after this much training time (0: no limit)")
    q.add_argument("--no-dr", action="store_true", help="train without domain randomization")
    from onboard.commands._residual import add_train_arguments   # --policy residual (arm, diffusion base)
    add_train_arguments(p)
    h = p.add_argument_group("Humanoid (--policy humanoid; --task stand|walk, --total-steps, --num-envs, --max-wall-s)")
    h.add_argument("--recipe", default="basic", choices=sorted(HUMANOID_RECIPES),
                   help="basic: plain PPO on the task. push-recovery: the best measured stand + push recipe "
                        "(forced stepping prior, mirror-symmetric actor, learned velocity estimate, foot placement, "
                        "30%% of episodes started on the gantry, robots stepped on 2 processes, a 5 ms training "
                        "physics step, a 0.4 s gait period, the actor's weights averaged over the last 15%% of "
                        "training; docs/humanoid.md)")
    v = p.add_argument_group("VLA (--policy vla)")
    v.add_argument("--minutes", type=float, default=None,
                   help="time budget; the learning rate anneals over it (vla default: 50)")
    v.add_argument("--vla-size", default="demo", choices=["demo", "tiny"],
                   help="model size: demo (the documented configuration) or tiny (tests, smoke runs)")
    v.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: 2, or 1 when the load average says the cores are busy)")
    v.add_argument("--text-encoder", default=None,
                   help="optional frozen pretrained text encoder (local TorchScript file); absent: from scratch")
    v.add_argument("--grounding-weight", type=float, default=None,
                   help="training-only lane x task loss (default 0.5; 0 = off)")
    v.add_argument("--localisation-weight", type=float, default=None,
                   help="training-only named-cube + goal position loss on the privileged columns (default 1.0; "
                        "0 = off; see docs/vla.md for what it does to unseen colour x lane combinations)")


def run(args) -> int:
    import os
    from pathlib import Path

    # Before torch loads OpenMP: spinning threads stall badly when the two cores are shared.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from onboard.errors import OnboardError

    if args.policy not in POLICIES:
        raise OnboardError(f"unknown policy '{args.policy}'", field="--policy",
                           fix=f"use one of {list(POLICIES)}")
    for name in ("steps", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise OnboardError(f"must be >= 1, got {v}", field=f"--{name.replace('_', '-')}", fix="pass a positive int")
    if args.policy == "residual":
        from onboard.commands._residual import run_train
        return run_train(args)
    if args.policy == "ppo":
        return _run_ppo(args)
    if args.policy == "vla":
        return _run_vla(args)
    if args.policy == "humanoid":
        return _run_humanoid(args)
    if args.dataset is None:
        raise OnboardError("diffusion training needs a dataset", field="--dataset",
                           fix="pass --dataset FOLDER written by `onboard collect`")
    root = Path(args.dataset)
    if not (root / "meta" / "info.json").is_file():
        raise OnboardError("not a dataset folder (meta/info.json is missing)", file=str(root), field="--dataset",
                           fix="pass the folder written by `onboard collect`")

    from policies.dataset import load_dataset
    from policies.diffusion.train import TrainConfig, data_from_dataset, train

    try:
        ds = load_dataset(root)
    except OnboardError:
        raise
    except Exception as exc:
        raise OnboardError(f"cannot read dataset: {type(exc).__name__}: {exc}", file=str(root), field="--dataset",
                           fix="re-collect it with `onboard collect`") from exc
    keys = [k.strip() for k in args.obs_keys.split(",") if k.strip()] if args.obs_keys else None
    data = data_from_dataset(ds, keys, source=str(root))
    cfg = TrainConfig(seed=args.seed)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    cfg.checkpoint_every = min(cfg.checkpoint_every, max(1, cfg.steps))
    print(f"train diffusion: {len(data.actions)} frames, {len(set(data.episode_index.tolist()))} episodes, "
          f"obs keys {[k['name'] for k in data.obs_spec]}, {cfg.steps} steps x batch {cfg.batch_size}", flush=True)
    result = train(cfg, data, args.out, resume=args.resume, progress=not args.no_progress)
    sps = result.get("steps_per_second")
    loss = result["loss_history"][-1][1] if result["loss_history"] else float("nan")
    print(f"wrote {Path(args.out) / 'checkpoint.pt'} (step {result['step']}, loss {loss:.4f}"
          + (f", {sps:.1f} steps/s" if sps else "") + f") and {Path(args.out) / 'training_curve.png'}")
    return 0


def _run_humanoid(args) -> int:
    """G1 legs: PPO with the asymmetric critic (``policies.humanoid_ppo``) -> OUT/policy.pt + OUT/policy.onnx."""
    from pathlib import Path

    from onboard.errors import OnboardError
    from policies import humanoid_ppo

    task = "stand" if args.task == "track" else args.task        # "track" is the quadrotor default
    if task not in ("stand", "walk"):
        raise OnboardError(f"unknown humanoid task '{task}'", field="--task", fix="use stand or walk")
    for name in ("total_steps", "num_envs"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise OnboardError(f"must be >= 1, got {v}", field=f"--{name.replace('_', '-')}", fix="pass a positive int")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    argv = ["--task", task, "--seed", str(args.seed), "--out", str(out / "policy"), "--eval-episodes", "0",
            *HUMANOID_RECIPES[args.recipe]]
    if args.total_steps is not None:
        argv += ["--total-steps", str(args.total_steps)]
    if args.num_envs is not None:
        argv += ["--num-envs", str(args.num_envs)]
    if args.max_wall_s:
        argv += ["--max-wall-s", str(args.max_wall_s)]
    if args.no_dr:
        argv.append("--no-dr")
    if args.resume:
        prior = out / "policy.pt"
        if not prior.is_file():
            raise OnboardError("--resume given but there is no checkpoint to continue", file=str(prior),
                               field="--resume", fix="drop --resume, or pass the --out folder of the earlier run")
        argv += ["--resume", str(prior)]
    print(f"train humanoid ({task}, recipe {args.recipe}): PPO, asymmetric critic, DR {'off' if args.no_dr else 'on'} -> "
          f"{out / 'policy.pt'}, {out / 'policy.onnx'}", flush=True)
    rc = humanoid_ppo.main(argv)
    print(f"next: onboard eval {out / 'policy.onnx'} --task {task} --episodes 100")
    return rc


def _run_vla(args) -> int:
    import math
    from pathlib import Path

    from onboard.errors import OnboardError

    if args.dataset is None:
        raise OnboardError("VLA training needs a dataset", field="--data",
                           fix="pass --data FOLDER written by `onboard collect --task lang`")
    root = Path(args.dataset)
    if not (root / "meta" / "info.json").is_file():
        raise OnboardError("not a dataset folder (meta/info.json is missing)", file=str(root), field="--data",
                           fix="pass the folder written by `onboard collect --task lang`")
    if args.minutes is not None and args.minutes <= 0:
        raise OnboardError(f"must be > 0, got {args.minutes}", field="--minutes", fix="pass a positive number")
    from policies.dataset import load_dataset
    from policies.vla.train import VLATrainConfig, data_from_dataset, tiny_config, train

    data = data_from_dataset(load_dataset(root), source=str(root))
    cfg = tiny_config(seed=args.seed) if args.vla_size == "tiny" else VLATrainConfig(seed=args.seed, minutes=50.0)
    if args.minutes is not None:
        cfg.minutes = args.minutes
    if args.steps is not None:
        cfg.steps = args.steps
        if args.minutes is None:
            cfg.minutes = None
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    if args.threads is not None:
        cfg.num_threads = args.threads
    for flag, field in (("grounding_weight", "aux_weight"), ("localisation_weight", "aux_pos_weight")):
        w = getattr(args, flag, None)
        if w is not None:
            if not (math.isfinite(w) and w >= 0.0):
                raise OnboardError(f"must be a finite weight >= 0, got {w}", field=f"--{flag.replace('_', '-')}",
                                   fix="pass 0 to turn the loss off, or a positive weight")
            setattr(cfg, field, float(w))
    if args.text_encoder:
        if Path(args.text_encoder).is_file():
            cfg.pretrained_text_encoder = args.text_encoder
        else:
            print(f"[vla] no text encoder at {args.text_encoder}: training the text encoder from scratch", flush=True)
    budget = f"{cfg.minutes:g} min or {cfg.steps} steps" if cfg.minutes else f"{cfg.steps} steps"
    print(f"train vla: {len(data.actions)} frames, {len(set(data.episode_index.tolist()))} episodes, "
          f"{len(data.tasks)} instructions, cameras {data.cameras} at {data.images[data.cameras[0]].shape[1:3]}, "
          f"state {[k['name'] for k in data.state_spec]}, {budget}, batch {cfg.batch_size}, grounding loss "
          + (f"on ({len(set(data.aux_label.tolist()) - {-1})} lane x task classes, weight {cfg.aux_weight})"
             if data.aux_label is not None and cfg.aux_weight > 0 else "off")
          + ", localisation loss " + (f"on (named cube + goal positions, weight {cfg.aux_pos_weight})"
                                      if data.aux_pos is not None and cfg.aux_pos_weight > 0 else "off"), flush=True)
    result = train(cfg, data, args.out, resume=args.resume, progress=not args.no_progress)
    sps = result.get("steps_per_second")
    loss = result["loss_history"][-1][1] if result["loss_history"] else float("nan")
    print(f"wrote {Path(args.out) / 'checkpoint.pt'} (step {result['step']}, loss {loss:.4f}, "
          f"{result['train_seconds'] / 60:.1f} min" + (f", {sps:.2f} steps/s" if sps else "") + ")")
    print(f"next: onboard export {Path(args.out) / 'checkpoint.pt'} --out {Path(args.out) / 'artifact'}")
    return 0


def _run_ppo(args) -> int:
    import json
    from pathlib import Path

    from onboard.errors import OnboardError

    if args.task not in ("hover", "track"):
        raise OnboardError(f"unknown quadrotor task '{args.task}'", field="--task", fix="use hover or track")
    for name in ("total_steps", "num_envs", "rollout_steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise OnboardError(f"must be >= 1, got {v}", field=f"--{name.replace('_', '-')}", fix="pass a positive int")
    from policies.ppo import PPOConfig, save_checkpoint, train

    cfg = PPOConfig(task=args.task, trajectory=args.trajectory or ("figure8" if args.task == "track" else None),
                    mode="residual" if args.residual else "scratch", seed=args.seed, dr=not args.no_dr,
                    max_wall_s=float(args.max_wall_s or 0.0))
    if args.residual_scale is not None:
        cfg.residual_scale = args.residual_scale
    if args.total_steps is not None:
        cfg.total_steps = args.total_steps
    if args.num_envs is not None:
        cfg.num_envs = args.num_envs
    if args.rollout_steps is not None:
        cfg.num_steps = args.rollout_steps
    if args.batch_size is not None:
        cfg.num_minibatches = max(1, (cfg.num_envs * cfg.num_steps) // args.batch_size)
    while (cfg.num_envs * cfg.num_steps) % cfg.num_minibatches:
        cfg.num_minibatches -= 1
    cfg.validate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "training_log.jsonl"
    tmp_log = log_path.with_suffix(".jsonl.tmp")
    print(f"train ppo ({cfg.mode}): task {cfg.task}{'/' + cfg.trajectory if cfg.trajectory else ''}, "
          f"DR {'on' if cfg.dr else 'off'}, {cfg.num_envs} envs x {cfg.num_steps} steps, "
          f"{cfg.total_steps} env steps", flush=True)
    with open(tmp_log, "w") as fh:
        def log(line: str) -> None:
            fh.write(line + "\n")
            fh.flush()
            if not args.no_progress:
                print(line, flush=True)
        res = train(cfg, log=log)
    tmp_log.replace(log_path)
    ck = save_checkpoint(res, out / "checkpoint.pt")
    _plot_ppo(res.history, out / "training_curve.png", f"PPO {cfg.mode} / {cfg.task}")
    print(json.dumps({"checkpoint": str(ck), "train_wall_s": round(res.wall_s, 1), "env_steps": res.env_steps,
                      "last": res.history[-1] if res.history else None}), flush=True)
    print(f"wrote {ck}, {log_path.name} and training_curve.png; next: onboard export {ck} --out policy.onnx")
    return 0


def _plot_ppo(history: list, path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [h["env_steps"] for h in history]
    ax[0].plot(steps, [h["return"] for h in history])
    ax[0].set_xlabel("env steps"), ax[0].set_ylabel("episode return")
    ax[1].plot(steps, [h["rmse_m"] for h in history])
    ax[1].set_xlabel("env steps"), ax[1].set_ylabel("tracking RMSE [m]")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
