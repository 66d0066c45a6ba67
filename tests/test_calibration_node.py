"""calibration_node over real rclpy: capture rendered board images through ~/capture, then ~/solve writes camera_info."""
import time

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros


def _wait(ex, cond, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.02)
    return cond()


def test_capture_and_solve_services_write_a_camera_info_yaml(tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from calibration.board import BoardSpec
    from ros_nodes.calibration_node import CalibrationNode
    from ros_nodes.common import array_to_image, sensor_qos
    from sim.calib_scenes import render_calibration_set

    from calibration.board import BoardDetector
    # 320x240 keeps each image under the default DDS shared-memory segment; keep the views that show the board.
    images, _, K_true = render_calibration_set(BoardSpec(), n_views=20, seed=4, width=320, height=240)
    images = [im for im in images if BoardDetector(BoardSpec()).detect(im) is not None][:12]
    assert len(images) == 12
    out = tmp_path / "camera_info.yaml"
    rclpy.init()
    try:
        node = CalibrationNode(parameter_overrides=[Parameter("mode", value="camera"),
                                                    Parameter("output", value=str(out)),
                                                    Parameter("image_topic", value="/calib_test/image")])
        peer = rclpy.create_node("calib_test_peer")
        pub = peer.create_publisher(Image, "/calib_test/image", sensor_qos(2))
        capture = peer.create_client(Trigger, "/calibration_node/capture")
        solve = peer.create_client(Trigger, "/calibration_node/solve")
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        ex.add_node(peer)
        assert _wait(ex, lambda: capture.service_is_ready() and solve.service_is_ready())
        assert node._tf_pub is None          # tf2_msgs is not importable here: /tf_static is skipped

        early = solve.call_async(Trigger.Request())
        assert _wait(ex, early.done)
        assert not early.result().success and "usable views" in early.result().message

        for i, img in enumerate(images):
            msg = array_to_image(img, stamp_s=float(i + 1))
            assert _wait(ex, lambda: (pub.publish(msg), node._image is not None
                                      and node._image.header.stamp.sec == i + 1)[1])
            fut = capture.call_async(Trigger.Request())
            assert _wait(ex, fut.done)
            assert fut.result().success, fut.result().message
        fut = solve.call_async(Trigger.Request())
        assert _wait(ex, fut.done, timeout_s=30)
        assert fut.result().success, fut.result().message
        doc = yaml.safe_load(out.read_text())
        assert doc["image_width"] == 320
        assert doc["camera_matrix"]["data"][0] == pytest.approx(K_true[0, 0], rel=0.02)
        node.destroy_node()
        peer.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_hand_eye_capture_without_joint_states_says_so():
    from calibration.board import BoardSpec
    from calibration.kinematics import DHChain
    from calibration.session import CalibrationSession
    from onboard.errors import OnboardError
    from sim.calib_scenes import panda_chain, render_calibration_set

    chain, _, _ = panda_chain()
    images, _, K = render_calibration_set(BoardSpec(), n_views=1, seed=0)
    s = CalibrationSession("handeye", BoardSpec(), "unused.yaml", chain=chain, K=K)
    with pytest.raises(OnboardError, match="joint state"):
        s.capture(images[0], q=None)
    assert isinstance(chain, DHChain) and s.n_samples == 0
    with pytest.raises(OnboardError, match="not visible"):
        s.capture(np.full((480, 640), 128, np.uint8), q=np.zeros(7))
