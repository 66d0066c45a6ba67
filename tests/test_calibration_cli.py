"""`onboard calibrate ...` end to end on simulated recordings, its error exits, and the feed into DR."""
import numpy as np
import pytest
import yaml

from calibration.feed import apply_overrides, calibration_provenance, dr_overrides_from_calibration
from onboard.cli import main
from onboard.errors import OnboardError


def test_calibrate_camera_writes_camera_info_and_a_reprojection_plot(tmp_path, capsys):
    out = tmp_path / "camera_info.yaml"
    assert main(["calibrate", "camera", "--images", str(tmp_path / "img"), "--simulate", "10", "--out", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["camera_matrix"]["data"][0] == pytest.approx(514.68, rel=0.01)
    assert (tmp_path / "camera_info.reprojection.png").stat().st_size > 1000
    assert "view_009.png" in capsys.readouterr().out             # progress lines name each view


def test_calibrate_camera_with_an_unreadable_image_exits_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG garbage")
    assert main(["calibrate", "camera", "--images", str(tmp_path / "img")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_calibrate_camera_with_too_few_views_exits_2(tmp_path, capsys):
    assert main(["calibrate", "camera", "--images", str(tmp_path / "img"), "--simulate", "3",
                 "--out", str(tmp_path / "c.yaml")]) == 2
    assert "usable views" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()


@pytest.fixture(scope="module")
def station_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("he")
    assert main(["calibrate", "handeye", "--stations", str(d / "stations.yaml"), "--simulate", "12",
                 "--out", str(d / "handeye.yaml")]) == 0
    return d


def test_calibrate_handeye_writes_a_transform_with_frames_and_validation(station_dir):
    doc = yaml.safe_load((station_dir / "handeye.yaml").read_text())
    assert doc["parent_frame"] == "panda_link8" and doc["child_frame"] == "camera_optical_frame"
    T = np.asarray(doc["matrix"])
    truth = np.asarray(yaml.safe_load((station_dir / "stations.yaml").read_text())["truth"]["X"])
    assert np.linalg.norm(T[:3, 3] - truth[:3, 3]) < 0.002
    assert set(doc["methods"]) == {"tsai", "park", "horaud", "andreff", "daniilidis"}
    assert doc["validation"]["heldout_mm"]["rms"] < 5.0


def test_calibrate_handeye_with_translation_only_motion_exits_2(station_dir, tmp_path, capsys):
    doc = yaml.safe_load((station_dir / "stations.yaml").read_text())
    for i, st in enumerate(doc["stations"]):
        st.pop("q")
        st["image"] = str(station_dir / st["image"])
        T = np.eye(4)
        T[:3, 3] = [0.3 + 0.01 * i, 0.02 * (i % 3), 0.5]
        st["T_base_gripper"] = T.tolist()
    doc["camera_info"] = str(station_dir / "camera_info.yaml")
    (tmp_path / "stations.yaml").write_text(yaml.safe_dump(doc))
    assert main(["calibrate", "handeye", "--stations", str(tmp_path / "stations.yaml"),
                 "--out", str(tmp_path / "he.yaml")]) == 2
    err = capsys.readouterr().err
    assert "degenerate motion" in err and "Fix:" in err


def test_calibrate_joints_imu_latency_and_feed_dr_and_provenance(tmp_path):
    j, imu, lat = tmp_path / "joints.yaml", tmp_path / "imu.yaml", tmp_path / "latency.yaml"
    assert main(["calibrate", "joints", "--data", str(tmp_path / "j.npz"), "--simulate", "--out", str(j)]) == 0
    injected = np.load(tmp_path / "j.npz")["injected"]
    assert np.abs(np.asarray(yaml.safe_load(j.read_text())["zero_offsets_rad"]) - injected).max() < 0.005
    assert main(["calibrate", "imu", "--recording", str(tmp_path / "imu.npz"), "--simulate", "0.5",
                 "--out", str(imu)]) == 0
    assert yaml.safe_load(imu.read_text())["gyroscope_noise_density"] == pytest.approx(1.7e-4, rel=0.1)
    assert (tmp_path / "imu.allan.png").exists()
    assert main(["calibrate", "latency", "--log", str(tmp_path / "lat.npz"), "--simulate", "15",
                 "--out", str(lat)]) == 0
    assert yaml.safe_load(lat.read_text())["lag_samples"] == 15
    assert (tmp_path / "latency.correlation.png").exists()

    over = dr_overrides_from_calibration([lat, imu, j], control_hz=10.0)
    assert over["latency"]["action_delay_steps"] == (1, 2)            # 150 ms +/- 10 ms at 10 Hz
    # 2e-4 rad encoder noise; the servo's own jitter between steps adds to it, never subtracts.
    assert 2e-4 <= over["observation_noise"]["joint_pos"] < 1.6 * 2e-4
    assert over["imu_noise"]["gyro"] == pytest.approx(1.7e-4 * np.sqrt(10), rel=0.1)
    merged = apply_overrides({"latency": {"action_delay_steps": (0, 1)}, "object": {"friction": (0.6, 1.0)}}, over)
    assert merged["latency"]["action_delay_steps"] == (1, 2) and merged["object"]["friction"] == (0.6, 1.0)
    prov = calibration_provenance([lat, imu])
    assert [p["file"] for p in prov["calibration"]] == ["latency.yaml", "imu.yaml"]
    assert all(len(p["sha256"]) == 64 for p in prov["calibration"])


def test_a_file_that_is_not_a_calibration_is_rejected_by_the_feed(tmp_path):
    bad = tmp_path / "random.yaml"
    bad.write_text("hello: world\n")
    with pytest.raises(OnboardError, match="not a calibration file"):
        dr_overrides_from_calibration([bad])
