"""``sim_node``: the MuJoCo Panda (``sim.arm_env.ArmEnv``) playing the real robot over ROS 2.

It speaks the topics of a ros2_control Panda driver, so launch files swap sim
and real by one argument:

Publishes
- ``/joint_states`` sensor_msgs/JointState at ``publish_rate`` Hz: the 7 arm
  joints (profile names) + the 2 finger joints; position, velocity, effort.
- ``/task_state`` std_msgs/Float64MultiArray, labeled blocks (``layout.dim[i].label``
  = observation key, ``size`` = length, ``stride`` = offset): ``ee_pos``,
  ``object_pos``, ``object_yaw_sincos``, ``target_pos`` as the task has them.
  On a real robot a perception node publishes this message.
- ``~/success`` std_msgs/Bool (transient-local), the task's success flag.
- ``<camera.topic>/image_raw`` + ``<camera.topic>/camera_info`` when ``camera.enabled``;
  with ``camera.names`` (several cameras) ``<camera.topic>/<name>/image_raw`` + ``camera_info`` each.
- ``~/episode_instruction`` std_msgs/String (transient-local), ``task: lang`` only:
  the instruction of the episode (``sim.lang_env.LangArmEnv``; ``lang.instruction``
  forces one, ``lang.split`` picks the split).
- ``/clock`` when ``use_sim_time`` is true (this node is then the clock source).

Subscribes
- ``/<forward_controller>/commands`` std_msgs/Float64MultiArray, values in ``joints`` order;
- ``/<trajectory_controller>/joint_trajectory`` trajectory_msgs/JointTrajectory,
  interpolated by ``time_from_start`` (linear, holding the last point);
- ``gripper_topic`` std_msgs/Float64MultiArray ``[width_m]``.

Physics steps in real time (``mj_step`` catches up to the wall clock each tick),
or, with ``use_sim_time``, advances a fixed sim-time step per tick paced by
``real_time_factor`` and publishes /clock, so nodes using sim time run in
lockstep with the simulator. DR comes from the shipped YAML of the task (or
``dr_config``), drawn at reset with ``seed``.

Imports rclpy, sim and ros_nodes.common/adapters; never policies.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray, String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from ros_nodes.adapters.ros2_control import reorder, sample_trajectory, trajectory_arrays  # noqa: E402
from ros_nodes.common import (TASK_STATE_TOPIC, array_to_image, camera_info, command_qos,  # noqa: E402
                              labeled_array, latched_qos, run_node, s_to_stamp, sensor_qos, stamp_to_s)

MAX_CATCHUP_STEPS = 50     # physics steps per tick at most: a stalled process loses time, never explodes


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_node", **kwargs)
        from sim.arm_env import ArmEnv

        p = self.declare_parameter
        self.robot = p("robot", "franka_panda").value
        self.task = p("task", "reach").value
        seed = int(p("seed", 0).value)
        dr = bool(p("dr", True).value)
        dr_config = p("dr_config", "").value
        self.publish_rate = float(p("publish_rate", 0.0).value)
        self.task_state_rate = float(p("task_state_rate", 50.0).value)
        self.real_time_factor = float(p("real_time_factor", 1.0).value)
        fwd = p("forward_controller", "forward_position_controller").value
        jtc = p("trajectory_controller", "joint_trajectory_controller").value
        gripper_topic = p("gripper_topic", "/gripper/commands").value
        joints = list(p("joints", [""]).value)
        cam_on = bool(p("camera.enabled", False).value)
        self.cam_name = p("camera.name", "front").value
        cam_names = [n for n in p("camera.names", [""]).value if n]
        lang_split = p("lang.split", "seen").value
        lang_instruction = p("lang.instruction", "").value
        cam_w = int(p("camera.width", 640).value)
        cam_h = int(p("camera.height", 480).value)
        self.cam_rate = float(p("camera.rate_hz", 15.0).value)
        cam_topic = p("camera.topic", "/camera").value.rstrip("/")
        self.executor_kind = p("executor", "events").value
        self.sim_time = bool(self.get_parameter("use_sim_time").value)

        dr_arg = (dr_config or True) if dr else False
        if self.task == "lang":      # language-conditioned scene: three cubes, a pad, front + wrist cameras
            from sim.lang_env import LANG_CAMERAS, LangArmEnv
            cam_names = cam_names or list(LANG_CAMERAS)
            self.env = LangArmEnv(split=lang_split, dr=dr_arg, seed=seed, cameras=tuple(cam_names) if cam_on else (),
                                  image_size=(cam_h, cam_w), robot=self.robot)
            self.env.reset(seed=seed, options={"instruction": lang_instruction} if lang_instruction else None)
        else:
            cam_names = cam_names or [self.cam_name]
            self.env = ArmEnv(task=self.task, dr=dr_arg, seed=seed, cameras=tuple(cam_names) if cam_on else (),
                              image_size=(cam_h, cam_w), robot=self.robot)
            self.env.reset(seed=seed)
        self.env.cameras = ()      # images are rendered here at camera.rate_hz, not in every obs
        prof = self.env.profile
        self.arm_joints = tuple(prof.joint_names)
        self.finger_joints = tuple((prof.gripper or {}).get("joint_names", []))
        self.controller_joints = tuple(j for j in joints if j) or self.arm_joints
        if self.publish_rate <= 0:
            self.publish_rate = float(prof.rates_hz.get("state_hz", 500))
        m, d, ix = self.env.model, self.env.data, self.env.ix
        self.dt_phys = float(m.opt.timestep)
        self.steps_per_tick = max(1, int(round(1.0 / (self.publish_rate * self.dt_phys))))
        self.ctrl_low = m.actuator_ctrlrange[ix.arm_actuator_ids, 0].copy()
        self.ctrl_high = m.actuator_ctrlrange[ix.arm_actuator_ids, 1].copy()
        self.grip_range = m.actuator_ctrlrange[ix.gripper_actuator_id].copy()
        self.target_q = d.ctrl[ix.arm_actuator_ids].copy()
        self.trajectory = None          # (start_s, start_q, times, positions)
        self.commands_received = 0
        self.commands_rejected = 0
        self.success = None

        self.pub_js = self.create_publisher(JointState, "/joint_states", QoSProfile(depth=10))
        self.pub_task = self.create_publisher(Float64MultiArray, TASK_STATE_TOPIC, QoSProfile(depth=10))
        self.pub_success = self.create_publisher(Bool, "~/success", latched_qos())
        self.pub_clock = None
        if self.sim_time:
            from rosgraph_msgs.msg import Clock as ClockMsg
            self._clock_msg = ClockMsg()
            self.pub_clock = self.create_publisher(ClockMsg, "/clock", QoSProfile(depth=10))
        self.cams = []               # (name, image publisher, info publisher, fovy)
        for name in cam_names if cam_on else []:
            topic = cam_topic if len(cam_names) == 1 else f"{cam_topic}/{name}"
            cam_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, name)
            self.cams.append((name, self.create_publisher(Image, f"{topic}/image_raw", sensor_qos()),
                              self.create_publisher(CameraInfo, f"{topic}/camera_info", sensor_qos()),
                              float(m.cam_fovy[cam_id]) if cam_id >= 0 else 45.0))
        if self.task == "lang":
            self.pub_instruction = self.create_publisher(String, "~/episode_instruction", latched_qos())
            self.pub_instruction.publish(String(data=self.env.instruction))
        self.create_subscription(Float64MultiArray, f"/{fwd.strip('/')}/commands", self.on_forward_command,
                                 command_qos())
        self.create_subscription(JointTrajectory, f"/{jtc.strip('/')}/joint_trajectory", self.on_trajectory,
                                 command_qos())
        self.create_subscription(Float64MultiArray, gripper_topic, self.on_gripper, command_qos())

        self.js = JointState(name=list(self.arm_joints + self.finger_joints))
        self.sim_t = 0.0
        self.steps_done = 0
        self.t0_wall = time.monotonic()
        self.next_task_state = 0.0
        self.next_image = 0.0
        steady = Clock(clock_type=ClockType.STEADY_TIME)   # never the sim clock this node itself publishes
        period = 1.0 / self.publish_rate / (self.real_time_factor if self.sim_time else 1.0)
        self.create_timer(period, self.tick, clock=steady)
        if self.task == "lang":
            self.get_logger().info(f"sim_node: lang episode ({lang_split}): {self.env.instruction!r}")
        self.get_logger().info(
            f"sim_node: {self.robot} task={self.task} dr={dr} seed={seed} joint_states at "
            f"{self.publish_rate:g} Hz, {'sim time (/clock)' if self.sim_time else 'real time'}, "
            f"controller joints {list(self.controller_joints)}")

    # ---- commands ----------------------------------------------------------------
    def on_forward_command(self, msg: Float64MultiArray) -> None:
        v = np.asarray(msg.data, dtype=float)
        if len(v) != len(self.controller_joints) or not np.all(np.isfinite(v)):
            self.commands_rejected += 1
            self.get_logger().warn(f"rejected forward command of {len(v)} values (want "
                                   f"{len(self.controller_joints)} finite)", throttle_duration_sec=2.0)
            return
        self.trajectory = None
        self.target_q = reorder(v, self.controller_joints, self.arm_joints)
        self.commands_received += 1

    def on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            times, pos = trajectory_arrays(msg, self.arm_joints)
        except (ValueError, KeyError) as exc:
            self.commands_rejected += 1
            self.get_logger().warn(f"rejected trajectory: {exc}", throttle_duration_sec=2.0)
            return
        stamp = stamp_to_s(msg.header.stamp)
        start = self.now_s() if stamp == 0.0 else stamp
        self.trajectory = (start, self.current_target(), times, pos)
        self.commands_received += 1

    def on_gripper(self, msg: Float64MultiArray) -> None:
        if len(msg.data) != 1 or not math.isfinite(msg.data[0]):
            self.commands_rejected += 1
            return
        ix = self.env.ix
        self.env.data.ctrl[ix.gripper_actuator_id] = float(np.clip(msg.data[0], *self.grip_range))

    def current_target(self) -> np.ndarray:
        if self.trajectory is None:
            return self.target_q
        start, q0, times, pos = self.trajectory
        return sample_trajectory(times, pos, q0, self.now_s() - start)

    # ---- time --------------------------------------------------------------------
    def now_s(self) -> float:
        if self.sim_time:
            return self.sim_t
        return self.get_clock().now().nanoseconds * 1e-9

    # ---- the loop ----------------------------------------------------------------
    def tick(self) -> None:
        m, d, ix = self.env.model, self.env.data, self.env.ix
        if self.sim_time:
            n = self.steps_per_tick
        else:
            due = int((time.monotonic() - self.t0_wall) / self.dt_phys)
            n = min(due - self.steps_done, MAX_CATCHUP_STEPS)
            if n <= 0:
                return
            self.steps_done = due if due - self.steps_done > MAX_CATCHUP_STEPS else self.steps_done + n
        target = self.current_target()
        d.ctrl[ix.arm_actuator_ids] = np.clip(target, self.ctrl_low, self.ctrl_high)
        mujoco.mj_step(m, d, nstep=n)
        self.sim_t += n * self.dt_phys
        now = self.now_s()
        if self.pub_clock is not None:
            s_to_stamp(self.sim_t, self._clock_msg.clock)
            self.pub_clock.publish(self._clock_msg)
        self.publish_joint_states(now)
        if now >= self.next_task_state:
            self.next_task_state = now + 1.0 / self.task_state_rate
            self.publish_task_state()
        if self.cams and now >= self.next_image:
            self.next_image = now + 1.0 / self.cam_rate
            for name, pub_img, pub_info, fovy in self.cams:
                img = self.env.render_camera(name)
                pub_img.publish(array_to_image(img, now, frame_id=f"{name}_optical_frame"))
                pub_info.publish(camera_info(img.shape[1], img.shape[0], fovy, now, frame_id=f"{name}_optical_frame"))

    def publish_joint_states(self, now: float) -> None:
        d, ix = self.env.data, self.env.ix
        fq = d.qpos[ix.finger_qpos_adr].tolist() if self.finger_joints else []
        fv = d.qvel[ix.finger_dof_adr].tolist() if self.finger_joints else []
        fe = d.qfrc_actuator[ix.finger_dof_adr].tolist() if self.finger_joints else []
        s_to_stamp(now, self.js.header.stamp)
        self.js.position = d.qpos[ix.arm_qpos_adr].tolist() + fq
        self.js.velocity = d.qvel[ix.arm_dof_adr].tolist() + fv
        self.js.effort = d.qfrc_actuator[ix.arm_dof_adr].tolist() + fe
        self.pub_js.publish(self.js)

    def task_features(self) -> dict[str, np.ndarray]:
        obs = self.env.observe()
        skip = {"joint_pos", "joint_vel", "gripper_width"}   # those travel on /joint_states
        return {k: v for k, v in obs.items() if k not in skip and not k.startswith("image.")}

    def publish_task_state(self) -> None:
        self.pub_task.publish(labeled_array(self.task_features()))
        success = bool(self.env.is_success())
        if success != self.success:
            self.success = success
            self.pub_success.publish(Bool(data=success))
            if success:
                self.get_logger().info("task success")


def main(argv=None) -> int:
    return run_node("sim_node", SimNode, argv)


if __name__ == "__main__":
    sys.exit(main())
