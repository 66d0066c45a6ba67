"""``onboard replay DATASET --episode K``: drive the simulated (or a real) arm with a recorded episode.

Every recorded action passes ``sim2real.safety.SafetyFilter`` before it reaches
the robot, exactly as in teleoperation and policy execution.

- ``--target sim`` (default): MuJoCo ``ArmEnv`` at the dataset's fps, the task
  from ``info.json`` (``onboard.task``) or ``--task``. The arm starts at the
  episode's first recorded joint positions (``--from-ready`` starts at the ready
  pose and lets the filter's ramp-in bring it over). Reports how closely the
  replayed joints follow the recorded ones.
- ``--target ros``: publishes the filtered actions on
  ``/<forward_controller>/commands`` and ``gripper_topic`` at the dataset's fps,
  starting from the measured ``/joint_states`` (a real driver, or sim_node).
"""
from __future__ import annotations

HELP = "replay a recorded episode on the simulated or a real arm, through the safety filter"


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="dataset root (LeRobot v3)")
    parser.add_argument("--episode", type=int, default=0)
    parser.add_argument("--target", choices=("sim", "ros"), default="sim")
    parser.add_argument("--task", default=None, help="sim task (default: info.json onboard.task, else reach)")
    parser.add_argument("--seed", type=int, default=0, help="sim seed (object and target placement)")
    parser.add_argument("--from-ready", action="store_true", help="sim: start at the ready pose, not the recorded start")
    parser.add_argument("--robot", default=None, help="robot profile (default: the dataset's robot_type)")
    parser.add_argument("--safety", default=None, help="safety YAML (default: config/safety/<robot>.yaml)")
    parser.add_argument("--forward-controller", default="forward_position_controller")
    parser.add_argument("--gripper-topic", default="/gripper/commands")
    parser.add_argument("--state-timeout", type=float, default=10.0, help="ros: seconds to wait for /joint_states")


def _episode(args):
    from onboard.errors import OnboardError
    from policies.dataset import load_dataset
    ds = load_dataset(args.dataset)
    if not 0 <= args.episode < ds.num_episodes:
        raise OnboardError(f"episode {args.episode} does not exist", file=args.dataset, field="--episode",
                           fix=f"use 0..{ds.num_episodes - 1}")
    sl = ds.episode_slice(args.episode)
    return ds, ds.column("action")[sl].astype(float), ds.column("observation.joint_pos")[sl].astype(float)


def _filter(args, profile, fps):
    from sim2real.safety import SafetyFilter
    dt = 1.0 / fps
    return SafetyFilter.from_yaml(profile, args.safety, dt_s=dt) if args.safety else SafetyFilter.for_robot(profile, dt)


def run(args) -> int:
    import os
    os.environ.setdefault("MUJOCO_GL", "egl")
    from onboard.spec.robot import load_robot

    ds, actions, q_rec = _episode(args)
    profile = load_robot(args.robot or ds.info.get("robot_type") or "franka_panda")
    safety = _filter(args, profile, ds.fps)
    if args.target == "ros":
        return _replay_ros(args, profile, safety, actions, ds.fps)
    return _replay_sim(args, ds, profile, safety, actions, q_rec)


def _replay_sim(args, ds, profile, safety, actions, q_rec) -> int:
    import mujoco
    import numpy as np

    from sim.arm_env import ArmEnv

    task = args.task or (ds.info.get("onboard") or {}).get("task") or "reach"
    env = ArmEnv(task, dr=False, seed=args.seed, control_hz=ds.fps, robot=profile.name)
    obs, _ = env.reset(seed=args.seed)
    if not args.from_ready:          # put the arm where the recording started
        ix = env.ix
        env.data.qpos[ix.arm_qpos_adr] = q_rec[0]
        env.data.qvel[ix.arm_dof_adr] = 0.0
        env.data.ctrl[ix.arm_actuator_ids] = q_rec[0]
        mujoco.mj_forward(env.model, env.data)
        obs = env._obs()
    n = profile.n_joints
    errors, info = [], {"success": False}
    for i, action in enumerate(actions):
        t = i / ds.fps
        state = {"q": np.r_[obs["joint_pos"], obs["gripper_width"]], "dq": np.r_[obs["joint_vel"], 0.0]}
        if i == 0:
            safety.reset(state, t)
        safe = safety.filter(action, t, state)
        obs, _, _, _, info = env.step(safe)
        if i + 1 < len(q_rec):
            errors.append(np.abs(obs["joint_pos"] - q_rec[i + 1][:n]).max())
    env.close()
    s = safety.summary(last=0)
    err = np.asarray(errors) if errors else np.zeros(1)
    settled = int(np.ceil(safety.env.ramp_in_s * ds.fps))     # the filter's ramp-in bends the first steps
    after = err[settled:] if len(err) > settled else err[-1:]
    print(f"replay {args.dataset} episode {args.episode} in sim ({task}): {len(actions)} actions at {ds.fps:g} Hz "
          f"through the safety filter ({s['total']} interventions {s['counts']}); joint tracking vs the "
          f"recording: mean {err.mean():.4f} rad, max {err.max():.4f} rad; after the ramp-in: mean "
          f"{after.mean():.4f} rad, max {after.max():.4f} rad; task success {bool(info.get('success'))}")
    return 0


def _replay_ros(args, profile, safety, actions, fps) -> int:
    import time

    import numpy as np
    import rclpy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from onboard.errors import OnboardError
    from ros_nodes.adapters import ros2_control as rc
    from ros_nodes.common import StateGate, command_qos, make_executor, sensor_qos, stamp_to_s

    rclpy.init()
    node = rclpy.create_node("onboard_replay")
    joints = tuple(profile.joint_names)
    fingers = tuple((profile.gripper or {}).get("joint_names", ()))
    gate = StateGate(joints, float(profile.rates_hz.get("state_hz", 500)))
    node.create_subscription(JointState, "/joint_states",
                             lambda m: gate.offer(m.name, m.position, m.velocity, stamp_to_s(m.header.stamp),
                                                  time.monotonic()), sensor_qos())
    pub = node.create_publisher(Float64MultiArray, f"/{args.forward_controller.strip('/')}/commands", command_qos())
    pub_g = node.create_publisher(Float64MultiArray, args.gripper_topic, command_qos())
    ex = make_executor("events")
    ex.add_node(node)

    def state():
        width = sum(gate.extra.get(j, 0.0) for j in fingers)
        return {"q": np.r_[gate.q, width], "dq": np.r_[gate.dq, 0.0]}
    try:
        end = time.monotonic() + args.state_timeout
        while gate.q is None and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        if gate.q is None:
            raise OnboardError(f"no /joint_states within {args.state_timeout:g} s", field="/joint_states",
                               fix="start the robot driver (or sim_node) on this ROS_DOMAIN_ID")
        t0 = time.monotonic()
        safety.reset(state(), 0.0)
        n = profile.n_joints
        for i, action in enumerate(actions):
            while time.monotonic() < t0 + i / fps:
                ex.spin_once(timeout_sec=max(0.0, min(0.01, t0 + i / fps - time.monotonic())))
            safety.update_state(state(), gate.last_receive_s - t0)
            safe = safety.filter(action, time.monotonic() - t0)
            pub.publish(rc.forward_command(safe[:n], joints, joints))
            pub_g.publish(rc.gripper_command(safe[n]))
        s = safety.summary(last=0)
        print(f"replay {args.dataset} episode {args.episode} over ROS: {len(actions)} commands at {fps:g} Hz "
              f"({s['total']} safety interventions {s['counts']})")
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
