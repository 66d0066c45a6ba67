"""``onboard calibrate {camera,handeye,joints,imu,latency}``: run one calibration, write YAML and a PNG plot.

Every sub-command reads real recordings; ``--simulate`` first writes a
MuJoCo-rendered (or simulated) recording with known ground truth into the
input path, so the whole chain can be tried without hardware.
"""
from __future__ import annotations

import glob
import sys
from pathlib import Path

HELP = "calibrate camera intrinsics, hand-eye, joint offsets, IMU noise or latency; write YAML + plots"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)

    def board_args(p):
        p.add_argument("--board", default="7x5", help="squares as COLSxROWS (default 7x5)")
        p.add_argument("--square-m", type=float, default=0.04, help="square side [m]")
        p.add_argument("--marker-m", type=float, default=0.03, help="ArUco marker side [m]")
        p.add_argument("--dictionary", default="DICT_5X5_100")
        p.add_argument("--chessboard", action="store_true", help="plain chessboard instead of ChArUco")

    p = sub.add_parser("camera", help="intrinsics from board images -> camera_info YAML")
    p.add_argument("--images", required=True, help="folder of images or a glob")
    board_args(p)
    p.add_argument("--camera-name", default="camera")
    p.add_argument("--out", default="runs/calibration/camera_info.yaml")
    p.add_argument("--plot", default=None, help="PNG of per-view errors (default: next to --out)")
    p.add_argument("--simulate", type=int, default=0, metavar="N", help="first render N views in MuJoCo into --images")

    p = sub.add_parser("handeye", help="camera-robot transform from stations -> transform YAML")
    p.add_argument("--stations", required=True,
                   help="YAML: camera_info, setup, board {squares_x, ...}, stations [{image, q | T_base_gripper}]")
    p.add_argument("--setup", choices=["eye_in_hand", "eye_to_hand"], default=None, help="overrides the file")
    p.add_argument("--parent", default=None, help="parent frame (default panda_link8 / panda_link0)")
    p.add_argument("--child", default="camera_optical_frame")
    p.add_argument("--out", default="runs/calibration/handeye.yaml")
    p.add_argument("--simulate", type=int, default=0, metavar="N", help="first render N stations into the --stations folder")

    p = sub.add_parser("joints", help="joint zero offsets from fiducial observations -> YAML")
    p.add_argument("--data", required=True, help=".npz with q (N,7), points (N,M,3) [m, base frame], markers (M,3)")
    p.add_argument("--out", default="runs/calibration/joint_offsets.yaml")
    p.add_argument("--simulate", action="store_true", help="first write a simulated recording with injected offsets")

    p = sub.add_parser("imu", help="bias + Allan deviation from a static recording -> Kalibr imu.yaml")
    p.add_argument("--recording", required=True, help=".npz (t, accel, gyro) or .csv (t,ax,ay,az,gx,gy,gz)")
    p.add_argument("--rostopic", default="/imu")
    p.add_argument("--out", default="runs/calibration/imu.yaml")
    p.add_argument("--plot", default=None)
    p.add_argument("--simulate", type=float, default=0.0, metavar="HOURS", help="first simulate a static recording")

    p = sub.add_parser("latency", help="command-to-state delay and camera time offset -> YAML")
    p.add_argument("--log", required=True, help=".npz or .csv with t, command, state (+ optional camera_t, "
                                                "camera_motion, joint_motion)")
    p.add_argument("--max-lag-s", type=float, default=0.5)
    p.add_argument("--out", default="runs/calibration/latency.yaml")
    p.add_argument("--plot", default=None)
    p.add_argument("--simulate", type=int, default=-1, metavar="STEPS", help="first simulate a MuJoCo servo log "
                                                                             "with this injected delay")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _plot_path(args, suffix: str) -> Path:
    return Path(args.plot) if getattr(args, "plot", None) else Path(args.out).with_suffix(f".{suffix}.png")


def _board(args):
    from calibration.board import BoardSpec
    from onboard.errors import OnboardError
    try:
        sx, sy = (int(v) for v in str(args.board).lower().split("x"))
    except ValueError:
        raise OnboardError(f"--board {args.board!r} is not COLSxROWS", field="--board", fix="write e.g. 7x5")
    return BoardSpec(sx, sy, args.square_m, args.marker_m, args.dictionary,
                     "chessboard" if args.chessboard else "charuco")


def run(args) -> int:
    return {"camera": _camera, "handeye": _handeye, "joints": _joints, "imu": _imu, "latency": _latency}[args.target](args)


# ---- camera -----------------------------------------------------------------------------------------
def _image_paths(spec: str) -> list[Path]:
    p = Path(spec)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    return [Path(q) for q in sorted(glob.glob(spec))]


def _camera(args) -> int:
    import cv2
    from calibration.camera import calibrate_camera, detect_images
    from calibration.io import write_camera_info
    from calibration.plots import plot_reprojection
    from onboard.errors import OnboardError

    board = _board(args)
    if args.simulate:
        from sim.calib_scenes import render_calibration_set
        images, _, K = render_calibration_set(board, args.simulate, pixel_noise_std=2.0)
        Path(args.images).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            cv2.imwrite(str(Path(args.images) / f"view_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        _say(f"rendered {len(images)} views into {args.images} (truth fx=fy={K[0, 0]:.2f}, cx={K[0, 2]}, cy={K[1, 2]})")
    paths = _image_paths(args.images)
    if not paths:
        raise OnboardError("no images found", file=args.images, field="--images", fix="pass a folder of PNG/JPEG files")
    dets, skipped = detect_images(board, paths, progress=_say)
    cal = calibrate_camera(board, dets, skipped=skipped)
    _say(cal.report())
    write_camera_info(args.out, cal.K, cal.dist, cal.image_size, args.camera_name,
                      comment=f"onboard calibrate camera: {len(dets)} views, rms {cal.rms_px:.3f} px")
    png = plot_reprojection(cal.views, _plot_path(args, "reprojection"))
    _say(f"wrote {args.out} and {png}")
    return 0


# ---- hand-eye ---------------------------------------------------------------------------------------
def _simulate_stations(folder: Path, n: int, setup: str) -> Path:
    import cv2
    import numpy as np
    from calibration.io import write_camera_info, write_yaml_atomic
    from sim.calib_scenes import simulate_handeye
    s = simulate_handeye(setup, n_stations=n, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    write_camera_info(folder / "camera_info.yaml", s["K"], s["dist"], (640, 480), "sim_camera")
    stations = []
    for i, (img, q) in enumerate(zip(s["images"], s["q"])):
        name = f"station_{i:03d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        stations.append({"image": name, "q": np.round(q, 6).tolist()})
    doc = {"camera_info": "camera_info.yaml", "setup": setup, "robot": "franka_panda",
           "board": s["board"].to_dict(), "stations": stations,
           "truth": {"X": np.asarray(s["truth"]["X"]).tolist()}}
    path = write_yaml_atomic(folder / "stations.yaml", doc)
    _say(f"rendered {n} {setup} stations into {folder}")
    return path


def _handeye(args) -> int:
    import numpy as np
    from calibration.board import BoardDetector, BoardSpec, read_gray
    from calibration.camera import board_pose
    from calibration.handeye import calibrate_all_methods, refine_reprojection
    from calibration.io import read_camera_info, read_yaml, transform_dict, write_yaml_atomic
    from calibration.kinematics import DHChain
    from calibration.transforms import pose_error
    from onboard.errors import OnboardError
    from onboard.spec.robot import load_robot

    path = Path(args.stations)
    if args.simulate:
        path = _simulate_stations(path.parent if path.suffix else path, args.simulate, args.setup or "eye_in_hand")
    doc = read_yaml(path, "stations")
    setup = args.setup or doc.get("setup", "eye_in_hand")
    base = path.parent
    try:
        board = BoardSpec(**doc.get("board", {}))
        K, dist, _ = read_camera_info(base / doc["camera_info"])
        stations = list(doc["stations"])
    except (KeyError, TypeError) as exc:
        raise OnboardError(f"missing or malformed field ({exc})", file=str(path), field="camera_info/board/stations",
                           fix="see docs/calibration.md for the stations file format") from exc
    profile = load_robot(doc.get("robot", "franka_panda"))
    chain = DHChain(profile.raw["kinematics"]["dh_modified"])
    det = BoardDetector(board)
    G, C, dets = [], [], []
    for i, st in enumerate(stations):
        img_path = base / str(st.get("image", ""))
        d = det.detect(read_gray(img_path), source=str(img_path))
        if d is None:
            _say(f"[{i + 1}/{len(stations)}] {img_path.name}: board not found, skipped")
            continue
        T = board_pose(board, d, K, dist)
        if "q" in st:
            Tg = chain.fk(st["q"])
        elif "T_base_gripper" in st:
            Tg = np.asarray(st["T_base_gripper"], dtype=np.float64).reshape(4, 4)
        else:
            raise OnboardError("station has neither q nor T_base_gripper", file=str(path), field=f"stations[{i}]",
                               fix="log the joint positions (q) at every image")
        if T is None:
            continue
        G.append(Tg), C.append(T), dets.append(d)
        _say(f"[{i + 1}/{len(stations)}] {img_path.name}: {len(d)} corners, board at {1000 * T[2, 3]:.0f} mm")
    best, results = calibrate_all_methods(G, C, setup=setup)
    for m, r in results.items():
        s = r.summary()
        _say(f"{m:>11}: residual {s['residual_mm']['rms']:.2f} mm / {s['residual_deg']['rms']:.3f} deg, "
             f"held-out {s['heldout_mm']['rms'] or 0:.2f} mm / {s['heldout_deg']['rms'] or 0:.3f} deg")
    refined = refine_reprojection(best, G, dets, board.corner_points(), K, dist, T_cam_target=C)
    _say(f"refined ({refined.method}): reprojection {refined.reprojection_rms_px:.3f} px")
    parent = args.parent or ("panda_link8" if setup == "eye_in_hand" else "panda_link0")
    summary = best.summary()
    extra = {"setup": setup, "method": refined.method, "stations": len(G),
             "validation": {"heldout_mm": summary["heldout_mm"], "heldout_deg": summary["heldout_deg"],
                            "residual_mm": refined.summary()["residual_mm"],
                            "residual_deg": refined.summary()["residual_deg"],
                            "reprojection_rms_px": refined.reprojection_rms_px},
             "methods": {m: r.summary() for m, r in results.items()}}
    if "truth" in doc:
        mm, deg = pose_error(refined.T, np.asarray(doc["truth"]["X"]))
        _say(f"simulated truth: error {mm:.2f} mm, {deg:.3f} deg")
    write_yaml_atomic(args.out, transform_dict(refined.T, parent, args.child, **extra))
    _say(f"wrote {args.out} ({parent} -> {args.child})")
    return 0


# ---- joints -----------------------------------------------------------------------------------------
def _load_npz(path, keys, what):
    import numpy as np
    from onboard.errors import OnboardError
    path = Path(path)
    try:
        z = np.load(path)
        return {k: np.asarray(z[k], dtype=np.float64) for k in keys}
    except FileNotFoundError:
        raise OnboardError(f"{what} file not found", file=str(path), fix="check the path")
    except KeyError as exc:
        raise OnboardError(f"missing array {exc}", file=str(path), field=str(exc).strip("'\""),
                           fix=f"save arrays {keys} with numpy.savez") from exc
    except (ValueError, OSError) as exc:
        raise OnboardError(f"cannot read {what}: {exc}", file=str(path), fix="pass an .npz written by numpy.savez")


def _joints(args) -> int:
    import numpy as np
    from calibration.io import write_yaml_atomic
    from calibration.joint_offsets import estimate_joint_offsets, predict_points
    from calibration.kinematics import DHChain
    from onboard.spec.robot import load_robot

    profile = load_robot("franka_panda")
    chain = DHChain(profile.raw["kinematics"]["dh_modified"])
    if args.simulate:
        rng = np.random.default_rng(0)
        lim = np.asarray(profile.limits.position)
        q = rng.uniform(0.7 * lim[:, 0] + 0.3 * lim[:, 1], 0.3 * lim[:, 0] + 0.7 * lim[:, 1], (20, 7))
        markers = np.array([[0.05, 0.0, 0.02], [0.0, 0.06, 0.02], [-0.04, -0.03, 0.03]])
        injected = rng.uniform(-0.03, 0.03, 7)
        pts = predict_points(chain, q + injected, markers) + rng.normal(0, 5e-4, (20, 3, 3))
        Path(args.data).parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.data, q=q, points=pts, markers=markers, injected=injected)
        _say(f"simulated 20 poses with injected offsets {np.round(injected, 4).tolist()} rad -> {args.data}")
    d = _load_npz(args.data, ["q", "points", "markers"], "joint observations")
    r = estimate_joint_offsets(chain, d["q"], d["points"], d["markers"])
    for name, o, s in zip(profile.joint_names, r.offsets_rad, r.std_rad):
        _say(f"{name}: {o:+.5f} rad (+/- {s:.5f})")
    _say(f"residual {r.residual_rms_mm_before:.2f} mm -> {r.residual_rms_mm:.2f} mm over {r.n_poses} poses")
    write_yaml_atomic(args.out, {"calibration_kind": "joints", "robot": profile.name,
                                 "joint_names": list(profile.joint_names),
                                 "zero_offsets_rad": r.offsets_rad, "std_rad": r.std_rad,
                                 "residual_rms_mm": r.residual_rms_mm, "poses": r.n_poses,
                                 "convention": "true joint angle = encoder reading + offset"})
    _say(f"wrote {args.out}")
    return 0


# ---- IMU --------------------------------------------------------------------------------------------
def _imu(args) -> int:
    import numpy as np
    from calibration.imu import calibrate_imu
    from calibration.io import write_yaml_atomic
    from calibration.plots import plot_allan
    from onboard.errors import OnboardError

    path = Path(args.recording)
    if args.simulate:
        from sim.calib_scenes import simulate_static_imu
        t, a, g = simulate_static_imu(args.simulate * 3600, 100.0, gyro_noise_density=1.7e-4,
                                      gyro_random_walk=2e-5, accel_noise_density=2e-3, accel_random_walk=3e-4)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, t=t, accel=a, gyro=g)
        _say(f"simulated {args.simulate} h static IMU at 100 Hz -> {path} (truth: gyro N=1.7e-4, K=2e-5; "
             "accel N=2e-3, K=3e-4)")
    if path.suffix == ".csv":
        try:
            arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except (OSError, ValueError) as exc:
            raise OnboardError(f"cannot read CSV: {exc}", file=str(path), fix="columns t,ax,ay,az,gx,gy,gz with a header")
        if arr.shape[1] != 7:
            raise OnboardError(f"expected 7 columns, got {arr.shape[1]}", file=str(path), field="columns",
                               fix="write t,ax,ay,az,gx,gy,gz")
        t, a, g = arr[:, 0], arr[:, 1:4], arr[:, 4:7]
    else:
        d = _load_npz(path, ["t", "accel", "gyro"], "IMU recording")
        t, a, g = d["t"], d["accel"], d["gyro"]
    cal = calibrate_imu(t, a, g, progress=_say)
    doc = cal.kalibr_dict(args.rostopic)
    for k in ("gyroscope_noise_density", "gyroscope_random_walk", "accelerometer_noise_density",
              "accelerometer_random_walk"):
        _say(f"{k}: {doc[k]:.4g}")
    write_yaml_atomic(args.out, doc)
    png = plot_allan(cal, _plot_path(args, "allan"))
    _say(f"wrote {args.out} and {png}")
    return 0


# ---- latency ----------------------------------------------------------------------------------------
def _latency(args) -> int:
    import numpy as np
    from calibration.io import write_yaml_atomic
    from calibration.latency import camera_time_offset, estimate_delay, latency_dict, white_noise_std
    from calibration.plots import plot_correlation
    from onboard.errors import OnboardError

    path = Path(args.log)
    if args.simulate >= 0:
        from sim.calib_scenes import simulate_servo_log
        log = simulate_servo_log(args.simulate)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **log)
        _say(f"simulated a MuJoCo servo log with {args.simulate} samples (10 ms each) of delay -> {path}")
    if path.suffix == ".csv":
        try:
            arr = np.genfromtxt(path, delimiter=",", names=True)
            cols = {n: np.asarray(arr[n], dtype=np.float64) for n in arr.dtype.names}
        except (OSError, ValueError, TypeError) as exc:
            raise OnboardError(f"cannot read CSV: {exc}", file=str(path), fix="a header row t,command,state")
    else:
        import numpy as _np
        try:
            z = _np.load(path)
            cols = {k: _np.asarray(z[k], dtype=_np.float64) for k in z.files}
        except (OSError, ValueError) as exc:
            raise OnboardError(f"cannot read log: {exc}", file=str(path), fix="pass an .npz or .csv log")
    for key in ("t", "command", "state"):
        if key not in cols:
            raise OnboardError(f"column '{key}' is missing", file=str(path), field=key,
                               fix="log t, command and state for one joint")
    dt = float(np.median(np.diff(cols["t"])))
    est = estimate_delay(cols["command"], cols["state"], dt, max_lag_s=args.max_lag_s)
    _say(f"command-to-state delay: {1000 * est.delay_s:.1f} ms ({est.lag_samples} samples of {1000 * dt:.1f} ms), "
         f"peak correlation {est.peak_correlation:.2f}")
    cam = None
    if all(k in cols for k in ("camera_t", "camera_motion", "joint_motion")):
        cam = camera_time_offset(cols["camera_t"], cols["camera_motion"], cols["t"], cols["joint_motion"])
        _say(f"camera timestamp offset: {1000 * cam.delay_s:.1f} ms")
    write_yaml_atomic(args.out, latency_dict(est, state_noise_std=white_noise_std(cols["state"]), camera=cam))
    png = plot_correlation(est, _plot_path(args, "correlation"), "command vs state (differentiated)")
    _say(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":   # pragma: no cover
    from onboard.cli import main
    sys.exit(main(["calibrate", *sys.argv[1:]]))
