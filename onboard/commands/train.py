"""``onboard train``: train a policy on a recorded dataset (diffusion BC today).

Defaults are the demo's: a (32, 64, 128) U-Net (1.2 M parameters), batch 64,
6000 steps, which train in about 6-7 minutes on 2 CPU cores (14-24 steps/s
measured, depending on how busy the cores are).
Observation keys default to every 1-D observation except velocities (see
``policies.diffusion.train.default_obs_keys`` for why).
"""
from __future__ import annotations

HELP = "Train a policy (diffusion) on a LeRobot v3 dataset; writes checkpoint.pt and training_curve.png."
POLICIES = ("diffusion",)


def add_arguments(p):
    p.add_argument("--policy", default="diffusion", help=f"policy kind (known: {', '.join(POLICIES)})")
    p.add_argument("--dataset", required=True, help="dataset folder written by `onboard collect`")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 6000)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 64)")
    p.add_argument("--obs-keys", default=None,
                   help="comma-separated observation keys (default: all 1-D keys except velocities)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


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
