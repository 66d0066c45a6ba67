"""``teleop_node``: a human drives the arm through the safety filter (keyboard, gamepad, spacemouse, leader arm).

Inputs (parameter ``input``):
- ``gamepad``: ``joy_topic`` sensor_msgs/Joy (from a joy driver); hold the deadman (LB).
- ``keyboard``: the same Joy path, published by the keyboard reader
  (``python -m ros_nodes.teleop_node --keyboard`` in a terminal, or
  ``onboard collect --teleop keyboard``), which turns keys into a virtual gamepad.
- ``spacemouse``: ``twist_topic`` geometry_msgs/Twist (m/s, rad/s); fresh twists
  are the deadman; the spacemouse's Joy buttons (``joy_topic``) work the gripper.
- ``leader``: ``leader_topic`` sensor_msgs/JointState mapped by
  ``leader_calibration`` (signs and zero offsets); fresh messages engage.

Cartesian inputs go through ``DifferentialIK`` to joint targets
(``ros_nodes.teleop_inputs``). Every command, teleop or forwarded policy,
passes ``sim2real.safety.SafetyFilter`` before it is published on
``/<forward_controller>/commands`` and ``gripper_topic``. The raw (pre-filter)
action goes to ``raw_action_topic`` for the recorder.

Priority: with ``policy_command_topic`` set (remap policy_node's output there),
this node is the mux: the policy's commands are forwarded while the human is
disengaged and ignored while the deadman is held, so teleop always wins.
Disengaged with no fresh policy command, the node holds the last safe command.

Episode buttons (start / stop / discard) call the recorder's std_srvs/Trigger
services ``<recorder>/start|stop|discard`` asynchronously (never blocking the loop).

Imports rclpy, sim2real.safety, onboard.spec and ros_nodes.{common, teleop_inputs, adapters}.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from ros_nodes.teleop_inputs import (INPUTS, JoyMapping, KeyboardJoy, LeaderArmMap, TeleopController,
                                     select_command)


def _make_node():
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Twist
    from rclpy.node import Node
    from sensor_msgs.msg import JointState, Joy
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger

    from onboard.errors import ConfigError
    from onboard.spec.robot import load_robot
    from ros_nodes.adapters import ros2_control as rc
    from ros_nodes.common import StateGate, command_qos, diagnostic_status, sensor_qos, stamp_to_s
    from sim2real.safety import SafetyFilter

    class TeleopNode(Node):
        def __init__(self):
            super().__init__("teleop_node")
            from rcl_interfaces.msg import ParameterDescriptor
            loose = ParameterDescriptor(dynamic_typing=True)     # fps:=10 and fps:=10.0 both work

            def p(name, default):
                return self.declare_parameter(name, default, loose)
            self.kind = p("input", "gamepad").value
            robot = p("robot", "franka_panda").value
            safety_config = p("safety_config", "").value
            self.rate_hz = float(p("rate_hz", 50.0).value)
            joy_topic = p("joy_topic", "/joy").value
            twist_topic = p("twist_topic", "/spacenav/twist").value
            leader_topic = p("leader_topic", "/leader/joint_states").value
            leader_cal = p("leader_calibration", "").value
            fwd = p("forward_controller", "forward_position_controller").value.strip("/")
            gripper_topic = p("gripper_topic", "/gripper/commands").value
            joints = [j for j in p("joints", [""]).value if j]
            raw_topic = p("raw_action_topic", "/teleop/action_raw").value
            policy_topic = p("policy_command_topic", "").value
            policy_gripper_topic = p("policy_gripper_topic", "").value
            self.policy_timeout_s = float(p("policy_timeout_s", 0.5).value)
            self.recorder = p("recorder", "/recorder_node").value.rstrip("/")
            max_lin = float(p("max_linear_m_s", 0.15).value)
            max_ang = float(p("max_angular_rad_s", 0.6).value)
            timeout = float(p("input_timeout_s", 0.3).value)
            self.executor_kind = p("executor", "events").value
            if self.kind not in INPUTS:
                raise ConfigError(f"unknown input {self.kind!r}", field="input", fix=f"use one of {list(INPUTS)}")
            if not self.rate_hz > 0:
                raise ConfigError(f"rate_hz {self.rate_hz} is not positive", field="rate_hz", fix="e.g. 50.0")

            self.profile = load_robot(robot)
            self.arm_joints = tuple(self.profile.joint_names)
            self.finger_joints = tuple((self.profile.gripper or {}).get("joint_names", ()))
            self.controller_joints = tuple(joints) or self.arm_joints
            rc.reorder(np.zeros(len(self.arm_joints)), self.arm_joints, self.controller_joints)
            dt = 1.0 / self.rate_hz
            self.safety = (SafetyFilter.from_yaml(self.profile, safety_config, dt_s=dt) if safety_config
                           else SafetyFilter.for_robot(self.profile, dt_s=dt))
            leader = (LeaderArmMap.from_yaml(leader_cal, self.arm_joints) if leader_cal
                      else LeaderArmMap.identity(self.arm_joints))
            self.ctl = TeleopController(self.profile, self.kind, rate_hz=self.rate_hz, input_timeout_s=timeout,
                                        leader_map=leader, joy_mapping=JoyMapping(max_linear_m_s=max_lin,
                                                                                  max_angular_rad_s=max_ang),
                                        max_linear_m_s=max_lin, max_angular_rad_s=max_ang,
                                        box_min=self.safety.env.box_min, box_max=self.safety.env.box_max)
            self.gate = StateGate(self.arm_joints, float(self.profile.rates_hz.get("state_hz", 500)))
            self.started = False
            self.last_safe: np.ndarray | None = None
            self.policy_cmd: np.ndarray | None = None
            self.policy_t = -1e9
            self.published = 0
            self.source = "none"
            self.service_results: list[str] = []

            self.pub_cmd = self.create_publisher(Float64MultiArray, f"/{fwd}/commands", command_qos())
            self.pub_grip = self.create_publisher(Float64MultiArray, gripper_topic, command_qos())
            self.pub_raw = self.create_publisher(Float64MultiArray, raw_topic, sensor_qos(5))
            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self.pub_events = self.create_publisher(String, "~/events", 10)
            self.create_subscription(JointState, "/joint_states", self.on_joint_states, sensor_qos())
            self.create_subscription(Joy, joy_topic, self.on_joy, sensor_qos(10))
            if self.kind == "spacemouse":
                self.create_subscription(Twist, twist_topic, self.on_twist, sensor_qos(10))
            if self.kind == "leader":
                self.create_subscription(JointState, leader_topic, self.on_leader, sensor_qos(10))
            if policy_topic:
                self.create_subscription(Float64MultiArray, policy_topic, self.on_policy, command_qos())
            if policy_gripper_topic:
                self.create_subscription(Float64MultiArray, policy_gripper_topic, self.on_policy_gripper,
                                         command_qos())
            self.policy_width = None
            self.recorder_clients = {ev: self.create_client(Trigger, f"{self.recorder}/{ev}")
                            for ev in ("start", "stop", "discard")}
            self.create_timer(dt, self.on_tick)
            self.create_timer(0.5, self.publish_diagnostics)
            self.get_logger().info(f"teleop_node: input={self.kind} at {self.rate_hz:g} Hz -> /{fwd}/commands "
                                   f"through the safety filter; policy mux {'on: ' + policy_topic if policy_topic else 'off'}")

        def now_s(self) -> float:
            return self.get_clock().now().nanoseconds * 1e-9

        # ---- inputs ----------------------------------------------------------------
        def on_joint_states(self, msg) -> None:
            self.gate.offer(msg.name, msg.position, msg.velocity, stamp_to_s(msg.header.stamp), self.now_s())

        def on_joy(self, msg) -> None:
            self.ctl.on_joy(list(msg.axes), list(msg.buttons), self.now_s())

        def on_twist(self, msg) -> None:
            self.ctl.on_twist([msg.linear.x, msg.linear.y, msg.linear.z],
                              [msg.angular.x, msg.angular.y, msg.angular.z], self.now_s())

        def on_leader(self, msg) -> None:
            self.ctl.on_leader(msg.name, msg.position, self.now_s())

        def on_policy(self, msg) -> None:
            v = np.asarray(msg.data, dtype=float)
            if len(v) == len(self.controller_joints) and np.all(np.isfinite(v)):
                self.policy_cmd = rc.reorder(v, self.controller_joints, self.arm_joints)
                self.policy_t = self.now_s()

        def on_policy_gripper(self, msg) -> None:
            if len(msg.data) == 1 and np.isfinite(msg.data[0]):
                self.policy_width = float(msg.data[0])

        def state(self) -> dict | None:
            if self.gate.q is None:
                return None
            width = sum(self.gate.extra.get(j, 0.0) for j in self.finger_joints)
            return {"q": np.r_[self.gate.q, width], "dq": np.r_[self.gate.dq, 0.0]}

        # ---- the loop --------------------------------------------------------------
        def on_tick(self) -> None:
            t = self.now_s()
            for ev in self.ctl.take_events():
                self.call_recorder(ev)
            state = self.state()
            if state is None:
                return
            if not self.started:
                self.safety.reset(state, self.gate.last_receive_s)
                self.last_safe = state["q"].copy()
                self.started = True
            self.safety.update_state(state, self.gate.last_receive_s)
            teleop_raw = self.ctl.step(t, state["q"][:-1], float(state["q"][-1]))
            raw, self.source = select_command(teleop_raw, self.policy_cmd, t - self.policy_t,
                                              self.policy_timeout_s, self.policy_width, self.last_safe)
            safe = self.safety.filter(raw, t)
            if not np.all(np.isfinite(safe)):
                return
            self.last_safe = safe
            n = len(self.arm_joints)
            self.pub_cmd.publish(rc.forward_command(safe[:n], self.arm_joints, self.controller_joints))
            self.pub_grip.publish(rc.gripper_command(safe[n]))
            self.pub_raw.publish(Float64MultiArray(data=[float(x) for x in raw]))
            self.published += 1

        def call_recorder(self, event: str) -> None:
            self.pub_events.publish(String(data=event))
            client = self.recorder_clients[event]
            if not client.service_is_ready():
                self.get_logger().warn(f"episode button '{event}': {client.srv_name} is not available")
                return
            fut = client.call_async(Trigger.Request())

            def done(f, event=event):
                res = f.result()
                text = f"{event}: {'ok' if res and res.success else 'refused'}: {res.message if res else ''}"
                self.service_results.append(text)
                self.get_logger().info(f"recorder {text}")
            fut.add_done_callback(done)

        def publish_diagnostics(self) -> None:
            s = self.safety.summary(last=0)
            values = {"input": self.kind, "source": self.source, "engaged": self.ctl.engaged,
                      "engagements": self.ctl.engagements, "commands_published": self.published,
                      "safety_mode": s["mode"], "interventions": s["total"]}
            for check, n in sorted(s["counts"].items()):
                values[f"interventions.{check}"] = n
            level = "ok" if self.started else "warn"
            msg = f"{self.source} ({self.kind})" if self.started else "waiting for /joint_states"
            arr = DiagnosticArray()
            arr.header.stamp = self.get_clock().now().to_msg()
            arr.status = [diagnostic_status(f"{self.get_name()}: teleop", level, msg, values,
                                            hardware_id=self.profile.name)]
            self.pub_diag.publish(arr)

    return TeleopNode()


# ---- the keyboard reader (runs in a terminal, publishes Joy) ---------------------------

KEYBOARD_HELP = ("keyboard teleop: SPACE enable/disable, w/s x, a/d y, r/f z, q/e yaw, g gripper, "
                 "b begin episode, n save episode, x discard episode, Ctrl-C quit")


def keyboard_loop(read_key, publish_joy, now=time.monotonic, rate_hz: float = 30.0, should_stop=lambda: False):
    """Poll ``read_key(timeout_s) -> str | None`` and publish the virtual gamepad state at ``rate_hz``."""
    kb = KeyboardJoy()
    period = 1.0 / rate_hz
    next_pub = now()
    while not should_stop():
        key = read_key(max(0.0, next_pub - now()))
        if key == "\x03":         # Ctrl-C in raw mode
            return
        if key:
            kb.press(key, now())
        if now() >= next_pub:
            publish_joy(*kb.state(now()))
            next_pub += period


def keyboard_main(argv=None) -> int:
    """Read keys from this terminal and publish them as sensor_msgs/Joy on /joy."""
    import select
    import termios
    import tty

    import rclpy
    from sensor_msgs.msg import Joy

    from ros_nodes.common import sensor_qos
    rclpy.init(args=argv)
    node = rclpy.create_node("teleop_keyboard")
    pub = node.create_publisher(Joy, "/joy", sensor_qos(10))
    if not sys.stdin.isatty():
        print("teleop keyboard: stdin is not a terminal", file=sys.stderr)
        return 2
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    print(KEYBOARD_HELP, flush=True)

    def read_key(timeout_s):
        r, _, _ = select.select([sys.stdin], [], [], timeout_s)
        return sys.stdin.read(1) if r else None

    def publish(axes, buttons):
        msg = Joy(axes=[float(a) for a in axes], buttons=[int(b) for b in buttons])
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)

    try:
        tty.setcbreak(fd)
        keyboard_loop(read_key, publish, should_stop=lambda: not rclpy.ok())
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv=None) -> int:
    from ros_nodes.common import run_node

    argv = list(sys.argv if argv is None else argv)
    if "--keyboard" in argv:
        return keyboard_main([a for a in argv if a != "--keyboard"])

    def summary(node):
        print(f"teleop_node: {json.dumps(node.safety.summary(last=0)['counts'])} interventions, "
              f"{node.published} commands", file=sys.stderr)
    return run_node("teleop_node", _make_node, argv, on_close=summary)


if __name__ == "__main__":
    sys.exit(main())
