"""Joint zero offsets, IMU noise and latency: each recovered from simulated ground truth."""
import numpy as np
import pytest

from calibration.imu import allan_deviation, calibrate_imu
from calibration.joint_offsets import estimate_joint_offsets, predict_points
from calibration.latency import camera_time_offset, estimate_delay
from onboard.errors import OnboardError
from sim.calib_scenes import panda_chain, simulate_servo_log, simulate_static_imu

MARKERS = np.array([[0.05, 0.0, 0.02], [0.0, 0.06, 0.02], [-0.04, -0.03, 0.03]])   # on the flange tool, m


def _offset_poses(seed, n=20):
    chain, _, lim = panda_chain()
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.7 * lim[:, 0] + 0.3 * lim[:, 1], 0.3 * lim[:, 0] + 0.7 * lim[:, 1], (n, 7))
    return chain, q, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_offsets_are_recovered_within_5_mrad_from_noisy_fiducials(seed):
    chain, q, rng = _offset_poses(seed)
    injected = rng.uniform(-0.03, 0.03, 7)
    observed = predict_points(chain, q + injected, MARKERS) + rng.normal(0, 0.5e-3, (len(q), 3, 3))  # 0.5 mm tracker
    q_meas = q + rng.normal(0, 1e-4, q.shape)                                                       # encoder noise
    r = estimate_joint_offsets(chain, q_meas, observed, MARKERS)
    assert np.abs(r.offsets_rad - injected).max() < 0.005
    assert r.residual_rms_mm < 1.5 < r.residual_rms_mm_before


def test_joint_offsets_with_too_few_poses_is_an_onboard_error():
    chain, q, _ = _offset_poses(0, n=4)
    with pytest.raises(OnboardError, match="poses"):
        estimate_joint_offsets(chain, q, predict_points(chain, q, MARKERS), MARKERS)


def test_joint_offsets_with_a_single_on_axis_marker_is_rank_deficient():
    chain, q, _ = _offset_poses(0)
    marker = np.array([[0.0, 0.0, 0.05]])       # on the joint-7 axis: its offset is invisible
    with pytest.raises(OnboardError, match="rank"):
        estimate_joint_offsets(chain, q, predict_points(chain, q, marker), marker)


IMU_TRUTH = dict(gyro_noise_density=1.7e-4, gyro_random_walk=2.0e-5,       # rad/s/sqrt(Hz), rad/s^2/sqrt(Hz)
                 accel_noise_density=2.0e-3, accel_random_walk=3.0e-4)     # m/s^2/sqrt(Hz), m/s^3/sqrt(Hz)


@pytest.fixture(scope="module")
def imu_cal():
    t, a, g = simulate_static_imu(3 * 3600, 100.0, seed=1, gyro_bias=(0.01, -0.02, 0.005), **IMU_TRUTH)
    return calibrate_imu(t, a, g)


def test_imu_noise_density_and_random_walk_are_recovered_within_10_percent(imu_cal):
    assert imu_cal.gyro.noise_density == pytest.approx(IMU_TRUTH["gyro_noise_density"], rel=0.10)
    assert imu_cal.gyro.random_walk == pytest.approx(IMU_TRUTH["gyro_random_walk"], rel=0.10)
    assert imu_cal.accel.noise_density == pytest.approx(IMU_TRUTH["accel_noise_density"], rel=0.10)
    assert imu_cal.accel.random_walk == pytest.approx(IMU_TRUTH["accel_random_walk"], rel=0.10)
    # A random-walk bias moves by about K*sqrt(T/3) over the recording: ~1.2e-3 rad/s here.
    assert np.allclose(imu_cal.gyro_bias, [0.01, -0.02, 0.005], atol=5e-3)


def test_imu_kalibr_yaml_has_kalibr_keys(imu_cal):
    doc = imu_cal.kalibr_dict("/imu/data")
    for key in ("accelerometer_noise_density", "accelerometer_random_walk", "gyroscope_noise_density",
                "gyroscope_random_walk", "update_rate", "rostopic"):
        assert key in doc
    assert doc["update_rate"] == pytest.approx(100.0)


def test_allan_deviation_of_white_noise_falls_with_minus_half_slope():
    rng = np.random.default_rng(0)
    taus, adev, _ = allan_deviation(rng.normal(0, 1.0, 200_000), 100.0, taus_s=[0.1, 10.0])
    assert np.log10(adev[1] / adev[0]) / np.log10(taus[1] / taus[0]) == pytest.approx(-0.5, abs=0.05)


def test_a_short_imu_recording_is_an_onboard_error():
    t, a, g = simulate_static_imu(60, 100.0, seed=0, **IMU_TRUTH)
    with pytest.raises(OnboardError, match="random walk needs"):
        calibrate_imu(t, a, g)


@pytest.mark.parametrize("delay_steps", [0, 3, 7])
def test_command_to_state_delay_of_a_mujoco_servo_is_recovered_within_one_sample(delay_steps):
    log = simulate_servo_log(delay_steps, seed=delay_steps)
    est = estimate_delay(log["command"], log["state"], dt_s=0.01)
    assert abs(est.lag_samples - delay_steps) <= 1
    assert est.peak_correlation > 0.5


def test_camera_timestamp_offset_is_recovered_within_one_camera_frame():
    rng = np.random.default_rng(3)
    t_joint = np.arange(0, 20, 0.002)                                         # 500 Hz joint states
    speed = np.abs(np.convolve(rng.normal(0, 1, t_joint.size), np.ones(100) / 100, mode="same"))
    offset_s = 0.045
    t_cam = np.arange(0.5, 19.5, 1 / 30)                                      # 30 Hz camera
    # The camera sees the motion that happened at (stamp - offset); its pixel speed is scaled and noisy.
    cam_speed = 400 * np.interp(t_cam - offset_s, t_joint, speed) + rng.normal(0, 2.0, t_cam.size)
    est = camera_time_offset(t_cam, cam_speed, t_joint, speed, dt_s=0.005)
    assert abs(est.delay_s - offset_s) < 1 / 30


def test_a_constant_command_is_an_onboard_error_not_a_zero_delay():
    with pytest.raises(OnboardError, match="never changes"):
        estimate_delay(np.ones(200), np.random.default_rng(0).normal(size=200), dt_s=0.01)
