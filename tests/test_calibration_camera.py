"""Camera intrinsics: ChArUco boards rendered by MuJoCo with a known camera are calibrated back."""
import numpy as np
import pytest

from calibration.board import BoardDetector, BoardSpec
from calibration.camera import calibrate_camera, detect_images
from calibration.io import read_camera_info, write_camera_info
from calibration.transforms import inv_T, project
from onboard.errors import OnboardError
from sim.calib_scenes import BoardScene, random_views, render_calibration_set

BOARD = BoardSpec()


@pytest.fixture(scope="module")
def rendered():
    return render_calibration_set(BOARD, n_views=24, seed=0, pixel_noise_std=2.0)


def test_mujoco_camera_projects_known_points_where_fovy_formula_says():
    scene = BoardScene(BOARD, width=640, height=480, fovy_deg=50.0)
    try:
        det = BoardDetector(BOARD)
        T = random_views(BOARD, 1, np.random.default_rng(3))[0]
        d = det.detect(scene.render(T))
        uv = project(scene.K, inv_T(T), BOARD.corner_points()[d.ids])
        assert len(d) >= 20
        assert np.abs(d.pixels - uv).max() < 0.3          # cx = (W-1)/2, fy = (H/2)/tan(fovy/2)
    finally:
        scene.close()


def test_charuco_calibration_recovers_rendered_intrinsics_within_one_percent(rendered):
    images, _, K_true = rendered
    dets, skipped = detect_images(BOARD, images)
    cal = calibrate_camera(BOARD, dets, skipped=skipped)
    for (i, j) in [(0, 0), (1, 1), (0, 2), (1, 2)]:
        assert abs(cal.K[i, j] - K_true[i, j]) / K_true[i, j] < 0.01
    assert cal.rms_px < 0.5
    assert len([v for v in cal.views if v.used]) >= 20
    assert all(np.isfinite(v.rms_px) for v in cal.views if v.used)


def test_a_corrupted_view_is_rejected_and_does_not_bias_the_result(rendered):
    images, _, K_true = rendered
    dets, _ = detect_images(BOARD, images)
    bad = dets[3]
    bad.pixels = bad.pixels + np.random.default_rng(0).normal(0, 6.0, bad.pixels.shape)  # a blurred/moving frame
    cal = calibrate_camera(BOARD, dets)
    rejected = [v for v in cal.views if not v.used]
    assert [v.source for v in rejected] == [bad.source]
    assert abs(cal.K[0, 0] - K_true[0, 0]) / K_true[0, 0] < 0.01


def test_camera_info_yaml_has_the_fields_camera_calibration_parsers_reads(tmp_path, rendered):
    import yaml
    images, _, K_true = rendered
    dets, _ = detect_images(BOARD, images[:10])
    cal = calibrate_camera(BOARD, dets)
    path = write_camera_info(tmp_path / "cam.yaml", cal.K, cal.dist, cal.image_size, "wrist_camera")
    doc = yaml.safe_load(path.read_text())
    assert doc["image_width"] == 640 and doc["image_height"] == 480 and doc["camera_name"] == "wrist_camera"
    assert doc["distortion_model"] == "plumb_bob"
    assert doc["camera_matrix"]["rows"] == 3 and len(doc["camera_matrix"]["data"]) == 9
    assert len(doc["distortion_coefficients"]["data"]) == 5
    assert doc["rectification_matrix"]["data"] == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    assert doc["projection_matrix"]["rows"] == 3 and doc["projection_matrix"]["cols"] == 4
    K, dist, size = read_camera_info(path)
    assert np.allclose(K, cal.K) and size == (640, 480)


def test_chessboard_calibration_also_works(rendered):
    board = BoardSpec(kind="chessboard")
    images, _, K_true = render_calibration_set(board, n_views=10, seed=5, pixel_noise_std=1.0)
    dets, _ = detect_images(board, images)
    cal = calibrate_camera(board, dets)
    assert abs(cal.K[1, 1] - K_true[1, 1]) / K_true[1, 1] < 0.02
    assert cal.rms_px < 0.5


def test_too_few_views_is_an_onboard_error_naming_the_fix(rendered):
    images, _, _ = rendered
    dets, _ = detect_images(BOARD, images[:3])
    with pytest.raises(OnboardError, match="usable views") as exc:
        calibrate_camera(BOARD, dets)
    assert "capture more views" in str(exc.value)


def test_an_unreadable_image_is_an_onboard_error_naming_the_file(tmp_path):
    bad = tmp_path / "frame_000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(OnboardError, match="frame_000.png"):
        detect_images(BOARD, [bad])
