"""The episode recorder behind ``recorder_node``: fixed-rate rows, streamed video, atomic episodes.

Owns ``EpisodeRecorder`` and ``VideoStream``, plain Python that tests drive
without a ROS graph. The node only feeds it the latest values and calls
``tick(now)`` from a timer.

- **Fixed rate, honest stamps.** Row ``k`` of an episode is due at
  ``t0 + k / fps``. ``tick(now)`` emits every row that is due, each from the
  latest values, so the row count always matches the elapsed time and the
  dataset's ``timestamp = frame_index / fps`` is never off by more than one
  period. A row emitted more than half a period after its due time is counted
  as ``late_rows`` (a stalled process shows up there, not as a silently
  compressed episode).
- **Encoding never blocks the data path.** ``tick`` hands each camera image to
  its ``VideoStream``: a queue consumed by a worker thread that resizes the
  frame and writes it into ffmpeg's stdin. The queue is bounded in bytes; when
  it is full the row gets a "repeat the previous frame" token instead
  (``dropped_frames.<cam>``), so video and data stay the same length and no
  callback ever waits for the encoder.
- **Counted, per episode:** late rows, dropped frames (encoder overflow),
  camera gaps (missing messages, from the image stamps), stale inputs (a value
  older than ``max_age_s`` when its row was taken). They go into the episode's
  row of ``meta/episodes`` as ``recorder/<name>`` columns and into
  ``reports``.
- **Atomic episodes.** ``stop()`` hands the episode to a finalizer thread (the
  caller returns at once); the finalizer waits for the encoders, renames the
  temporary mp4s into place and calls ``LeRobotDatasetWriter.save_episode``,
  which writes data first and ``meta/`` last. A process killed mid-episode
  leaves only a temporary file under ``.recording/``; every earlier episode
  stays valid and loadable.

Imports numpy, cv2 (resizing), imageio_ffmpeg and policies.dataset; never
rclpy, never torch, never sim.
"""
from __future__ import annotations

import math
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from onboard.errors import OnboardError
from policies.dataset import EncodedVideo, LeRobotDatasetWriter, RunningStats, _ffmpeg

RECORDING_DIR = ".recording"       # temporary mp4s of the open episode(s)
_REPEAT = object()                  # queue token: write the previous frame again
_END = object()


class VideoStream:
    """One camera of one episode: frames -> bounded queue -> worker thread -> ffmpeg -> temp mp4."""

    def __init__(self, path: Path, height: int, width: int, fps: float, *, preset: str = "ultrafast",
                 max_queue_bytes: int = 64 * 2**20, stats_stride: int = 8):
        self.path = Path(path)
        self.height, self.width, self.fps = int(height), int(width), float(fps)
        self.preset = preset
        self.max_queue_bytes = int(max_queue_bytes)
        self.stats_stride = int(stats_stride)
        self.stats = RunningStats()
        self.rows = 0               # frames queued (one per dataset row)
        self.dropped = 0            # rows that got a repeated frame because the queue was full
        self.backlog_max_bytes = 0
        self.error = ""
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._proc = None
        self._thread = threading.Thread(target=self._work, name=f"encoder:{self.path.name}", daemon=True)
        self._thread.start()

    # ---- producer side (the data path: never blocks) ---------------------------------
    def put(self, img: np.ndarray | None) -> None:
        """Queue one row's frame; ``None`` (no image yet) or a full queue repeats the previous frame."""
        self.rows += 1
        if img is None:
            self._q.put(_REPEAT)
            return
        with self._lock:
            full = self._queued_bytes + img.nbytes > self.max_queue_bytes
            if not full:
                self._queued_bytes += img.nbytes
                self.backlog_max_bytes = max(self.backlog_max_bytes, self._queued_bytes)
        if full:
            self.dropped += 1
            self._q.put(_REPEAT)
        else:
            self._q.put(img)

    # ---- the worker ----------------------------------------------------------------
    def _start_ffmpeg(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [_ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{self.width}x{self.height}", "-r", f"{self.fps:g}", "-i", "-", "-c:v", "libx264",
               "-preset", self.preset, "-crf", "18", "-pix_fmt", "yuv444p", "-threads", "1",
               "-f", "mp4", str(self.path)]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _work(self) -> None:
        import cv2
        last = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        try:
            self._proc = self._start_ffmpeg()
        except OSError as exc:
            self.error = f"cannot start ffmpeg: {exc}"
        while True:
            item = self._q.get()
            if item is _END:
                break
            if item is not _REPEAT:
                with self._lock:
                    self._queued_bytes -= item.nbytes
                if item.shape[:2] != (self.height, self.width):
                    item = cv2.resize(item, (self.width, self.height), interpolation=cv2.INTER_AREA)
                last = np.ascontiguousarray(item, dtype=np.uint8)
            s = self.stats_stride
            self.stats.add(last[::s, ::s].reshape(-1, 3).astype(np.float64) / 255.0)
            if self.error:
                continue
            try:
                self._proc.stdin.write(last.tobytes())
            except (BrokenPipeError, OSError) as exc:
                self.error = f"ffmpeg stopped accepting frames: {exc}"

    def finish(self) -> EncodedVideo:
        """Wait for the queue to drain and ffmpeg to finish; the temp mp4 is then complete."""
        self._q.put(_END)
        self._thread.join()
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            err = self._proc.stderr.read().decode(errors="replace")
            if self._proc.wait() != 0 and not self.error:
                self.error = f"ffmpeg failed: {err[-300:]}"
        if self.error:
            raise OnboardError(self.error, file=str(self.path), fix="check disk space and the image size")
        return EncodedVideo(self.path, self.rows, self.stats)

    def abort(self) -> None:
        self._q.put(_END)
        self._thread.join(timeout=5.0)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.path.unlink(missing_ok=True)


class EpisodeRecorder:
    """Latest values in, fixed-rate rows out, episodes finalized atomically on a worker thread.

    ``features``: the dataset's features (as for ``LeRobotDatasetWriter``); every
    non-video feature is fed by ``set_value(key, ...)``, every video feature by
    ``set_image(key, ...)``. ``instruction`` is each row's task text (``set_instruction``).
    """

    def __init__(self, root, fps: float, features: dict, *, robot_type: str = "franka_panda",
                 overwrite: bool = False, extra_info: dict | None = None, max_age_s: float = 0.25,
                 video_preset: str = "ultrafast", max_queue_bytes: int = 64 * 2**20,
                 instruction: str = "", on_saved=None):
        if not (math.isfinite(fps) and fps > 0):
            raise OnboardError(f"fps {fps!r} is not a positive number", field="fps", fix="e.g. fps: 10")
        self.root = Path(root)
        self.fps = float(fps)
        self.features = features
        self.video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
        self.value_keys = [k for k, f in features.items() if f["dtype"] != "video"]
        self.writer = LeRobotDatasetWriter(root, fps, features, robot_type=robot_type, overwrite=overwrite,
                                           streamed_videos=True, extra_info=extra_info)
        shutil.rmtree(self.root / RECORDING_DIR, ignore_errors=True)   # leftovers of a killed run
        self.max_age_s = float(max_age_s)
        self.video_preset = video_preset
        self.max_queue_bytes = int(max_queue_bytes)
        self.instruction = instruction
        self.on_saved = on_saved
        self.values: dict[str, tuple[np.ndarray, float]] = {}
        self.images: dict[str, tuple[np.ndarray, float]] = {}
        self.reports: list[dict] = []
        self.errors: list[str] = []
        self.recording = False
        self._episode_no = 0
        self._cam_stamp: dict[str, float] = {}
        self._cam_period: dict[str, float] = {}
        self._finalize_q: queue.Queue = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._finalizer = threading.Thread(target=self._finalize_loop, name="recorder-finalizer", daemon=True)
        self._finalizer.start()

    # ---- inputs (cheap: called from data callbacks) ----------------------------------
    def set_value(self, key: str, value, receive_s: float) -> None:
        self.values[key] = (np.asarray(value, dtype=np.float32), float(receive_s))

    def set_instruction(self, text: str) -> None:
        self.instruction = str(text)

    def set_image(self, key: str, img: np.ndarray, receive_s: float, stamp_s: float | None = None) -> None:
        self.images[key] = (img, float(receive_s))
        stamp = float(receive_s if stamp_s is None else stamp_s)
        prev = self._cam_stamp.get(key)
        self._cam_stamp[key] = stamp
        if prev is None or stamp <= prev:
            return
        dt = stamp - prev
        period = self._cam_period.get(key)
        if period is None:
            self._cam_period[key] = dt
            return
        if self.recording and dt > 1.8 * period:
            missed = int(round(dt / period)) - 1
            self._report[f"camera_gaps.{_short(key)}"] += max(missed, 1)
        else:           # learn the period from the regular intervals only
            self._cam_period[key] = 0.9 * period + 0.1 * dt

    def missing_inputs(self) -> list[str]:
        return [k for k in self.value_keys if k not in self.values] + \
               [k for k in self.video_keys if k not in self.images]

    # ---- episodes -------------------------------------------------------------------
    def start(self, now_s: float) -> str:
        """Open an episode at ``now_s``; raises OnboardError if one is open or inputs are missing."""
        if self.recording:
            raise OnboardError("an episode is already being recorded", field="start",
                               fix="stop or discard it first")
        missing = self.missing_inputs()
        if missing:
            raise OnboardError(f"no data yet for {missing}", field="start",
                               fix="start the episode once every input topic is publishing")
        self._episode_no += 1
        self._t0 = float(now_s)
        self._next_row = 0
        self._rows: list[tuple[dict, str]] = []
        tmp = self.root / RECORDING_DIR / f"attempt-{self._episode_no:06d}"
        self._streams = {}
        for key in self.video_keys:
            h, w, _ = self.features[key]["shape"]
            self._streams[key] = VideoStream(tmp / f"{_short(key)}.mp4", h, w, self.fps, preset=self.video_preset,
                                             max_queue_bytes=self.max_queue_bytes)
        self._report = {"late_rows": 0, "max_lateness_ms": 0.0}
        for key in self.video_keys:
            self._report[f"dropped_frames.{_short(key)}"] = 0
            self._report[f"camera_gaps.{_short(key)}"] = 0
        for key in self.value_keys + self.video_keys:
            self._report[f"stale_rows.{_short(key)}"] = 0
        self.recording = True
        return f"recording attempt {self._episode_no} at {self.fps:g} fps"

    def tick(self, now_s: float) -> int:
        """Emit every row due by ``now_s``; returns how many."""
        if not self.recording:
            return 0
        due = int(math.floor((now_s - self._t0) * self.fps + 1e-9))
        n = 0
        while self._next_row <= due:
            lateness = now_s - (self._t0 + self._next_row / self.fps)
            if lateness > 0.5 / self.fps:
                self._report["late_rows"] += 1
            self._report["max_lateness_ms"] = max(self._report["max_lateness_ms"], 1e3 * lateness)
            self._emit_row(now_s)
            self._next_row += 1
            n += 1
        return n

    def _emit_row(self, now_s: float) -> None:
        row = {}
        for key in self.value_keys:
            value, t = self.values[key]
            row[key] = value
            if now_s - t > self.max_age_s:
                self._report[f"stale_rows.{_short(key)}"] += 1
        for key in self.video_keys:
            img, t = self.images[key]
            if now_s - t > self.max_age_s:
                self._report[f"stale_rows.{_short(key)}"] += 1
            self._streams[key].put(img)
        self._rows.append((row, self.instruction))

    def stop(self, now_s: float) -> dict:
        """Close the episode (rows due by ``now_s`` included) and queue it for saving; returns at once."""
        if not self.recording:
            raise OnboardError("no episode is being recorded", field="stop", fix="start one first")
        self.tick(now_s)
        self.recording = False
        report = dict(self._report)
        for key, st in self._streams.items():
            report[f"dropped_frames.{_short(key)}"] = st.dropped
        report["frames"] = len(self._rows)
        report["duration_s"] = len(self._rows) / self.fps
        if not self._rows:
            for st in self._streams.values():
                st.abort()
            raise OnboardError("the episode has no rows", field="stop", fix="record for at least one period")
        with self._pending_lock:
            self._pending += 1
        self._finalize_q.put((self._rows, self._streams, report))
        self._rows, self._streams = [], {}
        return report

    def discard(self) -> int:
        """Drop the open episode; returns the number of rows thrown away."""
        if not self.recording:
            raise OnboardError("no episode is being recorded", field="discard", fix="start one first")
        self.recording = False
        n = len(self._rows)
        for st in self._streams.values():
            st.abort()
        self._rows, self._streams = [], {}
        return n

    @property
    def open_rows(self) -> int:
        return len(self._rows) if self.recording else 0

    @property
    def pending(self) -> int:
        """Episodes stopped but not yet written."""
        with self._pending_lock:
            return self._pending

    # ---- the finalizer thread ------------------------------------------------------------
    def _finalize_loop(self) -> None:
        while True:
            item = self._finalize_q.get()
            if item is _END:
                return
            rows, streams, report = item
            try:
                videos = {key: st.finish() for key, st in streams.items()}
                for frame, task in rows:
                    self.writer.add_frame(frame, task=task)
                extra = {f"recorder/{k}": v for k, v in report.items()}
                ep = self.writer.save_episode(videos=videos, extra=extra)
                report["episode_index"] = ep
                self.reports.append(report)
                if self.on_saved is not None:
                    self.on_saved(report)
            except Exception as exc:  # noqa: BLE001 - a failed episode must not stop later ones
                self.writer.discard_episode()
                for st in streams.values():
                    st.path.unlink(missing_ok=True)
                self.errors.append(f"episode not saved: {exc}")
            finally:
                with self._pending_lock:
                    self._pending -= 1

    def flush(self, timeout_s: float = 120.0) -> bool:
        """Wait until every stopped episode is written; False on timeout."""
        import time
        end = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < end:
            time.sleep(0.02)
        return self.pending == 0

    def close(self, timeout_s: float = 120.0) -> None:
        """Discard an open episode, finish the stopped ones, write the final meta files."""
        if self.recording:
            self.discard()
        self.flush(timeout_s)
        self._finalize_q.put(_END)
        self._finalizer.join(timeout=5.0)
        self.writer.close()
        shutil.rmtree(self.root / RECORDING_DIR, ignore_errors=True)


def _short(key: str) -> str:
    """``observation.images.front`` -> ``front``; ``observation.joint_pos`` -> ``joint_pos``."""
    for prefix in ("observation.images.", "observation."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key
