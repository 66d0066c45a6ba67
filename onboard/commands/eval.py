"""``onboard eval ARTIFACT --task push --episodes N``: closed-loop evaluation through the runtime.

A quadrotor artifact (contract robot of kind ``quadrotor``, ``--robot
crazyflie2x`` or ``--task quad_*``) goes to ``policies.quad_eval``: tracking
RMSE and crash rate on held-out DR draws through ``PolicyRuntime`` and one
safety filter per drone (the envelope the contract records unless
``--safety``), next to the geometric baseline on the same draws.
"""
from __future__ import annotations

from pathlib import Path

HELP = ("Run closed-loop episodes of an ONNX artifact in MuJoCo under DR, through the runtime and the "
        "safety filter; print the success rate with a 95%% interval, write a JSON report, mp4s and a plot.")


def add_arguments(p):
    p.add_argument("artifact", help="policy.onnx written by `onboard export`")
    p.add_argument("--task", default=None,
                   help="task name (default: push; quadrotor: quad_track | quad_waypoints | quad_hover, "
                        "default the one the policy was trained on)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=None,
                   help="first evaluation seed (default 1000 for arms, collection uses 0..; 10000 for quadrotors)")
    p.add_argument("--no-dr", action="store_true", help="turn domain randomization off")
    p.add_argument("--num-steps", default=None,
                   help="sampler steps, or a comma list to compare (e.g. 100,10,4); default: the contract's")
    p.add_argument("--temporal-ensemble", type=float, default=None, metavar="K",
                   help="replan every step and blend overlapping chunks with weights exp(-K*i)")
    p.add_argument("--videos", type=int, default=2, help="episodes to record as mp4")
    p.add_argument("--no-safety", action="store_true", help="evaluate without the safety filter (not for robots)")
    p.add_argument("--robot", default=None, help="robot profile (default: the contract's)")
    p.add_argument("--out", default=None, help="output folder (default: next to the artifact, eval/)")
    r = p.add_argument_group("residual artifacts")
    r.add_argument("--base", default=None, help="base artifact (default: the one the residual's contract names)")
    r.add_argument("--max-residual-share", type=float, default=1.0,
                   help="runtime cap on the residual, as a share of its trained bound (0..1; default 1)")
    v = p.add_argument_group("vla artifacts (language-conditioned)")
    v.add_argument("--split", default="seen,paraphrase,unseen_combo",
                   help="comma list of evaluation splits: seen | paraphrase | unseen_combo (default: all three)")
    h = p.add_argument_group("humanoid artifacts (G1 legs)")
    h.add_argument("--push-sweep", default=None, metavar="V1,V2,...",
                   help="stand: survival against push size [m/s] through the runtime + safety filter, "
                        "--episodes each (e.g. 0,0.3,0.5,1.0); writes push_sweep.png/json into --out")
    h.add_argument("--gantry", default=None, metavar="LOW,HIGH",
                   help="with --push-sweep: every episode starts with the pelvis held U(LOW, HIGH) s while the "
                        "policy acts, then let go (humanoid_sim_node's gantry release), e.g. 0,1.5")
    q = p.add_argument_group("quadrotor")
    q.add_argument("--safety", default=None, help="safety envelope YAML (default: the one the contract records)")
    q.add_argument("--plant", default="mujoco", choices=["mujoco", "pybullet"], help="simulator (default mujoco)")
    q.add_argument("--no-baseline", action="store_true", help="skip the geometric baseline on the same draws")


def _contract(path):
    from policies.artifact import open_session, read_contract
    return read_contract(open_session(path), source=str(path))


def _is_vla(args) -> bool:
    return _contract(args.artifact).policy_kind == "vla"


def _run_vla(args) -> int:
    from onboard.vla_evaluation import evaluate_vla, print_report

    splits = tuple(s.strip() for s in args.split.split(",") if s.strip())
    out = Path(args.out) if args.out else Path(args.artifact).resolve().parent / "eval"
    steps = int(args.num_steps) if args.num_steps and str(args.num_steps).isdigit() else None
    if args.num_steps and steps is None:
        from onboard.errors import OnboardError
        raise OnboardError(f"'{args.num_steps}' is not one integer", field="--num-steps",
                           fix="a VLA is evaluated at one flow step count, e.g. --num-steps 10")
    report = evaluate_vla(args.artifact, splits=splits, episodes=args.episodes,
                          seed=1000 if args.seed is None else args.seed, dr=not args.no_dr, num_steps=steps,
                          safety=not args.no_safety, video_episodes=args.videos, out_dir=out)
    print_report(report)
    return 0


def _robot_kind(args) -> str:
    from onboard.spec import load_robot
    return load_robot(args.robot or _contract(args.artifact).robot["name"]).kind


def _run_humanoid(args) -> int:
    """G1 legs: survival (and tracking for walk) through the runtime + safety filter, next to the torch policy
    and the same artifact in PyBullet (``policies.humanoid_ppo.evaluate_artifacts``)."""
    import json

    from onboard.errors import OnboardError
    from policies.humanoid_ppo import evaluate_artifacts

    prefix = str(Path(args.artifact).with_suffix(""))
    if not Path(prefix + ".pt").is_file():
        raise OnboardError("the humanoid evaluation compares the artifact with its torch policy, whose "
                           "checkpoint is missing", file=prefix + ".pt", field="artifact",
                           fix="keep policy.pt beside policy.onnx (both written by `onboard train --policy humanoid`)")
    task = args.task or "stand"
    if task not in ("stand", "walk"):
        raise OnboardError(f"unknown humanoid task '{task}'", field="--task", fix="use stand or walk")
    gantry = None
    if getattr(args, "gantry", None):
        try:
            gantry = tuple(float(v) for v in args.gantry.split(","))
        except ValueError:
            gantry = ()
        if len(gantry) != 2 or not 0.0 <= gantry[0] <= gantry[1]:
            raise OnboardError(f"not LOW,HIGH seconds with 0 <= LOW <= HIGH: {args.gantry!r}", field="--gantry",
                               fix="pass e.g. --gantry 0,1.5")
        if not args.push_sweep:
            raise OnboardError("--gantry applies to the push sweep", field="--gantry",
                               fix="add --push-sweep (e.g. --push-sweep 0,1.0)")
    if args.push_sweep:
        from onboard.evaluation import humanoid_push_sweep
        try:
            levels = [float(v) for v in args.push_sweep.split(",") if v.strip()]
        except ValueError:
            raise OnboardError(f"not a comma list of numbers: {args.push_sweep!r}", field="--push-sweep",
                               fix="pass push sizes in m/s, e.g. --push-sweep 0,0.3,0.5,1.0") from None
        if task != "stand" or not levels:
            raise OnboardError("the push sweep needs --task stand and at least one push size", field="--push-sweep",
                               fix="pass --task stand --push-sweep 0,0.3,0.5,1.0")
        out_dir = Path(args.out) if args.out else Path(args.artifact).parent / "eval"
        start = "" if gantry is None else f" | gantry {gantry[0]:g}-{gantry[1]:g} s"
        for r in humanoid_push_sweep(prefix, levels, episodes=args.episodes, out_dir=out_dir, log=lambda line: None,
                                     gantry_s=gantry):
            lo, hi = r["ci95"]
            print(f"[eval] g1 stand{start} | pushes <= {r['push_max_vel_m_s']:.2f} m/s | survived {r['survived']}/"
                  f"{r['episodes']} = {100 * r['survival']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}%) | "
                  f"mean time up {r['mean_episode_s']:.1f} s")
        print(f"[eval] plot: {out_dir / 'push_sweep.png'}")
        return 0
    out = evaluate_artifacts(prefix, task=task, episodes=args.episodes, pybullet_episodes=min(10, args.episodes),
                             log=lambda line: None)
    for name, r in out.items():
        print(f"[eval] g1 {task} | {name} | " + json.dumps(r, default=str))
    return 0


def _is_quadrotor(args) -> bool:
    if (args.task or "").startswith("quad_"):
        return True
    from onboard.spec import load_robot
    if args.robot:
        return load_robot(args.robot).kind == "quadrotor"
    return load_robot(_contract(args.artifact).robot["name"]).kind == "quadrotor"


def run(args) -> int:
    from onboard.errors import OnboardError

    if args.episodes < 1:
        raise OnboardError("must be at least 1", field="--episodes", fix="pass --episodes N with N >= 1")
    if _is_quadrotor(args):
        return _run_quadrotor(args)
    if _is_vla(args):
        return _run_vla(args)
    if _robot_kind(args) == "humanoid":
        return _run_humanoid(args)
    args.task = args.task or "push"
    args.seed = 1000 if args.seed is None else args.seed
    from onboard.evaluation import EvalConfig, evaluate, plot_success
    steps_list = [None]
    if args.num_steps:
        try:
            steps_list = [int(s) for s in str(args.num_steps).split(",")]
        except ValueError:
            raise OnboardError(f"'{args.num_steps}' is not a comma list of integers", field="--num-steps",
                               fix="e.g. --num-steps 100,10,4") from None
        if any(s < 1 or s > 1000 for s in steps_list):
            raise OnboardError("sampler steps must be in 1..1000", field="--num-steps", fix="e.g. --num-steps 10")
    out = Path(args.out) if args.out else Path(args.artifact).resolve().parent / "eval"
    if _is_residual(args.artifact):
        return _run_residual(args, steps_list, out)
    rows = []
    for steps in steps_list:
        cfg = EvalConfig(task=args.task, episodes=args.episodes, seed=args.seed, dr=not args.no_dr,
                         num_steps=steps, temporal_ensemble=args.temporal_ensemble,
                         video_episodes=args.videos, safety=not args.no_safety, robot=args.robot)
        sub = out if len(steps_list) == 1 else out / f"steps_{steps}"
        res = evaluate(args.artifact, cfg, out_dir=sub)
        lo, hi = res.ci95
        n_int = res.interventions.get("total", 0) if res.interventions else 0
        label = f"{res.config['num_steps']} steps"
        rows.append({"label": label, "rate": res.success_rate, "lo": lo, "hi": hi})
        print(f"[eval] {args.task} | {label} | DR {'on' if cfg.dr else 'off'} | success "
              f"{res.successes}/{res.episodes} = {res.success_rate:.1%} (95% CI {lo:.1%}-{hi:.1%}) | "
              f"safety interventions {n_int} | {res.wall_s:.1f} s")
        if res.interventions:
            by = res.interventions.get("counts", {})
            if by:
                print("[eval] interventions by check: " + ", ".join(f"{k}={v}" for k, v in sorted(by.items())))
        if res.inference_ms:
            print("[eval] inference per chunk: " + ", ".join(f"{k}={v:.2f} ms" if isinstance(v, float) else f"{k}={v}"
                                                        for k, v in res.inference_ms.items()))
        print(f"[eval] report: {sub / 'eval_report.json'}")
    plot_success(rows, out / "eval_success.png", f"{Path(args.artifact).name} on {args.task}")
    print(f"[eval] plot: {out / 'eval_success.png'}")
    return 0


def _run_quadrotor(args) -> int:
    import json

    from policies.quad_eval import HELD_OUT_SEED, envelope_for, resolve_task, run_episodes
    from policies.runtime import PolicyRuntime

    contract = PolicyRuntime(args.artifact).contract          # opens and checks the artifact once
    task, trajectory = resolve_task(args.task, contract)
    safety = None if args.no_safety else (Path(args.safety) if args.safety else envelope_for(contract, task))
    seed = HELD_OUT_SEED if args.seed is None else args.seed
    kw = dict(episodes=args.episodes, task=task, trajectory=trajectory, dr=not args.no_dr, seed=seed,
              num_envs=min(50, args.episodes), safety=not args.no_safety, safety_path=safety, plant=args.plant)
    rows = [] if args.no_baseline else [run_episodes("baseline", **kw)]
    rows.append(run_episodes(args.artifact, **kw))
    label = f"{task}{'/' + trajectory if trajectory else ''}"
    for r in rows:
        name = "baseline" if r["controller"] == "baseline" else Path(r["controller"]).name
        ints = r["safety_interventions"]
        print(f"[eval] quadrotor {label} | {name} | {args.plant} | DR {'on' if not args.no_dr else 'off'} | "
              f"RMSE mean {r['rmse_m_mean']:.3f} m (median {r['rmse_m_median']:.3f}, p95 {r['rmse_m_p95']:.3f}) | "
              f"crashes {r['crashes']}/{r['episodes']} | safety "
              f"{Path(r['safety_filter']).name if r['safety_filter'] else 'OFF'}: interventions "
              f"{r['safety_interventions_total']}" + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(ints.items())) + ")"
                                                      if ints else "") + f" | {r['wall_s']:.1f} s")
    if len(rows) == 2:
        ratio = rows[1]["rmse_m_mean"] / rows[0]["rmse_m_mean"]
        rows[1]["rmse_vs_baseline"] = ratio
        print(f"[eval] policy RMSE / baseline RMSE = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")
    out = Path(args.out) if args.out else Path(args.artifact).resolve().parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    report = out / "eval_report.json"
    tmp = report.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"artifact": str(args.artifact), "rows": rows}, indent=2, default=str))
    tmp.replace(report)
    print(f"[eval] report: {report}")
    return 0


def _is_residual(path) -> bool:
    from policies.residual_runtime import is_residual_artifact

    return is_residual_artifact(path)


def _run_residual(args, steps_list, out: Path) -> int:
    from onboard.errors import OnboardError
    from onboard.evaluation import EvalConfig, evaluate_residual

    if len(steps_list) != 1:
        raise OnboardError("a residual is evaluated at one sampler step count (the one it was trained with)",
                           field="--num-steps", fix="pass one value, or leave it out")
    if args.temporal_ensemble is not None:
        raise OnboardError("temporal ensembling is not supported under a residual", field="--temporal-ensemble",
                           fix="leave it out")
    if not 0.0 <= args.max_residual_share <= 1.0:
        raise OnboardError(f"{args.max_residual_share} outside [0, 1]", field="--max-residual-share",
                           fix="0 turns the residual off, 1 allows its trained bound")
    cfg = EvalConfig(task=args.task, episodes=args.episodes, seed=args.seed, dr=not args.no_dr,
                     num_steps=steps_list[0], video_episodes=0, safety=not args.no_safety, robot=args.robot)
    res = evaluate_residual(args.artifact, cfg, out_dir=out, base=args.base,
                            max_residual_share=args.max_residual_share)
    print(f"[eval] {args.task} | DR {'on' if cfg.dr else 'off'} | base {Path(res.config['base']).name} at "
          f"{res.config['num_steps']} sampler steps | seeds {args.seed}..{args.seed + args.episodes - 1} | "
          f"safety {'on' if cfg.safety else 'off'}")
    print(f"{'policy':<16}{'success':>10}{'rate':>8}{'95% CI':>16}{'|res| mean':>12}{'|res| max':>11}"
          f"{'interventions':>15}")
    for r in res.rows:
        eps = r["per_episode"]
        mean = float(sum(e["residual_abs_mean"] for e in eps) / max(len(eps), 1))
        peak = max((e["residual_abs_max"] for e in eps), default=0.0)
        n_int = (r["interventions"] or {}).get("total", 0)
        print(f"{r['label']:<16}{r['successes']:>5}/{r['episodes']:<4}{r['success_rate']:>8.1%}"
              f"{r['ci95'][0]:>8.1%}-{r['ci95'][1]:<7.1%}{mean:>12.4f}{peak:>11.4f}{n_int:>15}")
    p = res.paired
    print(f"[eval] same seeds: both {p['both']}, only base {p['only_base']}, only base+residual "
          f"{p['only_residual']}, neither {p['neither']} | {res.wall_s:.1f} s")
    print(f"[eval] report: {out / 'eval_report.json'}")
    print(f"[eval] plot: {out / 'eval_residual.png'}")
    return 0
