"""``recorder_node``: synchronized episodes from ROS topics into a LeRobot v3 dataset.

Subscribes
- ``/joint_states`` -> ``observation.joint_pos``, ``observation.joint_vel``,
  ``observation.gripper_width`` (sum of the finger joints);
- ``/task_state`` -> ``observation.<label>`` for every labeled block, in message order
  (with the joint keys this is the env's obs_spec order, so a recorded dataset
  trains the diffusion policy exactly like an ``onboard collect`` one);
- ``/<forward_controller>/commands`` + ``gripper_topic`` -> ``action``: the command
  actually sent to the robot, after the safety filter;
- ``raw_action_topic`` -> ``action.raw``: the teleop/policy action before the filter;
- ``<camera_topics[i]>/image_raw`` -> ``observation.images.<camera_names[i]>``;
- ``instruction_topic`` std_msgs/String -> the task text of each frame
  (else the ``instruction`` parameter).

Services (std_srvs/Trigger): ``~/start``, ``~/stop`` (save), ``~/discard``.
teleop_node's episode buttons call them.

Publishes ``~/episode_report`` (std_msgs/String, JSON: frames, late rows,
dropped frames, camera gaps, stale inputs) when an episode is written, and
``/diagnostics``.

The work is ``policies.recorder.EpisodeRecorder``: callbacks only store the
latest value; a timer takes rows at ``fps``; video encoding and writing run on
worker threads; each episode is finalized atomically. SIGINT discards the open
episode and finishes the stopped ones; SIGKILL loses only the open episode.

Imports rclpy, policies.recorder, onboard.spec and ros_nodes.common/adapters.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TASK_UNITS = {"ee_pos": "m (TCP, world frame)", "object_pos": "m (world frame)", "target_pos": "m (world frame)",
              "object_yaw_sincos": "[sin, cos] of 4*yaw (the box is symmetric under 90 deg turns)"}


def recorded_features(profile, task_blocks: dict[str, int], cameras: dict[str, tuple[int, int]],
                      raw_action: bool) -> dict:
    """Dataset features: the same as ``onboard collect`` (policies.dataset.features_from_env), plus ``action.raw``."""
    from policies.dataset import features_from_env
    n = profile.n_joints
    spec = [{"name": "joint_pos", "shape": [n], "units": "rad"},
            {"name": "joint_vel", "shape": [n], "units": "rad/s"},
            {"name": "gripper_width", "shape": [1], "units": "m"}]
    spec += [{"name": k, "shape": [size], "units": TASK_UNITS.get(k, "")} for k, size in task_blocks.items()]
    feats = {}
    for name, (h, w) in cameras.items():
        feats.update(features_from_env([], profile.action_names, (name,), (h, w)))
    base = features_from_env(spec, profile.action_names)
    feats = {**{k: v for k, v in base.items() if k != "action"}, **{k: v for k, v in feats.items() if k != "action"},
             "action": base["action"]}
    if raw_action:
        feats["action.raw"] = dict(base["action"], units="the action before the safety filter (teleop or policy)")
    return feats


def _make_node():
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger

    from onboard.errors import ConfigError, OnboardError
    from onboard.spec.robot import load_robot
    from policies.recorder import EpisodeRecorder
    from ros_nodes.adapters import ros2_control as rc
    from ros_nodes.common import (TASK_STATE_TOPIC, StateError, command_qos, diagnostic_status, image_to_array,
                                  latched_qos, read_labeled_array, sensor_qos, stamp_to_s)

    class RecorderNode(Node):
        def __init__(self):
            super().__init__("recorder_node")
            from rcl_interfaces.msg import ParameterDescriptor
            loose = ParameterDescriptor(dynamic_typing=True)     # fps:=10 and fps:=10.0 both work

            def p(name, default):
                return self.declare_parameter(name, default, loose)
            self.output = p("output", "runs/data/teleop").value
            self.fps = float(p("fps", 10.0).value)
            robot = p("robot", "franka_panda").value
            self.task = p("task", "").value
            self.overwrite = bool(p("overwrite", False).value)
            fwd = p("forward_controller", "forward_position_controller").value.strip("/")
            gripper_topic = p("gripper_topic", "/gripper/commands").value
            joints = [j for j in p("joints", [""]).value if j]
            raw_topic = p("raw_action_topic", "/teleop/action_raw").value
            instruction_topic = p("instruction_topic", "/instruction").value
            self.instruction = p("instruction", "").value
            cam_topics = [c for c in p("camera_topics", [""]).value if c]
            cam_names = [c for c in p("camera_names", [""]).value if c]
            self.image_h = int(p("image_height", 96).value)
            self.image_w = int(p("image_width", 96).value)
            self.max_age_s = float(p("max_age_s", 0.25).value)
            self.video_preset = p("video_preset", "ultrafast").value
            self.source = p("source", "teleop").value
            self.autostart = bool(p("autostart", False).value)
            self.executor_kind = p("executor", "events").value
            if not self.fps > 0:
                raise ConfigError(f"fps {self.fps} is not positive", field="fps", fix="e.g. fps: 10.0")
            if len(cam_names) != len(cam_topics):
                raise ConfigError(f"{len(cam_topics)} camera_topics but {len(cam_names)} camera_names",
                                  field="camera_names", fix="name every camera topic")
            if (Path(self.output) / "meta" / "info.json").exists() and not self.overwrite:
                raise OnboardError("a dataset already exists here", file=self.output, field="output",
                                   fix="choose another output or set overwrite: true")
            self.profile = load_robot(robot)
            self.arm_joints = tuple(self.profile.joint_names)
            self.finger_joints = tuple((self.profile.gripper or {}).get("joint_names", ()))
            self.controller_joints = tuple(joints) or self.arm_joints
            self.cameras = dict(zip(cam_names, cam_topics))
            self.rec: EpisodeRecorder | None = None
            self.task_blocks: dict[str, int] | None = None
            self.pending_values: dict[str, tuple] = {}
            self.pending_images: dict[str, tuple] = {}
            self.arm_cmd = None
            self.width_cmd = None
            self.saved = 0
            self.last_message = "idle"

            self.pub_report = self.create_publisher(String, "~/episode_report", 10)
            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self.create_subscription(JointState, "/joint_states", self.on_joint_states, sensor_qos())
            self.create_subscription(Float64MultiArray, TASK_STATE_TOPIC, self.on_task_state, sensor_qos(10))
            self.create_subscription(Float64MultiArray, f"/{fwd}/commands", self.on_command, command_qos())
            self.create_subscription(Float64MultiArray, gripper_topic, self.on_gripper, command_qos())
            self.raw_action = bool(raw_topic)
            if raw_topic:
                self.create_subscription(Float64MultiArray, raw_topic, self.on_raw, sensor_qos(5))
            self.create_subscription(String, instruction_topic, self.on_instruction, latched_qos())
            for name, topic in self.cameras.items():
                self.create_subscription(Image, f"{topic.rstrip('/')}/image_raw",
                                         lambda m, name=name: self.on_image(name, m), sensor_qos(5))
            self.create_service(Trigger, "~/start", self.srv_start)
            self.create_service(Trigger, "~/stop", self.srv_stop)
            self.create_service(Trigger, "~/discard", self.srv_discard)
            self.create_timer(0.5 / self.fps, self.on_tick)
            self.create_timer(0.5, self.publish_diagnostics)
            self.get_logger().info(f"recorder_node: -> {self.output} at {self.fps:g} fps, cameras "
                                   f"{list(self.cameras) or 'none'}; services ~/start ~/stop ~/discard")

        def now_s(self) -> float:
            return self.get_clock().now().nanoseconds * 1e-9

        # ---- inputs: store the latest value, nothing else ---------------------------------
        def _set(self, key, value, t):
            if self.rec is not None:
                self.rec.set_value(key, value, t)
            else:
                self.pending_values[key] = (value, t)

        def on_joint_states(self, msg) -> None:
            from ros_nodes.common import joint_state_arrays
            try:
                q, dq = joint_state_arrays(msg.name, msg.position, msg.velocity, self.arm_joints)
            except StateError:
                return
            t = self.now_s()
            width = sum(p for n, p in zip(msg.name, msg.position) if n in self.finger_joints)
            self._set("observation.joint_pos", q, t)
            self._set("observation.joint_vel", dq, t)
            self._set("observation.gripper_width", [width], t)

        def on_task_state(self, msg) -> None:
            try:
                blocks = read_labeled_array(msg)
            except StateError:
                return
            if self.task_blocks is None:
                self.task_blocks = {k: len(v) for k, v in blocks.items()}
            t = self.now_s()
            for k, v in blocks.items():
                if k in self.task_blocks and len(v) == self.task_blocks[k]:
                    self._set(f"observation.{k}", v, t)

        def on_command(self, msg) -> None:
            v = np.asarray(msg.data, dtype=float)
            if len(v) != len(self.controller_joints) or not np.all(np.isfinite(v)):
                return
            self.arm_cmd = rc.reorder(v, self.controller_joints, self.arm_joints)
            self._action(self.now_s())

        def on_gripper(self, msg) -> None:
            if len(msg.data) == 1 and np.isfinite(msg.data[0]):
                self.width_cmd = float(msg.data[0])
                self._action(self.now_s())

        def _action(self, t) -> None:
            if self.arm_cmd is not None and self.width_cmd is not None:
                self._set("action", np.r_[self.arm_cmd, self.width_cmd], t)

        def on_raw(self, msg) -> None:
            v = np.asarray(msg.data, dtype=float)
            if len(v) == len(self.profile.action_names) and np.all(np.isfinite(v)):
                self._set("action.raw", v, self.now_s())

        def on_instruction(self, msg) -> None:
            self.instruction = msg.data
            if self.rec is not None:
                self.rec.set_instruction(msg.data)

        def on_image(self, name, msg) -> None:
            try:
                img = image_to_array(msg)
            except StateError:
                return
            key = f"observation.images.{name}"
            t, stamp = self.now_s(), stamp_to_s(msg.header.stamp)
            if self.rec is not None:
                self.rec.set_image(key, img, t, stamp)
            else:
                self.pending_images[key] = (img, t, stamp)

        # ---- episodes ------------------------------------------------------------------
        def _ensure_recorder(self) -> str:
            """The dataset's features are fixed by the first /task_state and images; '' when ready."""
            if self.rec is not None:
                return ""
            if self.task_blocks is None:
                return f"waiting for {TASK_STATE_TOPIC}"
            missing = [n for n in self.cameras if f"observation.images.{n}" not in self.pending_images]
            if missing:
                return f"waiting for images from {missing}"
            cams = {}
            for name in self.cameras:
                img = self.pending_images[f"observation.images.{name}"][0]
                cams[name] = (self.image_h or img.shape[0], self.image_w or img.shape[1])
            feats = recorded_features(self.profile, self.task_blocks, cams, self.raw_action)
            extra = {"onboard": {"source": self.source, "task": self.task, "recorder": "recorder_node"}}
            self.rec = EpisodeRecorder(self.output, self.fps, feats, robot_type=self.profile.name,
                                       overwrite=self.overwrite, extra_info=extra, max_age_s=self.max_age_s,
                                       video_preset=self.video_preset, instruction=self.instruction or self.task,
                                       on_saved=self.on_saved)
            for k, (v, t) in self.pending_values.items():
                if k in feats:
                    self.rec.set_value(k, v, t)
            for k, (img, t, stamp) in self.pending_images.items():
                self.rec.set_image(k, img, t, stamp)
            return ""

        def start(self) -> tuple[bool, str]:
            try:
                wait = self._ensure_recorder()
                if wait:
                    return False, wait
                msg = self.rec.start(self.now_s())
            except OnboardError as exc:
                return False, str(exc)
            self.last_message = msg
            self.get_logger().info(msg)
            return True, msg

        def srv_start(self, request, response):
            response.success, response.message = self.start()
            return response

        def srv_stop(self, request, response):
            if self.rec is None or not self.rec.recording:
                response.success, response.message = False, "no episode is being recorded"
                return response
            report = self.rec.stop(self.now_s())
            response.success = True
            response.message = (f"saving {report['frames']} frames ({report['duration_s']:.1f} s); "
                                f"late rows {report['late_rows']}, dropped frames "
                                f"{sum(v for k, v in report.items() if k.startswith('dropped_frames'))}")
            self.last_message = response.message
            self.get_logger().info(response.message)
            return response

        def srv_discard(self, request, response):
            if self.rec is None or not self.rec.recording:
                response.success, response.message = False, "no episode is being recorded"
                return response
            n = self.rec.discard()
            response.success, response.message = True, f"discarded {n} frames"
            self.last_message = response.message
            self.get_logger().info(response.message)
            return response

        def on_saved(self, report: dict) -> None:       # the finalizer thread
            self.saved += 1
            self.pub_report.publish(String(data=json.dumps(report)))
            self.get_logger().info(f"episode {report['episode_index']} written: {json.dumps(report)}")

        def on_tick(self) -> None:
            if self.rec is None:
                if self.autostart and not self._ensure_recorder():
                    self.start()
                return
            if self.autostart and not self.rec.recording and self.saved == 0 and self.rec.pending == 0:
                self.start()
            self.rec.tick(self.now_s())

        def publish_diagnostics(self) -> None:
            rec = self.rec
            values = {"output": self.output, "recording": bool(rec and rec.recording),
                      "open_frames": rec.open_rows if rec else 0, "episodes_saved": self.saved,
                      "pending": rec.pending if rec else 0, "last": self.last_message}
            if rec and rec.errors:
                values["error"] = rec.errors[-1]
            level = "error" if rec and rec.errors else "ok"
            arr = DiagnosticArray()
            arr.header.stamp = self.get_clock().now().to_msg()
            arr.status = [diagnostic_status(f"{self.get_name()}: recorder", level, self.last_message, values)]
            self.pub_diag.publish(arr)

        def close(self) -> None:
            if self.rec is not None:
                self.rec.close()

    return RecorderNode()


def main(argv=None) -> int:
    from ros_nodes.common import run_node

    def finish(node):
        node.close()      # discard the open episode, finish the stopped ones, write meta
        print(f"recorder_node: {node.saved} episodes in {node.output}", file=sys.stderr)
    return run_node("recorder_node", _make_node, argv, on_close=finish)


if __name__ == "__main__":
    sys.exit(main())
