"""calibration_node: capture calibration samples over ROS 2 and solve on request.

Services (std_srvs/Trigger):
- ``~/capture``: take the latest image (and, for hand-eye, the latest
  /joint_states) as one sample; the response says how many corners were seen.
- ``~/solve``: run the calibration, write the YAML (``output`` parameter),
  and for hand-eye publish the result on ``/tf_static`` when ``tf2_msgs`` can
  be imported (it is not on PyPI; without it that step is skipped).

Parameters: ``mode`` (camera | handeye), ``image_topic``, ``joint_states_topic``,
``output``, ``camera_info`` (hand-eye), ``setup``, ``parent_frame``,
``child_frame``, ``robot``, ``board`` (COLSxROWS), ``square_m``, ``marker_m``,
``dictionary``. The logic lives in ``calibration.session``; this node is glue.
"""
from __future__ import annotations

import sys

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from calibration.board import BoardSpec
from calibration.session import CalibrationSession
from onboard.errors import OnboardError
from ros_nodes.common import image_to_array, joint_state_arrays, latched_qos, sensor_qos, StateError


def _tf_message_type():
    try:
        from tf2_msgs.msg import TFMessage
        return TFMessage
    except ImportError:
        return None


class CalibrationNode(Node):
    def __init__(self, **kwargs):
        super().__init__("calibration_node", **kwargs)
        p = {k: self.declare_parameter(k, v).value for k, v in {
            "mode": "camera", "image_topic": "/camera/image_raw", "joint_states_topic": "/joint_states",
            "output": "runs/calibration/calibration.yaml", "camera_info": "", "setup": "eye_in_hand",
            "parent_frame": "panda_link8", "child_frame": "camera_optical_frame", "robot": "franka_panda",
            "board": "7x5", "square_m": 0.04, "marker_m": 0.03, "dictionary": "DICT_5X5_100",
            "camera_name": "camera"}.items()}
        sx, sy = (int(v) for v in str(p["board"]).lower().split("x"))
        board = BoardSpec(sx, sy, float(p["square_m"]), float(p["marker_m"]), str(p["dictionary"]))
        chain = K = dist = None
        self.joint_names: tuple[str, ...] = ()
        if p["mode"] == "handeye":
            from calibration.io import read_camera_info
            from calibration.kinematics import DHChain
            from onboard.spec.robot import load_robot
            profile = load_robot(p["robot"])
            chain = DHChain(profile.raw["kinematics"]["dh_modified"])
            self.joint_names = profile.joint_names
            if not p["camera_info"]:
                raise OnboardError("hand-eye needs intrinsics", field="camera_info",
                                   fix="set the camera_info parameter to a camera_info YAML")
            K, dist, _ = read_camera_info(p["camera_info"])
        self.session = CalibrationSession(p["mode"], board, p["output"], chain=chain, K=K, dist=dist,
                                          setup=p["setup"], parent_frame=p["parent_frame"],
                                          child_frame=p["child_frame"], camera_name=p["camera_name"])
        self._image = None
        self._q = None
        self.create_subscription(Image, p["image_topic"], self._on_image, sensor_qos(2))
        if p["mode"] == "handeye":
            self.create_subscription(JointState, p["joint_states_topic"], self._on_joints, sensor_qos(5))
        self.create_service(Trigger, "~/capture", self._capture)
        self.create_service(Trigger, "~/solve", self._solve)
        TFMessage = _tf_message_type()
        self._tf_pub = self.create_publisher(TFMessage, "/tf_static", latched_qos()) if TFMessage else None
        self.get_logger().info(f"calibration_node: mode={p['mode']}, tf_static={'on' if self._tf_pub else 'off'}")

    def _on_image(self, msg):
        self._image = msg

    def _on_joints(self, msg):
        try:
            self._q, _ = joint_state_arrays(msg.name, msg.position, msg.velocity, self.joint_names)
        except StateError:
            pass

    def _capture(self, request, response):
        if self._image is None:
            response.success, response.message = False, "no image received yet"
            return response
        try:
            response.message = self.session.capture(image_to_array(self._image), self._q)
            response.success = True
        except (OnboardError, StateError) as exc:
            response.success, response.message = False, str(exc)
        return response

    def _solve(self, request, response):
        try:
            response.message = self.session.solve()
            response.success = True
        except OnboardError as exc:
            response.success, response.message = False, str(exc)
            return response
        if self._tf_pub is not None and self.session.result_T is not None:
            self._publish_tf(self.session.result_T)
        return response

    def _publish_tf(self, T):
        from geometry_msgs.msg import TransformStamped
        from calibration.transforms import quat_wxyz_from_R
        TFMessage = _tf_message_type()
        t = TransformStamped()
        t.header.stamp = self.get_clock().now().to_msg()
        t.header.frame_id, t.child_frame_id = self.session.parent_frame, self.session.child_frame
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in T[:3, 3])
        w, x, y, z = quat_wxyz_from_R(T[:3, :3])
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = x, y, z, w
        self._tf_pub.publish(TFMessage(transforms=[t]))


def main(argv=None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = CalibrationNode()
    except OnboardError as exc:
        print(f"calibration_node: error: {exc}", file=sys.stderr)
        rclpy.shutdown()
        return 2
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        ex.spin()
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
