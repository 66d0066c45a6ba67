"""``policy_node``: an onboard artifact driving a robot over ROS 2, through the safety filter.

Start-up: loads the artifact with ``policies.runtime.PolicyRuntime`` and checks
its contract against the configured robot profile. A missing, corrupt or
mismatched artifact is reported on /diagnostics (level ERROR) and the node
never publishes a command; with ``--strict`` (or ``strict: true``) it exits 2
at start-up with the error instead.

Inputs: ``/joint_states`` (sensor_msgs/JointState, mapped by joint name; every
message passes ``ros_nodes.common.StateGate``), ``/task_state`` (labeled
Float64MultiArray, see sim_node) for the observation keys not measured by the
arm, and ``<camera_topic>/image_raw`` when the contract has one image key
(``<camera_topic>/<camera>/image_raw`` per camera when it has several).

VLA artifacts (``policy_kind: vla``, run by ``policies.vla.runtime.VLARuntime``)
also take ``~/instruction`` (std_msgs/String; the ``instruction`` parameter
sets the first one). A valid instruction is tokenized and encoded once and
takes effect at the next action chunk; ``~/active_instruction`` (latched)
echoes it when it does. An empty or unknown-vocabulary instruction is
reported (log, /diagnostics) and puts the arm in a safe hold: the filter
holds the last command (or the measured position) until a valid instruction
arrives. With no instruction yet, the node holds in the same way.

Loop: a timer at the contract's control rate on an EventsExecutor (or
SingleThreadedExecutor; never MultiThreadedExecutor). Inference runs on a
worker thread when the measured chunk time does not fit in half a period
(``inference_thread: auto``). Every command passes ``sim2real.safety.SafetyFilter``:
per command (``filter``) and per chunk (``filter_chunk``, inside the runtime).
Stale state (older than ``state_timeout_s``) makes the node publish the filter's
hold and report ``stale`` instead of running the policy.

Outputs: ``command_interface: forward_position`` -> ``/<forward_controller>/commands``
(Float64MultiArray, controller joint order), or ``joint_trajectory`` ->
``/<trajectory_controller>/joint_trajectory`` (the filtered chunk as a
multi-point trajectory with ``time_from_start``); the gripper width to
``gripper_topic``; ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) with
rate, latency, interventions and state.

Plain logic lives in ``PolicyLoop`` (no rclpy), which tests drive directly.
Imports rclpy, policies.runtime, sim2real.safety and ros_nodes.common/adapters.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from ros_nodes.common import StateGate

WAITING, RUNNING, STALE, NO_POLICY = "waiting_for_state", "running", "stale", "no_policy"
HOLD_INSTRUCTION = "hold_instruction"     # VLA: no valid instruction, the arm holds


def is_vla_artifact(path) -> bool:
    """Whether ``path`` is a VLA entry graph, read from its metadata only (the weights stay on disk)."""
    import onnx

    from onboard.spec import CONTRACT_KEY
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a readable ONNX file: the runtime reports it properly
        return False
    for prop in model.metadata_props:
        if prop.key == CONTRACT_KEY:
            import json
            try:
                return json.loads(prop.value).get("policy_kind") == "vla"
            except (ValueError, AttributeError):
                return False
    return False


def _p(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


class PolicyLoop:
    """Runtime + safety filter + state gate, driven by (state, task_state, t) and ticks. No rclpy.

    ``tick(t)`` returns ``None`` (publish nothing) or ``(cmd, chunk)`` where
    ``cmd`` is the filtered (action_dim,) command and ``chunk`` the filtered
    upcoming commands (``(K, action_dim)``, first row == ``cmd``) for a
    trajectory controller.
    """

    def __init__(self, artifact: str, robot: str = "franka_panda", safety_config: str = "",
                 num_steps: int = 0, state_timeout_s: float = 0.0, expected_state_hz: float = 0.0,
                 seed: int = 0, max_residual_share: float = 1.0):
        from onboard.spec.robot import load_robot
        self.profile = load_robot(robot)
        self.gate = StateGate(tuple(self.profile.joint_names),
                              expected_state_hz or float(self.profile.rates_hz.get("state_hz", 500)))
        self.finger_joints = tuple((self.profile.gripper or {}).get("joint_names", ()))
        self.task_state: dict[str, np.ndarray] = {}
        self.images: dict[str, np.ndarray] = {}
        self.rt = None
        self.safety = None
        self.error = ""
        self.status = NO_POLICY
        self.published = 0
        self.ticks = 0
        self.stale_ticks = 0
        self.tick_times: deque = deque(maxlen=200)
        self.compute_ms: deque = deque(maxlen=200)
        self.state_timeout_s = state_timeout_s
        self._started = False
        self._lock = threading.Lock()
        self.vla = False
        self.instruction = ""              # the last VALID instruction handed to the runtime
        self.instruction_error = ""        # why the last instruction was refused ("" = none)
        self.instructions_rejected = 0
        self.active_instruction = ""       # the instruction the current chunk was planned with
        self.max_residual_share = float(max_residual_share)   # residual artifacts: runtime cap (0..1 of its bound)
        try:
            self._load(artifact, safety_config, num_steps, seed)
        except Exception as exc:    # noqa: BLE001 - any load failure means: never publish, say why
            self.error = str(exc) or type(exc).__name__
            self.rt = None

    def _load(self, artifact, safety_config, num_steps, seed):
        from onboard.errors import OnboardError
        from policies.runtime import PolicyRuntime
        from sim2real.safety import SafetyFilter
        if not artifact:
            raise OnboardError("no artifact given", field="artifact", fix="pass artifact:=/path/to/policy.onnx")
        if not Path(artifact).is_file():
            raise OnboardError("artifact file not found", file=artifact, field="artifact",
                               fix="pass the path of an exported policy.onnx")
        # the runtime checks the contract against the profile (robot name, joints, actions)
        from policies.residual_runtime import ResidualRuntime, is_residual_artifact
        if is_vla_artifact(artifact):           # text / observation / action-head graphs (policies.vla.runtime)
            from policies.vla.runtime import VLARuntime
            probe = VLARuntime(artifact, robot=self.profile, num_steps=num_steps or None)
            self.vla = True
        elif is_residual_artifact(artifact):      # frozen diffusion base + bounded residual (policies.residual_runtime)
            probe = ResidualRuntime(None, artifact, robot=self.profile, num_steps=num_steps or None, seed=seed,
                                    max_residual_share=self.max_residual_share)
        else:
            probe = PolicyRuntime(artifact, robot=self.profile, num_steps=num_steps or None, seed=seed)
        dt = 1.0 / probe.contract.control_rate_hz
        self.safety = (SafetyFilter.from_yaml(self.profile, safety_config, dt_s=dt) if safety_config
                       else SafetyFilter.for_robot(self.profile, dt_s=dt))
        probe.safety = self.safety
        self.rt = probe
        self.contract = probe.contract
        if self.state_timeout_s <= 0:
            self.state_timeout_s = float(self.safety.env.state_timeout_s)
        self.status = WAITING
        self.error = ""
        self.image_keys = [k["name"] for k in self.contract.observation["keys"] if len(k["shape"]) == 3]

    @property
    def ok(self) -> bool:
        return self.rt is not None

    @property
    def control_rate_hz(self) -> float:
        return self.contract.control_rate_hz if self.ok else 1.0

    # ---- inputs -----------------------------------------------------------------------
    def on_joint_state(self, names, position, velocity, stamp_s: float, receive_s: float) -> bool:
        return self.gate.offer(names, position, velocity, stamp_s, receive_s)

    def on_task_state(self, values: dict[str, np.ndarray]) -> None:
        self.task_state = values

    def state(self) -> dict | None:
        """The safety filter's arm state: q = 7 joints + gripper width, dq likewise."""
        if self.gate.q is None:
            return None
        width = sum(self.gate.extra.get(j, 0.0) for j in self.finger_joints)
        return {"q": np.r_[self.gate.q, width], "dq": np.r_[self.gate.dq, 0.0]}

    def observation(self) -> dict | None:
        """Contract keys from the state and /task_state; None while a key is still unknown."""
        obs = {"joint_pos": self.gate.q, "joint_vel": self.gate.dq,
               "gripper_width": np.array([self.state()["q"][-1]])}
        for k in self.contract.observation["keys"]:
            name = k["name"]
            if name in obs:
                continue
            if name in self.task_state:
                obs[name] = self.task_state[name]
            elif name == "ee_pos":
                obs[name] = self.safety.kin.tcp_position(self.gate.q)
            elif name in self.image_keys and name in self.images:
                obs[name] = self.images[name]
            else:
                return None
        return obs

    def set_instruction(self, text: str) -> tuple[bool, str]:
        """VLA: a new instruction. Valid -> used from the next chunk; invalid -> safe hold. (ok, message)."""
        if not self.ok or not self.vla:
            return False, "this policy takes no instruction"
        from onboard.errors import OnboardError
        with self._lock:
            try:
                unknown = self.rt.set_instruction(text)
            except OnboardError as exc:
                self.instruction_error = str(exc)
                self.instructions_rejected += 1
                return False, self.instruction_error
            self.instruction = text
            self.instruction_error = ""
            note = f"; unknown words {unknown} read as <unk>" if unknown else ""
            return True, f"instruction accepted: {text!r} (takes effect at the next chunk{note})"

    def _instruction_hold(self, state, t: float):
        """The safe hold of a VLA without a valid instruction: the last command, else the measured pose."""
        self.status = HOLD_INSTRUCTION
        last = getattr(self.rt, "_last_cmd", None)
        hold = np.asarray(last if last is not None else state["q"], dtype=float)
        cmd = self.safety.filter(hold, t)
        self._started = False                 # a later valid instruction starts afresh from the measured state
        return cmd, cmd[None, :]

    # ---- the control tick ---------------------------------------------------------------
    def tick(self, t: float, now_wall: float | None = None):
        """One control period at time ``t`` (the node clock, same clock as the state receive times)."""
        if not self.ok:
            self.status = NO_POLICY
            return None
        with self._lock:
            self.ticks += 1
            self.tick_times.append(t)
            state = self.state()
            if state is None:
                self.status = WAITING
                return None
            if self.gate.age_s(t) > self.state_timeout_s:
                # stale: no policy output; the filter's watchdog turns the missing state into a hold
                self.status = STALE
                self.stale_ticks += 1
                cmd = self.safety.filter(None, t)
                return cmd, cmd[None, :]
            self.safety.update_state(state, self.gate.last_receive_s)
            if self.vla and (self.instruction_error or not self.instruction):
                return self._instruction_hold(state, t)
            obs = self.observation()
            if obs is None:
                self.status = WAITING
                return None
            if not self._started or self.status in (STALE, HOLD_INSTRUCTION):
                self.rt.reset(state, t)      # (re)start: ramp in from the measured state
                self._started = True
            self.status = RUNNING
            t0 = time.perf_counter()
            chunks_before = self.rt.stats.get("chunks", 0)
            try:
                cmd = self.rt.act(obs, t=t, state=None)
            except Exception as exc:  # noqa: BLE001 - a bad observation must not kill the node
                self.gate.rejected["observation"] = self.gate.rejected.get("observation", 0) + 1
                self.gate.last_error = f"observation refused by the runtime: {exc}"
                return None
            self.compute_ms.append((time.perf_counter() - t0) * 1e3)
            if self.vla and self.rt.stats.get("chunks", 0) != chunks_before:
                self.active_instruction = self.rt.instruction      # a new chunk: planned with this instruction
            upcoming = self.rt.planned() if hasattr(self.rt, "planned") else []
            chunk = np.vstack([cmd] + upcoming) if upcoming else cmd[None, :]
            if not np.all(np.isfinite(cmd)):
                return None                   # never publish a non-finite command
            return cmd, chunk

    # ---- diagnostics --------------------------------------------------------------------
    def diagnostics(self, t: float) -> tuple[str, str, dict]:
        """(level, message, values) for /diagnostics."""
        g = self.gate
        values = {"state": self.status, "commands_published": self.published, "ticks": self.ticks,
                  "state_rate_hz": g.rate_hz, "state_accepted": g.accepted,
                  "state_age_s": g.age_s(t) if g.last_receive_s is not None else "none"}
        for reason, n in sorted(g.rejected.items()):
            values[f"state_rejected.{reason}"] = n
        if g.last_error:
            values["state_last_error"] = g.last_error
        if len(self.tick_times) > 2:
            dts = np.diff(np.asarray(self.tick_times))
            values["control_rate_hz"] = float(1.0 / dts.mean()) if dts.mean() > 0 else 0.0
        if self.compute_ms:
            values["compute_ms_p50"] = _p(self.compute_ms, 50)
            values["compute_ms_p99"] = _p(self.compute_ms, 99)
        if not self.ok:
            values["error"] = self.error
            return "error", f"no policy loaded: {self.error}", values
        s = self.safety.summary(last=0)
        values["safety_mode"] = s["mode"]
        values["interventions"] = s["total"]
        for check, n in sorted(s["counts"].items()):
            values[f"interventions.{check}"] = n
        values["stale_ticks"] = self.stale_ticks
        if self.vla:
            values["instruction"] = self.instruction or "none"
            values["active_instruction"] = self.active_instruction or "none"
            values["instructions_rejected"] = self.instructions_rejected
            if self.instruction_error:
                values["instruction_error"] = self.instruction_error
        if hasattr(self.rt, "last_residual_magnitude"):    # residual artifacts: last |correction| (normalized)
            values["residual_abs"] = float(self.rt.last_residual_magnitude)
        if self.status == STALE:
            return "stale", f"stale /joint_states ({g.age_s(t):.2f} s old): holding", values
        if self.status == HOLD_INSTRUCTION:
            why = self.instruction_error or "no instruction yet (publish std_msgs/String on ~/instruction)"
            return "warn", f"holding: {why}", values
        if self.status == WAITING:
            return "warn", "waiting for /joint_states and /task_state", values
        if g.rate_excess:
            return "warn", (f"/joint_states at {g.rate_hz:.0f} Hz, over {g.max_rate_factor:g}x the expected "
                            f"{g.expected_rate_hz:.0f} Hz"), values
        if g.rejected and g.last_error:
            return "warn", f"rejected /joint_states: {g.last_error}", values
        return "ok", f"running at {self.control_rate_hz:g} Hz, safety {s['mode']}", values


def _make_node(loop_kwargs: dict, strict: bool):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    from ros_nodes.adapters import ros2_control as rc
    from ros_nodes.common import (TASK_STATE_TOPIC, StateError, command_qos, diagnostic_status, image_to_array,
                                  latched_qos, read_labeled_array, sensor_qos, stamp_to_s)

    class PolicyNode(Node):
        def __init__(self):
            super().__init__("policy_node")
            p = self.declare_parameter
            artifact = p("artifact", "").value
            robot = p("robot", "franka_panda").value
            safety_config = p("safety_config", "").value
            num_steps = int(p("num_steps", 0).value)
            residual_share = float(p("max_residual_share", 1.0).value)
            self.interface = p("command_interface", "forward_position").value
            fwd = p("forward_controller", "forward_position_controller").value.strip("/")
            jtc = p("trajectory_controller", "joint_trajectory_controller").value.strip("/")
            gripper_topic = p("gripper_topic", "/gripper/commands").value
            joints = [j for j in p("joints", [""]).value if j]
            self.executor_kind = p("executor", "events").value
            self.inference_thread = p("inference_thread", "auto").value
            state_timeout = float(p("state_timeout_s", 0.0).value)
            state_hz = float(p("expected_state_rate_hz", 0.0).value)
            diag_hz = float(p("diagnostics_rate_hz", 2.0).value)
            camera_topic = p("camera_topic", "/camera").value.rstrip("/")
            first_instruction = p("instruction", "").value
            self.strict = bool(p("strict", False).value) or strict
            if self.interface not in ("forward_position", "joint_trajectory"):
                from onboard.errors import OnboardError
                raise OnboardError(f"unknown command_interface {self.interface!r}", field="command_interface",
                                   fix="use forward_position or joint_trajectory")
            self.loop = PolicyLoop(artifact, robot, safety_config, num_steps, state_timeout, state_hz,
                                   **{"max_residual_share": residual_share, **loop_kwargs})
            if not self.loop.ok and self.strict:
                raise SystemExit(self.loop.error)
            self.policy_joints = tuple(self.loop.profile.joint_names)
            self.controller_joints = tuple(joints) or self.policy_joints
            rc.reorder(np.zeros(len(self.policy_joints)), self.policy_joints, self.controller_joints)
            self.pub_cmd = (self.create_publisher(Float64MultiArray, f"/{fwd}/commands", command_qos())
                            if self.interface == "forward_position" else
                            self.create_publisher(JointTrajectory, f"/{jtc}/joint_trajectory", command_qos()))
            self.pub_grip = self.create_publisher(Float64MultiArray, gripper_topic, command_qos())
            self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self.create_subscription(JointState, "/joint_states", self.on_joint_states, sensor_qos())
            self.create_subscription(Float64MultiArray, TASK_STATE_TOPIC, self.on_task_state, sensor_qos())
            keys = self.loop.image_keys if self.loop.ok else []
            if len(keys) == 1:
                self.create_subscription(Image, f"{camera_topic}/image_raw",
                                         lambda m: self.on_image(m, keys), sensor_qos(2))
            for key in keys if len(keys) > 1 else []:      # one topic per camera: <camera_topic>/<cam>/image_raw
                cam = key.split(".", 1)[-1]
                self.create_subscription(Image, f"{camera_topic}/{cam}/image_raw",
                                         lambda m, k=key: self.on_image(m, [k]), sensor_qos(2))
            self.pub_active = None
            if self.loop.ok and self.loop.vla:
                self.pub_active = self.create_publisher(String, "~/active_instruction", latched_qos())
                self.create_subscription(String, "~/instruction", self.on_instruction, command_qos())
                self._echoed = ""
                if first_instruction:
                    self.on_instruction(String(data=first_instruction))
            self.dt = 1.0 / self.loop.control_rate_hz
            self.latency_ms: deque = deque(maxlen=200)
            self.overruns = 0
            self._busy = threading.Event()
            self._work = None
            self._work_ready = threading.Event()
            self._use_worker = self.inference_thread == "always"
            self._worker = None
            self.create_timer(self.dt, self.on_tick)
            self.create_timer(1.0 / diag_hz, self.publish_diagnostics)
            if self.loop.ok:
                c = self.loop.contract
                self.get_logger().info(
                    f"policy {artifact}: {c.policy_kind} for {c.robot['name']}, {c.control_rate_hz:g} Hz, "
                    f"obs {c.obs_keys}, -> {self.interface} ({list(self.controller_joints)})")
                for w in self.loop.rt.warnings:
                    self.get_logger().warn(w)
            else:
                self.get_logger().error(f"no policy: {self.loop.error} (the node stays up and never commands)")

        def now_s(self) -> float:
            return self.get_clock().now().nanoseconds * 1e-9

        # ---- inputs --------------------------------------------------------------
        def on_joint_states(self, msg) -> None:
            self.loop.on_joint_state(msg.name, msg.position, msg.velocity, stamp_to_s(msg.header.stamp),
                                     self.now_s())

        def on_task_state(self, msg) -> None:
            try:
                self.loop.on_task_state(read_labeled_array(msg))
            except StateError as exc:
                self.loop.gate.rejected["task_state"] = self.loop.gate.rejected.get("task_state", 0) + 1
                self.loop.gate.last_error = str(exc)

        def on_instruction(self, msg) -> None:
            ok, message = self.loop.set_instruction(msg.data)
            if ok:
                self.get_logger().info(message)
            else:
                self.get_logger().error(f"instruction refused, holding: {message}")

        def on_image(self, msg, keys) -> None:
            import cv2
            try:
                img = image_to_array(msg)
            except StateError:
                return
            for key in keys:
                shape = next(k["shape"] for k in self.loop.contract.observation["keys"] if k["name"] == key)
                self.loop.images[key] = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)

        # ---- the loop ------------------------------------------------------------
        def on_tick(self) -> None:
            t = self.now_s()
            if not self._use_worker:
                self.step(t)
                self._maybe_switch_to_worker()
                return
            if self._busy.is_set():
                self.overruns += 1       # inference still running: the controller keeps its last target
                return
            self._busy.set()
            self._work = t
            self._work_ready.set()

        def _maybe_switch_to_worker(self) -> None:
            ms = self.loop.compute_ms
            if self.inference_thread == "auto" and len(ms) >= 8 and _p(ms, 99) > 0.5e3 * self.dt:
                self.get_logger().warn(f"inference p99 {_p(ms, 99):.1f} ms does not fit half a period: "
                                       "moving it to a worker thread")
                self._use_worker = True
            if self._use_worker and self._worker is None:
                self._worker = threading.Thread(target=self._work_loop, daemon=True)
                self._worker.start()

        def _work_loop(self) -> None:
            while rclpy.ok():
                if not self._work_ready.wait(0.2):
                    continue
                self._work_ready.clear()
                try:
                    self.step(self._work)
                finally:
                    self._busy.clear()

        def step(self, t: float) -> None:
            t0 = time.perf_counter()
            out = self.loop.tick(t)
            if out is None:
                return
            cmd, chunk = out
            n = len(self.policy_joints)
            if self.interface == "forward_position":
                self.pub_cmd.publish(rc.forward_command(cmd[:n], self.policy_joints, self.controller_joints))
            else:
                self.pub_cmd.publish(rc.joint_trajectory(chunk[:, :n], self.policy_joints, self.controller_joints,
                                                         self.dt))
            if len(cmd) > n:
                self.pub_grip.publish(rc.gripper_command(cmd[n]))
            self.loop.published += 1
            if self.pub_active is not None and self.loop.active_instruction != self._echoed:
                self._echoed = self.loop.active_instruction
                self.pub_active.publish(String(data=self._echoed))
            self.latency_ms.append((time.perf_counter() - t0) * 1e3)

        def publish_diagnostics(self) -> None:
            t = self.now_s()
            level, message, values = self.loop.diagnostics(t)
            values["command_interface"] = self.interface
            values["inference_thread"] = "worker" if self._use_worker else "executor"
            values["overruns"] = self.overruns
            if self.latency_ms:
                values["tick_to_command_ms_p50"] = _p(self.latency_ms, 50)
                values["tick_to_command_ms_p99"] = _p(self.latency_ms, 99)
            arr = DiagnosticArray()
            arr.header.stamp = self.get_clock().now().to_msg()
            arr.status = [diagnostic_status(f"{self.get_name()}: policy", level, message, values,
                                            hardware_id=self.loop.profile.name)]
            self.pub_diag.publish(arr)

    return PolicyNode()


def main(argv=None) -> int:
    from rclpy.utilities import remove_ros_args

    from ros_nodes.common import run_node

    argv = list(sys.argv if argv is None else argv)
    strict = "--strict" in remove_ros_args(argv)[1:]
    return run_node("policy_node", lambda: _make_node({}, strict), argv)


if __name__ == "__main__":
    sys.exit(main())
