"""``onboard collect``: scripted-expert demonstrations in ArmEnv, written as a LeRobot v3 dataset.

Runs the task's expert under domain randomization, keeps successful episodes
only, and reports the expert's success rate.
"""
from __future__ import annotations

HELP = "collect scripted-expert demonstrations into a LeRobot v3 dataset"


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="push",
                        help="reach | push | pick_place | lang (language-conditioned push + pick-and-place "
                             "with instructions, front + wrist cameras; default: push)")
    parser.add_argument("--split", default="train",
                        help="--task lang: instruction split train | seen | paraphrase | unseen_combo")
    parser.add_argument("--episodes", type=int, default=150, help="successful episodes to keep")
    parser.add_argument("--out", default=None, help="dataset root (default: runs/data/<task>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dr", action="store_true", help="turn domain randomization off")
    parser.add_argument("--dr", default=None, help="DR YAML (default: config/randomization/<robot>_<task>.yaml)")
    parser.add_argument("--calibration", nargs="+", default=[], metavar="YAML",
                        help="calibration results (`onboard calibrate` latency / hand-eye YAMLs) that set DR ranges: "
                             "measured delay -> action delay steps, measured noise -> observation noise; "
                             "recorded in the dataset and, through training, in the policy contract")
    parser.add_argument("--cameras", nargs="*", default=[], help="cameras to record, e.g. front")
    parser.add_argument("--image-size", type=int, default=96, help="square image size [px]")
    parser.add_argument("--max-attempts", type=int, default=None,
                        help="give up after this many episodes (default: 2x --episodes + 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    parser.add_argument("--teleop", choices=("keyboard", "gamepad", "spacemouse", "leader"), default=None,
                        help="record human teleoperation instead of the scripted expert: runs "
                             "launch/teleop_sim.launch.yaml (sim_node + teleop_node + recorder_node)")
    parser.add_argument("--leader-calibration", default="", help="--teleop leader: YAML with signs and zero offsets")
    parser.add_argument("--fps", type=float, default=10.0, help="--teleop: recording rate [Hz]")


def run_teleop(args) -> int:
    """Teleoperation: the launch file runs the nodes; with --teleop keyboard this terminal is the keyboard."""
    import threading

    from onboard.launch_runner import Supervisor, load_launch
    from onboard.paths import REPO_ROOT
    from sim.arm_env import TASK_SPECS, TASKS

    from onboard.errors import OnboardError
    if args.task not in TASKS:
        raise OnboardError(f"unknown task '{args.task}'", field="--task", fix=f"use one of {list(TASKS)}")
    out = args.out or f"runs/data/teleop_{args.task}"
    launch_args = {"input": args.teleop, "output": str(out), "task": args.task, "seed": str(args.seed),
                   "dr": "false" if args.no_dr else "true", "overwrite": str(bool(args.overwrite)).lower(),
                   "instruction": TASK_SPECS[args.task].instruction, "fps": f"{args.fps:g}",
                   "camera": "true" if args.cameras else "false",
                   "image_width": str(args.image_size), "image_height": str(args.image_size),
                   "leader_calibration": args.leader_calibration}
    specs = load_launch(REPO_ROOT / "launch" / "teleop_sim.launch.yaml", launch_args)
    sup = Supervisor(specs)
    print(f"collect --teleop {args.task} with {args.teleop} -> {out}; episodes: Start/Y/Back buttons "
          "(keyboard: b/n/x) or `ros2 service call /recorder_node/start std_srvs/srv/Trigger`")
    if args.teleop != "keyboard":
        return sup.run()
    from ros_nodes.teleop_node import keyboard_main
    code = {}
    t = threading.Thread(target=lambda: code.setdefault("rc", sup.run()), daemon=True)
    t.start()
    try:
        keyboard_main([])
    finally:
        sup.request_stop("keyboard reader ended")
        t.join(timeout=15)
    return code.get("rc", 0)


def play_expert_episode(env, expert, writer, seed: int, task: str | None = None, privileged=None):
    """One scripted-expert episode into the writer's open episode (the caller saves or discards it).
    Returns (reset info, last step info, steps); frames are labelled ``task``, else the episode's instruction.
    ``privileged(env) -> {feature: value}`` adds simulator-only columns per frame (training labels that no
    policy input may use)."""
    obs, reset_info = env.reset(seed=seed)
    expert.reset(seed=reset_info["episode_seed"] % (2**32))
    text = task if task is not None else reset_info["instruction"]
    steps = 0
    while True:
        action = expert.act(obs)
        frame = {f"observation.{k}": v for k, v in obs.items() if not k.startswith("image.")}
        for cam in env.cameras:
            frame[f"observation.images.{cam}"] = obs[f"image.{cam}"]
        frame["action"] = action
        if privileged is not None:
            frame.update(privileged(env))
        writer.add_frame(frame, task=text)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated:
            return reset_info, info, steps


def _finish(out, successes: int, wanted: int, attempts: int) -> int:
    print(f"  dataset: {out.resolve()}")
    if successes < wanted:
        print(f"collect: only {successes}/{wanted} successful episodes after {attempts} attempts")
        return 1
    return 0


def run(args) -> int:
    if getattr(args, "teleop", None):
        return run_teleop(args)
    if args.task == "lang":
        return run_lang(args)
    import os
    import time

    os.environ.setdefault("MUJOCO_GL", "egl")   # offscreen rendering; must precede the mujoco import
    from pathlib import Path

    from tqdm import tqdm

    from onboard.errors import OnboardError
    from policies.dataset import LeRobotDatasetWriter, features_from_env
    from sim.arm_env import TASKS, ArmEnv
    from sim.experts import make_expert

    if args.task not in TASKS:
        raise OnboardError(f"unknown task '{args.task}'", field="--task", fix=f"use one of {list(TASKS)}")
    if args.episodes < 1:
        raise OnboardError(f"--episodes must be >= 1, got {args.episodes}", field="--episodes",
                           fix="ask for at least one episode")
    out = Path(args.out or f"runs/data/{args.task}")
    dr = False if args.no_dr else (args.dr or True)
    extra_info = {}
    if dr is not False:
        from sim2real.randomization import load_dr_config

        cfg = load_dr_config(None if dr is True else dr, robot="franka_panda", task=args.task)
        if args.calibration:
            from calibration.feed import apply_overrides, calibration_provenance, dr_overrides_from_calibration

            overrides = dr_overrides_from_calibration(args.calibration, control_hz=10.0)
            cfg = type(cfg)(sections=apply_overrides(cfg.sections, overrides), path=cfg.path)
            extra_info["calibration"] = calibration_provenance(args.calibration)["calibration"]
            print(f"collect: DR ranges set from calibration: {overrides}")
        extra_info["dr_ranges"] = {sec: {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}
                                   for sec, body in cfg.sections.items()}
        dr = cfg
    elif args.calibration:
        raise OnboardError("calibration sets DR ranges, but DR is off", field="--calibration",
                           fix="drop --no-dr or drop --calibration")
    size = (args.image_size, args.image_size)
    env = ArmEnv(args.task, dr=dr, seed=args.seed, cameras=tuple(args.cameras), image_size=size)
    expert = make_expert(env)
    features = features_from_env(env.obs_spec, env.profile.action_names, env.cameras, size)
    instruction = env.spec_task.instruction
    max_attempts = args.max_attempts or 2 * args.episodes + 10

    t0 = time.perf_counter()
    attempts = successes = steps = 0
    routes: dict = {}
    with LeRobotDatasetWriter(out, fps=env.control_hz, features=features, robot_type=env.profile.name,
                              overwrite=args.overwrite, extra_info=extra_info) as writer:
        bar = tqdm(total=args.episodes, desc=f"collect {args.task}", unit="ep")
        while successes < args.episodes and attempts < max_attempts:
            _, info, n = play_expert_episode(env, expert, writer, args.seed * 100_003 + attempts, instruction)
            attempts += 1
            steps += n
            if info["success"]:
                writer.save_episode()
                successes += 1
                routes[expert.route] = routes.get(expert.route, 0) + 1
                bar.update(1)
            else:
                writer.discard_episode()
            bar.set_postfix(success_rate=f"{successes / attempts:.2f}")
        bar.close()
    env.close()
    wall = time.perf_counter() - t0
    rate = successes / max(attempts, 1)
    print(f"collect {args.task}: kept {successes} episodes of {attempts} "
          f"(expert success rate {rate:.1%}), {steps} env steps in {wall:.1f} s "
          f"({steps / max(wall, 1e-9):.0f} steps/s), DR {'off' if dr is False else 'on'}")
    if any(r is not None for r in routes):
        print(f"  routes: {routes}")
    return _finish(out, successes, args.episodes, attempts)


# Simulator-only columns of a language dataset: where the named cube is and where it must go, per frame.
# Training labels for the VLA's auxiliary localisation loss (policies.vla.train); never a policy input.
LANG_PRIVILEGED_FEATURES = {
    "privileged.target_cube_pos": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"],
                                   "units": "m, world frame; the cube the instruction names"},
    "privileged.goal_pos": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"],
                            "units": "m, world frame; where that cube must end"},
}


def lang_privileged(env) -> dict:
    return {"privileged.target_cube_pos": env.object_pose()[0], "privileged.goal_pos": env.target_pos}


def run_lang(args) -> int:
    """Language tasks (sim.lang_env): every frame's task is the episode's instruction (meta/tasks.parquet)."""
    import os
    import time

    os.environ.setdefault("MUJOCO_GL", "egl")   # offscreen rendering; must precede the mujoco import
    from pathlib import Path

    from tqdm import tqdm

    from onboard.errors import OnboardError
    from policies.dataset import LeRobotDatasetWriter, features_from_env
    from sim.lang_env import LANG_CAMERAS, SPLITS, LangArmEnv, load_lang_dr
    from sim.lang_experts import make_lang_expert

    if args.episodes < 1:
        raise OnboardError(f"--episodes must be >= 1, got {args.episodes}", field="--episodes",
                           fix="ask for at least one episode")
    if args.split not in SPLITS:
        raise OnboardError(f"unknown split '{args.split}'", field="--split", fix=f"use one of {list(SPLITS)}")
    if args.calibration or args.teleop:
        raise OnboardError("--task lang records the scripted expert with the shipped DR", field="--task",
                           fix="drop --calibration / --teleop for --task lang")
    out = Path(args.out or "runs/data/lang")
    cameras = tuple(args.cameras) or LANG_CAMERAS
    size = (args.image_size, args.image_size)
    dr = False if args.no_dr else load_lang_dr(args.dr)
    env = LangArmEnv(args.split, dr=dr, seed=args.seed, cameras=cameras, image_size=size)
    expert = make_lang_expert(env)
    features = features_from_env(env.obs_spec, env.profile.action_names, env.cameras, size)
    features.update(LANG_PRIVILEGED_FEATURES)
    extra_info = {"onboard": {"task": "lang", "split": args.split, "cameras": list(cameras),
                              "instructions": env.instructions.path}}
    if dr is not False:
        extra_info["dr_ranges"] = {sec: {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}
                                   for sec, body in dr.sections.items()}
    max_attempts = args.max_attempts or 2 * args.episodes + 10

    t0 = time.perf_counter()
    attempts = successes = steps = 0
    per_task: dict = {}
    with LeRobotDatasetWriter(out, fps=env.control_hz, features=features, robot_type=env.profile.name,
                              overwrite=args.overwrite, extra_info=extra_info) as writer:
        bar = tqdm(total=args.episodes, desc="collect lang", unit="ep")
        while successes < args.episodes and attempts < max_attempts:
            info, step_info, n = play_expert_episode(env, expert, writer, args.seed * 100_003 + attempts,
                                                     privileged=lang_privileged)
            attempts += 1
            steps += n
            won, tried = per_task.get(info["task"], (0, 0))
            per_task[info["task"]] = (won + bool(step_info["success"]), tried + 1)
            if step_info["success"]:
                writer.save_episode(extra={"instruction": info["instruction"], "lang_task": info["task"],
                                           "colour": info["colour"], "slot": info["slot"]})
                successes += 1
                bar.update(1)
            else:
                writer.discard_episode()
            bar.set_postfix(success_rate=f"{successes / attempts:.2f}")
        bar.close()
    env.close()
    wall = time.perf_counter() - t0
    rate = successes / max(attempts, 1)
    print(f"collect lang ({args.split}): kept {successes} episodes of {attempts} "
          f"(expert success rate {rate:.1%}), {steps} env steps in {wall:.1f} s "
          f"({steps / max(wall, 1e-9):.0f} steps/s), DR {'off' if dr is False else 'on'}, cameras {list(cameras)}")
    print("  per task (successes/attempts): " + ", ".join(f"{k} {w}/{n}" for k, (w, n) in sorted(per_task.items())))
    return _finish(out, successes, args.episodes, attempts)
