"""``onboard eval ARTIFACT --task push --episodes N``: closed-loop evaluation through the runtime."""
from __future__ import annotations

from pathlib import Path

HELP = ("Run closed-loop episodes of an ONNX artifact in MuJoCo under DR, through the runtime and the "
        "safety filter; print the success rate with a 95%% interval, write a JSON report, mp4s and a plot.")


def add_arguments(p):
    p.add_argument("artifact", help="policy.onnx written by `onboard export`")
    p.add_argument("--task", default="push", help="task name (default: push)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=1000, help="first evaluation seed (collection uses 0..)")
    p.add_argument("--no-dr", action="store_true", help="turn domain randomization off")
    p.add_argument("--num-steps", default=None,
                   help="sampler steps, or a comma list to compare (e.g. 100,10,4); default: the contract's")
    p.add_argument("--temporal-ensemble", type=float, default=None, metavar="K",
                   help="replan every step and blend overlapping chunks with weights exp(-K*i)")
    p.add_argument("--videos", type=int, default=2, help="episodes to record as mp4")
    p.add_argument("--no-safety", action="store_true", help="evaluate without the safety filter (not for robots)")
    p.add_argument("--robot", default=None, help="robot profile (default: the contract's)")
    p.add_argument("--out", default=None, help="output folder (default: next to the artifact, eval/)")


def run(args) -> int:
    from onboard.errors import OnboardError
    from onboard.evaluation import EvalConfig, evaluate, plot_success

    if args.episodes < 1:
        raise OnboardError("must be at least 1", field="--episodes", fix="pass --episodes N with N >= 1")
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
