"""Demonstration datasets in the LeRobotDataset v3 layout: a writer and a reader.

Owns the on-disk format of demonstrations::

    meta/info.json                           codebase_version "v3.0", fps, features, totals, path templates
    meta/stats.json                          per feature: min, max, mean, std, count
    meta/tasks.parquet                       task, task_index
    meta/episodes/chunk-000/file-000.parquet episode_index, tasks, length, data and video locations
    data/chunk-000/file-000.parquet          one row per frame
    videos/<video_key>/chunk-000/file-NNN.mp4   one file per episode (H.264, imageio-ffmpeg's ffmpeg)

Videos are encoded here from the frames of an episode, or, with
``streamed_videos=True``, by the caller while it records (``policies.recorder``
streams frames into ffmpeg on a worker thread); ``save_episode(videos=...)``
then renames the finished temporary mp4 into place.

Episodes are finalized atomically: every file is written to a temporary path
and renamed, data first and ``meta/`` last, so a crash loses at most the open
episode. The reader trusts ``meta/episodes`` and ignores rows of episodes it
does not list. Units travel in ``info.json`` (``features.<name>.units``), so
``load_dataset(root).obs_spec`` gives back the env's observation spec.

Imports: numpy, pyarrow, imageio_ffmpeg (videos only), onboard. Never imports
a task (sim) or torch.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onboard.errors import OnboardError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
EPISODES_PER_DATA_FILE = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None, "units": "s"},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def features_from_env(obs_spec: list[dict], action_names, cameras=(), image_size=(96, 96)) -> dict:
    """Dataset features for an env: ``observation.<key>`` per obs key, images, and ``action``."""
    feats = {}
    for s in obs_spec:
        feats[f"observation.{s['name']}"] = {"dtype": "float32", "shape": list(s["shape"]),
                                              "names": None, "units": s.get("units", "")}
    for cam in cameras:
        h, w = image_size
        feats[f"observation.images.{cam}"] = {"dtype": "video", "shape": [h, w, 3],
                                              "names": ["height", "width", "channels"], "units": "uint8 RGB"}
    feats["action"] = {"dtype": "float32", "shape": [len(action_names)], "names": list(action_names),
                       "units": "rad (joints), m (gripper_width); absolute targets"}
    return feats


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, doc: dict) -> None:
    _write_atomic(path, lambda p: p.write_text(json.dumps(doc, indent=2)))


def _write_table(path: Path, table: pa.Table) -> None:
    _write_atomic(path, lambda p: pq.write_table(table, p))


def _ffmpeg() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _encode_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    n, h, w, _ = frames.shape
    def write(tmp: Path):
        cmd = [_ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
               "-crf", "18", "-pix_fmt", "yuv444p", "-f", "mp4", str(tmp)]
        proc = subprocess.run(cmd, input=np.ascontiguousarray(frames, dtype=np.uint8).tobytes(),
                              capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {proc.stderr.decode()[-500:]}")
    _write_atomic(path, write)


def decode_mp4(path: Path, h: int, w: int) -> np.ndarray:
    """All frames of an mp4 as (N, H, W, 3) uint8."""
    cmd = [_ffmpeg(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise OnboardError(f"cannot decode video: {proc.stderr.decode()[-300:]}", file=str(path),
                           fix="re-collect the episode or delete the dataset")
    return np.frombuffer(proc.stdout, dtype=np.uint8).reshape(-1, h, w, 3)


class _RunningStats:
    """min / max / mean / std / count accumulated over frames, per element (images: per channel)."""

    def __init__(self):
        self.n = 0
        self.sum = self.sumsq = self.min = self.max = None

    def add(self, x: np.ndarray) -> None:     # x: (frames, ...) float64
        s, ss = x.sum(0), (x * x).sum(0)
        lo, hi = x.min(0), x.max(0)
        if self.n == 0:
            self.sum, self.sumsq, self.min, self.max = s, ss, lo, hi
        else:
            self.sum, self.sumsq = self.sum + s, self.sumsq + ss
            self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)
        self.n += x.shape[0]

    def merge(self, other: "_RunningStats") -> None:
        if other.n == 0:
            return
        if self.n == 0:
            self.sum, self.sumsq, self.min, self.max = other.sum, other.sumsq, other.min, other.max
        else:
            self.sum, self.sumsq = self.sum + other.sum, self.sumsq + other.sumsq
            self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        self.n += other.n

    def to_json(self) -> dict:
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sumsq / self.n - mean * mean, 0.0))
        return {"min": self.min.tolist(), "max": self.max.tolist(), "mean": mean.tolist(),
                "std": std.tolist(), "count": [int(self.n)]}


@dataclass
class EncodedVideo:
    """A finished temporary mp4 of one episode, made by the caller (``streamed_videos=True``).

    ``path`` must be on the dataset's filesystem (it is renamed into place);
    ``stats`` holds per-channel values in [0, 1] (``RunningStats`` over pixels).
    """
    path: Path
    n_frames: int
    stats: "_RunningStats"


class LeRobotDatasetWriter:
    """Append frames, then ``save_episode()`` (atomic) or ``discard_episode()``; ``close()`` at the end.

    ``extra_info`` is merged into ``meta/info.json`` (e.g. ``{"onboard": {"task": "push"}}``).
    """

    def __init__(self, root, fps: float, features: dict, robot_type: str = "franka_panda",
                 overwrite: bool = False, *, streamed_videos: bool = False, extra_info: dict | None = None):
        self.root = Path(root)
        if (self.root / "meta" / "info.json").exists():
            if not overwrite:
                raise OnboardError("a dataset already exists here", file=str(self.root),
                                   fix="choose another --out directory or pass --overwrite")
            for sub in ("meta", "data", "videos"):
                shutil.rmtree(self.root / sub, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self.robot_type = robot_type
        self.features = {**{k: dict(v) for k, v in features.items()}, **DEFAULT_FEATURES}
        self.video_keys = [k for k, v in features.items() if v["dtype"] == "video"]
        self.value_keys = [k for k, v in features.items() if v["dtype"] != "video"]
        for key in self.video_keys:
            self.features[key]["info"] = {"video.fps": self.fps, "video.codec": "h264",
                                          "video.pix_fmt": "yuv444p", "video.is_depth_map": False,
                                          "has_audio": False}
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.total_frames = 0
        self._file_rows: dict[str, list] = {}        # rows of the current data file
        self._file_index = 0
        self._file_episodes = 0
        self._stats = {k: _RunningStats() for k in self.features}
        self._open: list[tuple[dict, str]] = []
        self._closed = False
        self.streamed_videos = bool(streamed_videos)
        self.extra_info = dict(extra_info or {})

    # ------------------------------------------------------------ frames
    def add_frame(self, frame: dict, task: str) -> None:
        missing = [k for k in self.features if k not in frame and k not in DEFAULT_FEATURES
                   and not (self.streamed_videos and k in self.video_keys)]
        if missing:
            raise OnboardError(f"frame lacks features {missing}", field=missing[0],
                               fix="pass every feature declared when the writer was made")
        clean = {}
        for key, value in frame.items():
            if key not in self.features or key in DEFAULT_FEATURES or (
                    self.streamed_videos and key in self.video_keys):
                raise OnboardError(f"'{key}' is not a declared feature", field=key,
                                   fix=f"declare it in features (known: {sorted(self.features)})")
            ft = self.features[key]
            arr = np.asarray(value, dtype=np.uint8 if ft["dtype"] == "video" else ft["dtype"])
            if list(arr.shape) != list(ft["shape"]):
                raise OnboardError(f"shape {list(arr.shape)} does not match declared {ft['shape']}",
                                   field=key, fix="fix the frame or the feature declaration")
            if ft["dtype"] != "video" and not np.all(np.isfinite(arr)):
                raise OnboardError("non-finite value", field=key, fix="record finite values only")
            clean[key] = arr.copy()
        self._open.append((clean, task))

    @property
    def open_frames(self) -> int:
        return len(self._open)

    def discard_episode(self) -> None:
        self._open = []

    # ------------------------------------------------------------ episodes
    def save_episode(self, videos: dict | None = None, extra: dict | None = None) -> int:
        """Write the open episode atomically; returns its episode index.

        ``videos``: ``{video_key: EncodedVideo}``, required for every video key when the
        writer was made with ``streamed_videos=True``. ``extra``: more columns for this
        episode's row in ``meta/episodes`` (e.g. the recorder's dropped-frame counts).
        """
        if not self._open:
            raise OnboardError("no frames in the open episode", field="add_frame",
                               fix="add frames before save_episode()")
        if self.streamed_videos:
            lacking = [k for k in self.video_keys if k not in (videos or {})]
            if lacking:
                raise OnboardError(f"no encoded video for {lacking}", field="videos",
                                   fix="pass save_episode(videos={key: EncodedVideo(...)}) for every video key")
            short = [k for k in self.video_keys if videos[k].n_frames != len(self._open)]
            if short:
                raise OnboardError(f"video frame count differs from the {len(self._open)} rows for {short}",
                                   field="videos", fix="encode exactly one video frame per row")
        ep = len(self.episodes)
        n = len(self._open)
        start = self.total_frames
        ep_tasks = []
        for _, task in self._open:
            if task not in self.tasks:
                self.tasks[task] = len(self.tasks)
            if task not in ep_tasks:
                ep_tasks.append(task)
        cols = {k: np.stack([f[k] for f, _ in self._open]) for k in self.value_keys}
        cols["timestamp"] = (np.arange(n) / self.fps).astype(np.float32)
        cols["frame_index"] = np.arange(n, dtype=np.int64)
        cols["episode_index"] = np.full(n, ep, dtype=np.int64)
        cols["index"] = np.arange(start, start + n, dtype=np.int64)
        cols["task_index"] = np.array([self.tasks[t] for _, t in self._open], dtype=np.int64)

        if self._file_episodes >= EPISODES_PER_DATA_FILE:
            self._file_index += 1
            self._file_episodes = 0
            self._file_rows = {}
        for k, v in cols.items():
            self._file_rows.setdefault(k, []).append(v)
        data_rel = DATA_PATH.format(chunk_index=self._file_index // CHUNKS_SIZE,
                                    file_index=self._file_index % CHUNKS_SIZE)
        _write_table(self.root / data_rel, self._rows_table())

        record = {"episode_index": ep, "tasks": ep_tasks, "length": n,
                  "data/chunk_index": self._file_index // CHUNKS_SIZE,
                  "data/file_index": self._file_index % CHUNKS_SIZE,
                  "dataset_from_index": start, "dataset_to_index": start + n,
                  "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for key in self.video_keys:
            rel = VIDEO_PATH.format(video_key=key, chunk_index=ep // CHUNKS_SIZE, file_index=ep % CHUNKS_SIZE)
            if self.streamed_videos:
                (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(videos[key].path, self.root / rel)
                self._stats[key].merge(videos[key].stats)
            else:
                frames = np.stack([f[key] for f, _ in self._open])
                _encode_mp4(self.root / rel, frames, self.fps)
            record.update({f"videos/{key}/chunk_index": ep // CHUNKS_SIZE,
                           f"videos/{key}/file_index": ep % CHUNKS_SIZE,
                           f"videos/{key}/from_timestamp": 0.0,
                           f"videos/{key}/to_timestamp": n / self.fps})
            if not self.streamed_videos:
                self._stats[key].add(frames.reshape(-1, 3).astype(np.float64) / 255.0)
        record.update(extra or {})
        for k, v in cols.items():
            self._stats[k].add(v.reshape(n, -1).astype(np.float64))

        self.episodes.append(record)
        self._file_episodes += 1
        self.total_frames += n
        self._open = []
        self._write_meta()
        return ep

    def _rows_table(self) -> pa.Table:
        arrays, names = [], []
        for k, parts in self._file_rows.items():
            v = np.concatenate(parts)
            if v.ndim == 1:
                arrays.append(pa.array(v))
            else:
                flat = pa.array(v.reshape(-1))
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, int(np.prod(v.shape[1:]))))
            names.append(k)
        return pa.table(arrays, names=names)

    def _write_meta(self) -> None:
        root = self.root
        _write_table(root / "meta" / "tasks.parquet",
                     pa.table({"task": list(self.tasks), "task_index": list(self.tasks.values())}))
        keys = list(dict.fromkeys(k for e in self.episodes for k in e))
        table = pa.table({k: [e.get(k) for e in self.episodes] for k in keys})
        _write_table(root / EPISODES_PATH, table)
        stats = {}
        for k, s in self._stats.items():
            if s.n:
                st = s.to_json()
                if k in self.video_keys:      # LeRobot stores image stats per channel as (3, 1, 1)
                    st = {key: ([[[x]] for x in val] if key != "count" else val) for key, val in st.items()}
                stats[k] = st
        _write_json(root / "meta" / "stats.json", stats)
        _write_json(root / "meta" / "info.json", self.info())

    def info(self) -> dict:
        n_ep = len(self.episodes)
        return {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": n_ep, "total_frames": self.total_frames, "total_tasks": len(self.tasks),
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                "fps": self.fps, "splits": {"train": f"0:{n_ep}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH if self.video_keys else None,
                "features": self.features, **self.extra_info}

    def close(self) -> None:
        """Drop an unsaved episode and write the final meta files."""
        self._open = []
        if self.episodes and not self._closed:
            self._write_meta()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- reader
@dataclass
class LeRobotDataset:
    root: Path
    info: dict
    stats: dict
    episodes: list[dict]
    tasks: list[str]
    columns: dict            # feature -> (N, ...) array (videos decoded lazily)
    episode_index: np.ndarray

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return len(self.episode_index)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict:
        return self.info["features"]

    @property
    def obs_spec(self) -> list[dict]:
        """The env observation spec, back from ``observation.<key>`` features (images excluded)."""
        out = []
        for k, f in self.features.items():
            if k.startswith("observation.") and not k.startswith("observation.images.") and f["dtype"] != "video":
                out.append({"name": k[len("observation."):], "shape": list(f["shape"]),
                            "units": f.get("units", "")})
        return out

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            if name in self.features and self.features[name]["dtype"] == "video":
                self.columns[name] = self._decode_video(name)
            else:
                raise OnboardError(f"no feature '{name}'", file=str(self.root / "meta" / "info.json"),
                                   field="features", fix=f"use one of {sorted(self.features)}")
        return self.columns[name]

    def episode_slice(self, ep: int) -> slice:
        e = self.episodes[ep]
        starts = np.flatnonzero(self.episode_index == e["episode_index"])
        return slice(int(starts[0]), int(starts[-1]) + 1)

    def _decode_video(self, key: str) -> np.ndarray:
        h, w, _ = self.features[key]["shape"]
        parts = []
        for e in self.episodes:
            rel = self.info["video_path"].format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                                 file_index=e[f"videos/{key}/file_index"])
            frames = decode_mp4(self.root / rel, h, w)
            if len(frames) < e["length"]:
                raise OnboardError(f"video has {len(frames)} frames, episode has {e['length']}",
                                   file=str(self.root / rel), field=key, fix="re-collect the dataset")
            parts.append(frames[: e["length"]])
        return np.concatenate(parts)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise OnboardError(f"{what} is missing", file=str(path),
                           fix="point at a dataset root written by `onboard collect`")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OnboardError(f"{what} is not valid JSON: {exc}", file=str(path),
                           fix="re-collect the dataset") from exc


def _read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise OnboardError("parquet file is missing", file=str(path), fix="re-collect the dataset")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise OnboardError(f"not a readable parquet file: {exc}", file=str(path),
                           fix="re-collect the dataset") from exc


def _to_numpy(col: pa.ChunkedArray, shape) -> np.ndarray:
    arr = col.combine_chunks()
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type):
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(arr), *shape)
    return arr.to_numpy(zero_copy_only=False)


def load_dataset(root) -> LeRobotDataset:
    """Read a v3 dataset: every non-video feature as an (N, ...) array, plus meta."""
    root = Path(root)
    info_path = root / "meta" / "info.json"
    info = _read_json(info_path, "meta/info.json")
    for key in ("codebase_version", "fps", "features", "data_path", "total_episodes"):
        if key not in info:
            raise OnboardError("required field is missing", file=str(info_path), field=key,
                               fix="re-collect the dataset with `onboard collect`")
    if info["codebase_version"] != CODEBASE_VERSION:
        raise OnboardError(f"codebase_version is {info['codebase_version']!r}, expected {CODEBASE_VERSION!r}",
                           file=str(info_path), field="codebase_version",
                           fix="convert the dataset to LeRobot v3")
    stats_path = root / "meta" / "stats.json"
    stats = _read_json(stats_path, "meta/stats.json") if stats_path.exists() else {}
    ep_path = root / EPISODES_PATH
    ep_table = _read_parquet(ep_path).to_pylist()
    episodes = sorted(ep_table, key=lambda e: e["episode_index"])[: info["total_episodes"]]
    tasks_table = _read_parquet(root / "meta" / "tasks.parquet").to_pylist()
    tasks = [t["task"] for t in sorted(tasks_table, key=lambda t: t["task_index"])]

    files = sorted({(e["data/chunk_index"], e["data/file_index"]) for e in episodes})
    keep = {e["episode_index"] for e in episodes}
    features = info["features"]
    value_keys = [k for k, f in features.items() if f["dtype"] != "video"]
    columns: dict[str, list] = {k: [] for k in value_keys}
    for chunk, fidx in files:
        path = root / info["data_path"].format(chunk_index=chunk, file_index=fidx)
        table = _read_parquet(path)
        for k in value_keys:
            if k not in table.column_names:
                raise OnboardError("column declared in info.json is missing from the data", file=str(path),
                                   field=k, fix="re-collect the dataset")
        ep_col = table.column("episode_index").to_numpy()
        mask = np.isin(ep_col, list(keep))        # rows of an episode that never finished are dropped
        for k in value_keys:
            arr = _to_numpy(table.column(k), features[k]["shape"])
            columns[k].append(arr[mask])
    cols = {k: np.concatenate(v) for k, v in columns.items()} if files else {}
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        if k in cols and cols[k].ndim == 2:
            cols[k] = cols[k][:, 0]
    expected = sum(e["length"] for e in episodes)
    ep_index = cols.get("episode_index", np.zeros(0, dtype=np.int64))
    if len(ep_index) != expected:
        raise OnboardError(f"data holds {len(ep_index)} rows, meta/episodes lists {expected}",
                           file=str(ep_path), field="length", fix="re-collect the dataset")
    return LeRobotDataset(root=root, info=info, stats=stats, episodes=episodes, tasks=tasks,
                          columns=cols, episode_index=ep_index)


RunningStats = _RunningStats      # public name for callers that stream videos (policies.recorder)
