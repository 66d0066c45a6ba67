"""Hand-eye calibration against simulated Panda stations and MuJoCo-rendered board views."""
import numpy as np
import pytest

from calibration.board import BoardDetector
from calibration.handeye import METHODS, calibrate_all_methods, calibrate_handeye, refine_reprojection
from calibration.io import read_transform, transform_dict, write_yaml_atomic
from calibration.transforms import make_T, pose_error, rotvec_to_R
from onboard.errors import OnboardError
from sim.calib_scenes import simulate_handeye


@pytest.fixture(scope="module", params=["eye_in_hand", "eye_to_hand"])
def stations(request):
    return simulate_handeye(request.param, n_stations=20, seed=2, joint_noise_rad=1e-4, pixel_noise_std=2.0)


def test_all_five_methods_give_a_close_initial_estimate(stations):
    best, results = calibrate_all_methods(stations["T_base_gripper"], stations["T_cam_target"],
                                          setup=stations["setup"])
    assert set(results) == set(METHODS) == {"tsai", "park", "horaud", "andreff", "daniilidis"}
    for r in results.values():
        mm, deg = pose_error(r.T, stations["truth"]["X"])
        assert mm < 6.0 and deg < 0.5, (r.method, mm, deg)
        assert len(r.heldout_mm) == 4 and r.heldout_mm.max() < 5.0 and r.heldout_deg.max() < 1.0


def test_refined_hand_eye_recovers_the_true_transform_within_2mm_and_half_a_degree(stations):
    best, _ = calibrate_all_methods(stations["T_base_gripper"], stations["T_cam_target"], setup=stations["setup"])
    det = BoardDetector(stations["board"])
    dets = [det.detect(img) for img in stations["images"]]
    refined = refine_reprojection(best, stations["T_base_gripper"], dets, stations["board"].corner_points(),
                                  stations["K"], stations["dist"])
    mm, deg = pose_error(refined.T, stations["truth"]["X"])
    assert mm < 2.0 and deg < 0.5
    assert refined.reprojection_rms_px < 0.5
    fixed_truth = stations["truth"]["T_base_target" if stations["setup"] == "eye_in_hand" else "T_gripper_target"]
    assert pose_error(refined.T_fixed, fixed_truth)[0] < 2.0


def test_hand_eye_yaml_names_parent_and_child_frames(tmp_path, stations):
    r = calibrate_handeye(stations["T_base_gripper"], stations["T_cam_target"], setup=stations["setup"])
    path = write_yaml_atomic(tmp_path / "he.yaml", transform_dict(r.T, "panda_hand", "camera_optical_frame"))
    T, parent, child = read_transform(path)
    assert (parent, child) == ("panda_hand", "camera_optical_frame")
    assert np.allclose(T, r.T)


def _synthetic(n, rotate: bool, rng):
    X = make_T(rotvec_to_R([0.1, 0.2, 0.3]), [0.05, 0.0, 0.04])
    F = make_T(np.eye(3), [0.5, 0.0, 0.0])
    G = [make_T(rotvec_to_R(rng.normal(0, 0.4, 3) if rotate else np.zeros(3)), rng.normal(0, 0.1, 3) + [0.3, 0, 0.5])
         for _ in range(n)]
    C = [np.linalg.inv(X) @ np.linalg.inv(g) @ F for g in G]
    return G, C, X


def test_noise_free_stations_are_solved_exactly_by_every_method():
    G, C, X = _synthetic(12, True, np.random.default_rng(0))
    for m in METHODS:
        mm, deg = pose_error(calibrate_handeye(G, C, method=m).T, X)
        assert mm < 1e-3 and deg < 1e-3, m


def test_translation_only_motion_is_rejected_as_degenerate():
    G, C, _ = _synthetic(12, False, np.random.default_rng(0))
    with pytest.raises(OnboardError, match="degenerate motion") as exc:
        calibrate_handeye(G, C)
    assert exc.value.exit_code == 2 and "rotate the wrist" in str(exc.value)


def test_rotation_about_a_single_axis_is_rejected_as_degenerate():
    rng = np.random.default_rng(1)
    X = make_T(rotvec_to_R([0.1, 0.2, 0.3]), [0.05, 0.0, 0.04])
    G = [make_T(rotvec_to_R([0, 0, a]), [0.3, 0.0, 0.5]) for a in rng.uniform(-1, 1, 10)]
    C = [np.linalg.inv(X) @ np.linalg.inv(g) for g in G]
    with pytest.raises(OnboardError, match="same axis"):
        calibrate_handeye(G, C)
