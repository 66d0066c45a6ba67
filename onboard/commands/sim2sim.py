"""``onboard sim2sim ARTIFACT --robot crazyflie2x``: the same artifact in two independent simulators.

Runs the artifact through ``policies.runtime.PolicyRuntime`` (+ one safety
filter per drone) on the same held-out task, seeds and DR draws in MuJoCo
(``sim.quadrotor``, the training plant) and in PyBullet
(``sim.quad_pybullet``, an independent implementation of the same
quadrotor), and reports the gap: RMSE ratio (PyBullet / MuJoCo) and both
crash rates. ``--baseline`` adds the geometric controller's gap on the same
draws (how much of the gap is the plants', not the policy's).
"""
from __future__ import annotations

HELP = ("Sim-to-sim: evaluate one artifact in MuJoCo and in an independent PyBullet model of the same robot "
        "(quadrotor); print the RMSE ratio and crash rates, write sim2sim_report.json.")


def add_arguments(p):
    p.add_argument("artifact", help="policy.onnx written by `onboard export`")
    p.add_argument("--robot", default=None, help="robot profile (default: the contract's; crazyflie2x supported)")
    p.add_argument("--task", default=None, help="quad_track | quad_waypoints | quad_hover (default: the trained task)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=None, help="first held-out seed (default 10000)")
    p.add_argument("--no-dr", action="store_true", help="nominal parameters, no noise or wind")
    p.add_argument("--no-safety", action="store_true", help="without the safety filter (not for robots)")
    p.add_argument("--safety", default=None, help="safety envelope YAML (default: the one the contract records)")
    p.add_argument("--baseline", action="store_true", help="also measure the geometric baseline's gap")
    p.add_argument("--out", default=None, help="report folder (default: next to the artifact, sim2sim/)")


def run(args) -> int:
    import json
    from pathlib import Path

    from onboard.errors import OnboardError
    from onboard.spec import load_robot
    from policies.quad_eval import HELD_OUT_SEED, envelope_for, resolve_task, run_episodes
    from policies.runtime import PolicyRuntime

    if args.episodes < 1:
        raise OnboardError("must be at least 1", field="--episodes", fix="pass --episodes N with N >= 1")
    rt = PolicyRuntime(args.artifact, robot=args.robot)
    profile = load_robot(args.robot or rt.contract.robot["name"])
    if profile.kind != "quadrotor":
        raise OnboardError(f"sim2sim supports quadrotors; '{profile.name}' is a {profile.kind}", field="--robot",
                           fix="pass a crazyflie2x artifact")
    task, trajectory = resolve_task(args.task, rt.contract)
    safety = None if args.no_safety else (Path(args.safety) if args.safety else envelope_for(rt.contract, task))
    kw = dict(episodes=args.episodes, task=task, trajectory=trajectory, dr=not args.no_dr,
              seed=HELD_OUT_SEED if args.seed is None else args.seed, num_envs=min(50, args.episodes),
              safety=not args.no_safety, safety_path=safety)
    report = {"artifact": str(args.artifact), "task": task, "trajectory": trajectory, "dr": not args.no_dr}
    for who in (["baseline"] if args.baseline else []) + [str(args.artifact)]:
        m = run_episodes(who, plant="mujoco", **kw)
        b = run_episodes(who, plant="pybullet", **kw)
        ratio = b["rmse_m_mean"] / m["rmse_m_mean"]
        name = "baseline" if who == "baseline" else "policy"
        report[name] = {"mujoco": m, "pybullet": b, "rmse_ratio_pybullet_over_mujoco": ratio}
        print(f"[sim2sim] {name}: RMSE MuJoCo {m['rmse_m_mean']:.3f} m, PyBullet {b['rmse_m_mean']:.3f} m "
              f"-> ratio {ratio:.3f} | crashes MuJoCo {m['crashes']}/{m['episodes']}, PyBullet "
              f"{b['crashes']}/{b['episodes']} | interventions {m['safety_interventions_total']} / "
              f"{b['safety_interventions_total']} | {m['wall_s'] + b['wall_s']:.1f} s")
    out = Path(args.out) if args.out else Path(args.artifact).resolve().parent / "sim2sim"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sim2sim_report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    print(f"[sim2sim] report: {path}")
    return 0
