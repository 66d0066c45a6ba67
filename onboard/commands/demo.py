"""``onboard demo``: the main job on the embedded default, end to end.

collect (scripted expert, push, low-dim, DR on) -> train (diffusion) ->
export (ONNX + contract, parity-checked) -> eval (closed loop, DR on, through
the runtime and the safety filter). Each stage is the same CLI verb a user
would run, called in-process, and the commands are printed so they can be
re-run one by one.
"""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

HELP = "Run collect -> train -> export -> eval on the default push task and print the ONNX policy's success rate."


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--task", default="push")
    p.add_argument("--episodes", type=int, default=150, help="expert demonstrations to collect")
    p.add_argument("--train-steps", type=int, default=None, help="training steps (default: the trainer's)")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete the output folder first")


def _stage(name: str, argv: list[str]) -> float:
    from onboard.cli import main

    print(f"\n=== {name}: onboard {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    rc = main(argv)
    dt = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(rc)
    print(f"=== {name} done in {dt:.0f} s", flush=True)
    return dt


def run(args) -> int:
    import shutil

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    data, train_dir, artifact = out / "dataset", out / "train", out / "policy.onnx"
    times = {}
    t_all = time.perf_counter()
    times["collect"] = _stage("collect", ["collect", "--task", args.task, "--episodes", str(args.episodes),
                                          "--out", str(data), "--seed", str(args.seed), "--overwrite"])
    train = ["train", "--policy", "diffusion", "--dataset", str(data), "--out", str(train_dir),
             "--seed", str(args.seed)]
    if args.train_steps:
        train += ["--steps", str(args.train_steps)]
    times["train"] = _stage("train", train)
    times["export"] = _stage("export", ["export", str(train_dir / "checkpoint.pt"), "--out", str(artifact)])
    times["eval"] = _stage("eval", ["eval", str(artifact), "--task", args.task,
                                    "--episodes", str(args.eval_episodes), "--out", str(out / "eval")])
    total = time.perf_counter() - t_all
    report = json.loads((out / "eval" / "eval_report.json").read_text())
    lo, hi = report["ci95"]
    print("\n=== onboard demo summary")
    print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total / 60:.1f} min")
    print(f"ONNX policy success on '{args.task}' under DR: {report['successes']}/{report['episodes']} = "
          f"{report['success_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%})")
    print(f"artifact: {artifact}; report: {out / 'eval' / 'eval_report.json'}")
    return 0
