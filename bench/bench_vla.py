"""VLA action chunk latency: ONNX Runtime (the three exported graphs) vs torch eager, same weights, batch 1.

One chunk = the observation encoder on two camera images + state (with the
cached instruction tokens) followed by K flow-matching Euler steps of the
action head. The ONNX path is exactly what the robot runs
(``policies.vla.runtime.VLARuntime.predict_chunk``: numpy Euler over ORT
calls, 2 intra-op threads); torch eager runs ``VLAPolicy.obs`` + ``sample``
under ``inference_mode`` with 2 threads. The text encoder runs once per
instruction on the robot, so it is timed separately and left out of the chunk.

The model is the demo configuration (``onboard train --policy vla`` defaults)
at the requested image size (default 128 px, the issue's budget: one chunk
<= 30 ms on 2 CPU cores), built by one training step on synthetic frames and
exported with ``onboard export`` (weights do not change the cost). Timings are
interleaved round-robin so both paths see the same background load.

    .venv/bin/python bench/bench_vla.py [--image-size 128] [--repeats 40]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.record import record  # noqa: E402

INSTRUCTION = "pick up the red cube and place it on the pad"
CORPUS = [INSTRUCTION, "push the blue cube toward the robot", "put the green block on the white pad"]


def synthetic_data(size: int, frames: int = 16):
    from onboard.spec import load_robot
    from policies.vla.train import VLAData

    panda = load_robot("franka_panda")
    rng = np.random.default_rng(0)
    q = np.asarray(panda.default_pose, np.float32) + rng.normal(0, 0.05, (frames, 7)).astype(np.float32)
    spec = [{"name": "joint_pos", "shape": [7], "units": "rad"}, {"name": "gripper_width", "shape": [1], "units": "m"},
            {"name": "ee_pos", "shape": [3], "units": "m"}]
    return VLAData(images={c: rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for c in ("front", "wrist")},
                   state={"joint_pos": q, "gripper_width": np.full((frames, 1), 0.04, np.float32),
                          "ee_pos": np.tile(np.array([0.4, 0.0, 0.3], np.float32), (frames, 1))},
                   state_spec=spec, actions=np.concatenate([q, np.full((frames, 1), 0.04, np.float32)], 1),
                   episode_index=np.zeros(frames, np.int64), task_index=np.arange(frames) % len(CORPUS),
                   tasks=CORPUS, corpus=CORPUS, action_names=list(panda.action_names), robot="franka_panda")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)

    from policies.vla.export import export_checkpoint
    from policies.vla.runtime import VLARuntime
    from policies.vla.train import VLATrainConfig, load_checkpoint, model_from_checkpoint, train

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="bench_vla_"))
    data = synthetic_data(args.image_size)
    cfg = VLATrainConfig(steps=1, batch_size=2, checkpoint_every_s=1e9, num_threads=2)
    train(cfg, data, tmp / "train", progress=False)
    ckpt = load_checkpoint(tmp / "train" / "checkpoint.pt")
    exp = export_checkpoint(tmp / "train" / "checkpoint.pt", tmp / "artifact")
    model = model_from_checkpoint(ckpt)
    counts = ckpt["num_parameters"]

    rt = VLARuntime(exp.entry)
    t0 = time.perf_counter()
    rt.set_instruction(INSTRUCTION)
    text_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(1)
    s = args.image_size
    obs = {"joint_pos": data.state["joint_pos"][0], "gripper_width": data.state["gripper_width"][0],
           "ee_pos": data.state["ee_pos"][0], "image.front": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
           "image.wrist": rng.integers(0, 256, (s, s, 3), dtype=np.uint8)}

    # torch eager inputs, prepared once (the same tensors the graphs get)
    tok_ids, tok_mask = rt.tokenizer.encode(INSTRUCTION, rt.max_len)
    tids = torch.from_numpy(tok_ids[None]).long()
    tmask = torch.from_numpy(tok_mask[None].astype(np.int64))
    images = [torch.from_numpy(obs[f"image.{c}"][None].copy()) for c in rt.cameras]
    state = torch.from_numpy(rt.state_vector(obs)[None])
    with torch.inference_mode():
        lang = model.text(tids, tmask)

    def torch_chunk(k):
        with torch.inference_mode():
            ctx = model.obs(lang, tmask, images, state)
            noise = torch.randn(1, model.cfg.pred_horizon, model.cfg.action_dim)
            return model.sample(ctx, noise, k)

    rows = []
    few = int(rt.contract.sampler.get("few_steps", 3))
    for k in (int(rt.contract.sampler.get("default_steps", 10)), few):
        rt.num_steps = k
        paths = {"onnxruntime": lambda: rt.predict_chunk(obs), "torch eager": lambda: torch_chunk(k)}
        for fn in paths.values():
            for _ in range(3):
                fn()
        times = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, fn in paths.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) * 1e3)
        med = {n: float(np.median(v)) for n, v in times.items()}
        for name, v in times.items():
            rows.append({"flow steps": k, "path": name, "chunk ms p50": med[name],
                         "chunk ms p99": float(np.percentile(v, 99)),
                         "speedup vs torch": med["torch eager"] / med[name],
                         "budget 30 ms": ("met" if np.percentile(v, 99) <= 30.0 else "missed")
                         if name == "onnxruntime" else ""})
    notes = (f"Demo-configuration VLA ({counts['total'] / 1e6:.2f} M parameters: text {counts['text'] / 1e6:.2f} M, "
             f"observation {counts['obs'] / 1e6:.2f} M, head {counts['head'] / 1e6:.2f} M), two {s}x{s} cameras, "
             f"pred_horizon {rt.contract.pred_horizon}, batch 1, 2 threads each; {args.repeats} interleaved "
             f"repeats. Text encoder (once per instruction, cached): {text_ms:.1f} ms. Export parity (max abs "
             f"diff per graph): " + ", ".join(f"{k} {v:.1e}" for k, v in exp.parity.items()) + ".")
    record(f"VLA action chunk: ONNX Runtime vs torch eager ({s} px, 2 cameras)", rows,
           command=f"python bench/bench_vla.py --image-size {s} --repeats {args.repeats}", notes=notes,
           write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
