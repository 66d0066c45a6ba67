"""Dataset tools on the LeRobot v3 layout: validate, info, merge, split (behind ``onboard dataset``).

Owns ``validate_dataset``: every check that finds a corrupted or inconsistent
dataset before training does — unreadable or missing files, columns missing,
row counts that disagree with ``meta/episodes``, non-contiguous indices,
non-monotonic timestamps or timestamps off the fixed rate, non-finite values,
videos shorter than their episode, ``meta/stats.json`` that does not match the
data, totals that do not add up, and leftovers of a killed recording.

Imports numpy, pyarrow, imageio_ffmpeg and policies.dataset; never torch, rclpy or sim.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onboard.errors import OnboardError
from policies.dataset import (CODEBASE_VERSION, DEFAULT_FEATURES, EPISODES_PATH, LeRobotDatasetWriter,
                              _to_numpy, load_dataset)


@dataclass(frozen=True)
class Problem:
    severity: str        # "error" | "warning"
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file + (f" [{self.field}]" if self.field else "")
        return f"{self.severity}: {where}: {self.message}"


def validate_dataset(root, *, check_videos: bool = True, stats_rtol: float = 1e-3) -> list[Problem]:
    """All problems found in the dataset at ``root`` (empty: valid)."""
    root = Path(root)
    out: list[Problem] = []

    def err(file, fld, msg, severity="error"):
        out.append(Problem(severity, str(file), fld, msg))

    info_path = root / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        err(info_path, "", "missing")
        return out
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        err(info_path, "", f"not valid JSON: {exc}")
        return out
    for key in ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames"):
        if key not in info:
            err(info_path, key, "required field is missing")
    if out:
        return out
    if info["codebase_version"] != CODEBASE_VERSION:
        err(info_path, "codebase_version", f"{info['codebase_version']!r}, expected {CODEBASE_VERSION!r}")
    fps = float(info["fps"])
    features = info["features"]
    for key in DEFAULT_FEATURES:
        if key not in features:
            err(info_path, f"features.{key}", "default feature missing")

    ep_path = root / EPISODES_PATH
    tasks_path = root / "meta" / "tasks.parquet"
    try:
        episodes = sorted(pq.read_table(ep_path).to_pylist(), key=lambda e: e["episode_index"])
        tasks = pq.read_table(tasks_path).to_pylist()
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        err(ep_path if "episodes" in str(exc) or not ep_path.is_file() else tasks_path, "",
            f"missing or unreadable: {exc}")
        return out
    listed = episodes[: info["total_episodes"]]
    if len(episodes) != info["total_episodes"]:
        err(info_path, "total_episodes", f"{info['total_episodes']} but meta/episodes lists {len(episodes)}")
    if [e["episode_index"] for e in listed] != list(range(len(listed))):
        err(ep_path, "episode_index", "episode indices are not 0..N-1")
    total = sum(int(e["length"]) for e in listed)
    if total != info["total_frames"]:
        err(info_path, "total_frames", f"{info['total_frames']} but the episodes add up to {total}")

    value_keys = [k for k, f in features.items() if f["dtype"] != "video"]
    video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
    columns: dict[str, list] = {k: [] for k in value_keys}
    tables: dict[tuple, pa.Table | None] = {}
    for e in listed:
        ei = e["episode_index"]
        where = (e.get("data/chunk_index"), e.get("data/file_index"))
        path = root / info["data_path"].format(chunk_index=where[0], file_index=where[1])
        if where not in tables:
            try:
                tables[where] = pq.read_table(path)
            except FileNotFoundError:
                tables[where] = None
                err(path, "", "data file is missing")
            except (pa.ArrowInvalid, OSError) as exc:
                tables[where] = None
                err(path, "", f"not a readable parquet file: {exc}")
            else:
                absent = [k for k in value_keys if k not in tables[where].column_names]
                for k in absent:
                    err(path, k, "column declared in info.json is missing")
                if absent:
                    tables[where] = None
        table = tables[where]
        if table is None:
            continue
        ep_col = table.column("episode_index").to_numpy()
        rows = np.flatnonzero(ep_col == ei)
        n = int(e["length"])
        if len(rows) != n:
            err(path, f"episode {ei}", f"{len(rows)} rows, meta/episodes says {n}")
            continue
        sub = table.take(pa.array(rows))
        cols = {k: _to_numpy(sub.column(k), features[k]["shape"]) for k in value_keys}
        for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            if cols[k].ndim == 2:
                cols[k] = cols[k][:, 0]
        ts = cols["timestamp"].astype(np.float64)
        if np.any(np.diff(ts) <= 0):
            bad = int(np.flatnonzero(np.diff(ts) <= 0)[0]) + 1
            err(path, f"episode {ei} timestamp", f"not strictly increasing at frame {bad} "
                                                  f"({ts[bad - 1]:.4f} s then {ts[bad]:.4f} s)")
        elif np.max(np.abs(ts - ts[0] - np.arange(n) / fps)) > 0.5 / fps:
            err(path, f"episode {ei} timestamp", f"timestamps drift off the {fps:g} fps grid "
                                                  f"(max {np.max(np.abs(ts - ts[0] - np.arange(n) / fps)):.3f} s)")
        if not np.array_equal(cols["frame_index"], np.arange(n)):
            err(path, f"episode {ei} frame_index", "not 0..length-1")
        start = e.get("dataset_from_index")
        if start is not None and not np.array_equal(cols["index"], np.arange(start, start + n)):
            err(path, f"episode {ei} index", f"not {start}..{start + n - 1}")
        if np.any((cols["task_index"] < 0) | (cols["task_index"] >= len(tasks))):
            err(path, f"episode {ei} task_index", f"outside 0..{len(tasks) - 1}")
        for k in value_keys:
            if np.issubdtype(cols[k].dtype, np.floating) and not np.all(np.isfinite(cols[k])):
                err(path, f"episode {ei} {k}", "non-finite values")
            columns[k].append(cols[k].reshape(n, -1).astype(np.float64))
        if check_videos:
            for key in video_keys:
                _check_video(root, info, e, key, err)

    _check_stats(root, columns, value_keys, stats_rtol, err)
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    if (root / ".recording").exists():
        leftovers.append(root / ".recording")
    for p in leftovers:
        err(p, "", "leftover of an interrupted write (harmless; delete it)", severity="warning")
    return out


def _check_video(root: Path, info: dict, e: dict, key: str, err) -> None:
    import imageio_ffmpeg
    vp = info.get("video_path")
    ci, fi = e.get(f"videos/{key}/chunk_index"), e.get(f"videos/{key}/file_index")
    if vp is None or ci is None or fi is None:
        err(root / EPISODES_PATH, f"episode {e['episode_index']} {key}", "no video location")
        return
    path = root / vp.format(video_key=key, chunk_index=ci, file_index=fi)
    if not path.is_file():
        err(path, key, "video file is missing")
        return
    try:
        n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, ValueError) as exc:
        err(path, key, f"unreadable video: {str(exc)[-200:]}")
        return
    if n_frames < int(e["length"]):
        err(path, key, f"{n_frames} video frames, episode {e['episode_index']} has {e['length']} rows")


def _check_stats(root: Path, columns: dict, value_keys: list, rtol: float, err) -> None:
    stats_path = root / "meta" / "stats.json"
    try:
        stats = json.loads(stats_path.read_text())
    except FileNotFoundError:
        err(stats_path, "", "missing")
        return
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        err(stats_path, "", f"not valid JSON: {exc}")
        return
    for k in value_keys:
        if not columns[k]:
            continue
        x = np.concatenate(columns[k])
        if k not in stats:
            err(stats_path, k, "no stats for this feature")
            continue
        want = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
        for name, value in want.items():
            got = np.asarray(stats[k].get(name, []), dtype=np.float64).reshape(-1)
            scale = np.maximum(np.abs(x).max(0), 1.0)
            if got.shape != value.shape or np.any(np.abs(got - value) > rtol * scale + 1e-6):
                err(stats_path, f"{k}.{name}", "does not match the data (recompute: onboard dataset merge "
                                                "DATASET --out NEW rewrites it)")
                break


# ---------------------------------------------------------------- info / merge / split

def dataset_summary(root) -> dict:
    ds = load_dataset(root)
    lengths = [int(e["length"]) for e in ds.episodes]
    rec = {}
    for e in ds.episodes:
        for k, v in e.items():
            if k.startswith("recorder/") and isinstance(v, (int, float)) and v is not None:
                name = k[len("recorder/"):]
                if name.startswith(("dropped_frames", "camera_gaps", "late_rows", "stale_rows")):
                    rec[name] = rec.get(name, 0) + v
    return {"root": str(ds.root), "codebase_version": ds.info["codebase_version"],
            "robot_type": ds.info.get("robot_type"), "fps": ds.fps, "episodes": ds.num_episodes,
            "frames": ds.num_frames, "duration_s": ds.num_frames / ds.fps,
            "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                               "mean": float(np.mean(lengths)) if lengths else 0.0},
            "tasks": ds.tasks,
            "features": {k: {"dtype": f["dtype"], "shape": f["shape"]} for k, f in ds.features.items()},
            "recorder_totals": rec, "onboard": ds.info.get("onboard")}


def parse_episode_list(spec: str, n: int) -> list[int]:
    """``"0,2,5-7"`` or ``"3:"`` / ``":10"`` (Python slice) -> sorted episode indices."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if ":" in part:
                a, b = part.split(":", 1)
                out.update(range(n)[slice(int(a) if a else None, int(b) if b else None)])
            elif "-" in part[1:]:
                a, b = part.split("-", 1)
                out.update(range(int(a), int(b) + 1))
            elif part:
                out.add(int(part))
    except ValueError as exc:
        raise OnboardError(f"cannot read episode list {spec!r}", field="--episodes",
                           fix="write e.g. 0,2,5-7 or 10: or :10") from exc
    bad = sorted(i for i in out if not 0 <= i < n)
    if bad:
        raise OnboardError(f"episodes {bad} do not exist (the dataset has {n})", field="--episodes",
                           fix=f"use indices 0..{n - 1}")
    return sorted(out)


def _copy_features(features: dict) -> dict:
    keep = {}
    for k, f in features.items():
        if k in DEFAULT_FEATURES:
            continue
        f = {kk: vv for kk, vv in f.items() if kk != "info"}
        keep[k] = f
    return keep


def write_episodes(sources: list[tuple], out, *, overwrite: bool = False) -> dict:
    """Write ``[(dataset, [episode indices]), ...]`` into a new dataset at ``out``; returns its summary."""
    first = sources[0][0]
    features = _copy_features(first.features)
    for ds, _ in sources[1:]:
        if _copy_features(ds.features) != features or ds.fps != first.fps:
            raise OnboardError("datasets differ in features or fps", file=str(ds.root), field="features",
                               fix="merge only datasets recorded with the same robot, task keys, cameras and fps")
    video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
    extra_info = {k: v for k, v in first.info.items() if k == "onboard"}
    with LeRobotDatasetWriter(out, first.fps, features, robot_type=first.info.get("robot_type", ""),
                              overwrite=overwrite, extra_info=extra_info) as w:
        for ds, eps in sources:
            videos = {k: ds.column(k) for k in video_keys}
            task_index = ds.column("task_index")
            for ep in eps:
                sl = ds.episode_slice(ep)
                for i in range(sl.start, sl.stop):
                    frame = {k: ds.column(k)[i] for k in features if k not in video_keys}
                    frame.update({k: videos[k][i] for k in video_keys})
                    w.add_frame(frame, task=ds.tasks[int(task_index[i])])
                extra = {k: v for k, v in ds.episodes[ep].items() if k.startswith("recorder/")}
                w.save_episode(extra=extra)
    return dataset_summary(out)
