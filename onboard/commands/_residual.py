"""Residual RL pieces of the ``train`` and ``export`` verbs (not a verb itself).

``onboard train --policy residual --base ARTIFACT --task push [--algo ppo|sac]`` trains a bounded
residual on the frozen diffusion base (``policies.residual_train``) and writes ``OUT/residual.pt``,
``OUT/training_log.jsonl`` and ``OUT/training_curve.png``; ``onboard export OUT/residual.pt --out
residual.onnx`` writes the residual artifact (``policies.residual``); ``onboard eval residual.onnx``
compares base and base+residual on the same seeds. Heavy imports stay inside the functions.
"""
from __future__ import annotations

from pathlib import Path

CHECKPOINT_NAME = "residual.pt"
ARM_TASKS = ("reach", "push", "pick_place")


def _add(p, flag: str, **kw) -> None:
    # the train verb shares some flags with other trainers (--task, --total-steps, ...): add each once
    if flag not in p._option_string_actions:
        p.add_argument(flag, **kw)


def add_train_arguments(p) -> None:
    g = p.add_argument_group("residual RL on a diffusion base (--policy residual)")
    _add(g, "--base", default=None, help="the frozen diffusion artifact (policy.onnx)")
    _add(g, "--algo", default="ppo", help="ppo | sac (SAC with base demonstrations, RLPD-style batches)")
    _add(g, "--base-num-steps", type=int, default=None, help="DDIM steps of the base (default: the contract's)")
    _add(g, "--task", default=None, help="arm task (default: push)")
    _add(g, "--residual-scale", type=float, default=None, help="bound on the correction (normalized units, default 0.1)")
    _add(g, "--total-steps", type=int, default=None, help="env steps")
    _add(g, "--num-envs", type=int, default=None, help="parallel envs (default: ppo 8, sac 4)")
    _add(g, "--max-wall-s", type=float, default=0.0, help="stop after this much training time (0: no limit)")
    _add(g, "--no-dr", action="store_true", help="train without domain randomization")
    _add(g, "--no-safety", action="store_true", help="train without the safety filter in the loop")
    _add(g, "--val-every", type=int, default=0,
         help="validate the mean residual every N updates (ppo) or N env steps (sac) on held-out seeds "
              "(50000+) and keep the best as residual.pt (the last as residual_last.pt); 0 = keep the last")
    _add(g, "--val-episodes", type=int, default=40, help="episodes per validation (default 40)")
    _add(g, "--learning-rate", type=float, default=None, help="ppo: Adam step size (default 1e-4)")
    _add(g, "--rollout-steps", type=int, default=None, help="ppo: steps per env per update (default 60)")
    _add(g, "--demo-episodes", type=int, default=None, help="sac: demo rollouts per source for the offline buffer (default 20)")
    _add(g, "--demo-source", default=None,
         help="sac: base (successful base rollouts) | expert (the scripted expert relabelled as bounded "
              "residuals) | both (default base)")


def run_train(args) -> int:
    import json
    import os

    from onboard.errors import OnboardError

    if not args.base:
        raise OnboardError("residual training needs the frozen base", field="--base",
                           fix="pass --base runs/demo/policy.onnx (a diffusion artifact)")
    task = getattr(args, "task", None)
    task = "push" if task in (None, "track") else task     # "track" is the quadrotor trainers' default
    if task not in ARM_TASKS:
        raise OnboardError(f"unknown arm task '{task}'", field="--task", fix=f"use one of {list(ARM_TASKS)}")
    algo = getattr(args, "algo", "ppo")
    if algo not in ("ppo", "sac"):
        raise OnboardError(f"unknown algorithm '{algo}'", field="--algo", fix="use ppo or sac")
    for name in ("total_steps", "num_envs", "base_num_steps"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise OnboardError(f"must be >= 1, got {v}", field=f"--{name.replace('_', '-')}", fix="pass a positive int")
    base = Path(args.base)
    from policies.artifact import open_session, read_contract

    kind = read_contract(open_session(base), source=str(base)).policy_kind
    if kind != "diffusion":
        raise OnboardError(f"the base is a '{kind}' artifact; the residual trains on a diffusion base",
                           file=str(base), field="policy_kind", fix="pass the diffusion policy.onnx")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from policies import residual_train as rtr

    common = dict(task=task, dr=not getattr(args, "no_dr", False), safety=not getattr(args, "no_safety", False),
                  base_num_steps=getattr(args, "base_num_steps", None), seed=args.seed,
                  max_wall_s=float(getattr(args, "max_wall_s", 0.0) or 0.0))
    if getattr(args, "residual_scale", None) is not None:
        common["residual_scale"] = args.residual_scale
    if getattr(args, "total_steps", None) is not None:
        common["total_steps"] = args.total_steps
    if getattr(args, "num_envs", None) is not None:
        common["num_envs"] = args.num_envs
    if algo == "ppo":
        cfg = rtr.ResidualPPOConfig(**common, val_every=int(getattr(args, "val_every", 0) or 0),
                                    val_episodes=int(getattr(args, "val_episodes", 40) or 40))
        if getattr(args, "learning_rate", None) is not None:
            cfg.learning_rate = args.learning_rate
        if getattr(args, "rollout_steps", None) is not None:
            cfg.num_steps = args.rollout_steps
        while (cfg.num_envs * cfg.num_steps) % cfg.num_minibatches:
            cfg.num_minibatches -= 1
    else:
        cfg = rtr.ResidualSACConfig(**common, val_every_steps=int(getattr(args, "val_every", 0) or 0),
                                    val_episodes=int(getattr(args, "val_episodes", 40) or 40))
        if getattr(args, "demo_episodes", None) is not None:
            cfg.demo_episodes = args.demo_episodes
        if getattr(args, "demo_source", None) is not None:
            cfg.demo_source = args.demo_source
        cfg.learning_starts = min(cfg.learning_starts, max(cfg.batch_size, cfg.total_steps // 4))
    cfg.validate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ck = out / CHECKPOINT_NAME
    log_path = out / "training_log.jsonl"
    tmp_log = log_path.with_suffix(".jsonl.tmp")
    print(f"train residual ({algo}) on {base}: task {task}, DR {'on' if cfg.dr else 'off'}, safety "
          f"{'on' if cfg.safety else 'off'}, scale {cfg.residual_scale}, {cfg.num_envs} envs, "
          f"{cfg.total_steps} env steps" + (f", max {cfg.max_wall_s:g} s" if cfg.max_wall_s else ""), flush=True)
    with open(tmp_log, "w") as fh:
        def log(line: str) -> None:
            fh.write(line + "\n")
            fh.flush()
            if not getattr(args, "no_progress", False):
                print(line, flush=True)

        res = (rtr.train_ppo if algo == "ppo" else rtr.train_sac)(base, cfg, out=ck, log=log)
    os.replace(tmp_log, log_path)
    plot_curve([r for r in res.history if "success_rate" in r], out / "training_curve.png",
               [r for r in res.history if "val_success" in r])
    print(json.dumps({"checkpoint": str(ck), "algo": algo, "env_steps": res.env_steps,
                      "train_wall_s": round(res.wall_s, 1), **({"selected": res.selection} if res.selection else {})}),
          flush=True)
    return 0


def plot_curve(rows: list[dict], path: Path, val_rows: list[dict] = ()) -> None:
    if not rows:
        return
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["env_steps"] for r in rows], [r["success_rate"] for r in rows], lw=1.2,
            label="training episodes (exploration on)")
    if val_rows:
        ax.plot([r["env_steps"] for r in val_rows], [r["val_success"] for r in val_rows], "o-", ms=3, lw=1.0,
                label="held-out validation (mean residual)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate (DR)")
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def is_residual_checkpoint(path) -> bool:
    from policies.residual import is_residual_checkpoint as check

    return Path(path).is_file() and check(path)


def run_export(args) -> int:
    import json
    import time

    from policies.residual import export_residual

    t0 = time.perf_counter()
    c = export_residual(args.checkpoint, args.out, base=getattr(args, "base", None))
    r = c.extra["residual"]
    print(f"wrote {args.out} (residual graph, parity-checked against torch, {time.perf_counter() - t0:.1f} s)")
    print("contract: " + json.dumps({"policy_kind": c.policy_kind, "robot": c.robot["name"], "obs_dim": c.obs_dim,
                                     "action_dim": c.action_dim, "scale": r["scale"],
                                     "base_artifact": r["base_artifact"], "base_sha256": r["base_sha256"][:16],
                                     "base_num_steps": r["base_num_steps"]}))
    return 0
