"""Runtime vs torch eager on the same diffusion policy weights: ms per action chunk at batch 1.

One chunk = the numpy DDIM loop (policies.sampler) over K denoiser calls; only
the denoiser differs: ONNX Runtime (1 and 2 intra-op threads) or the torch
module in eager mode (inference_mode, 1 and 2 threads); the ratio is best
torch over best ORT. The model is the default
`onboard train` size; pass --checkpoint to time a trained one (weights do not
change the cost). Targets (DESIGN §8): ORT >= 3x faster than torch eager at
batch 1, a few-step chunk <= 5 ms on 2 cores.

    .venv/bin/python bench/bench_runtime.py [--checkpoint runs/demo/train/checkpoint.pt]
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
from policies.artifact import open_session  # noqa: E402
from policies.diffusion.schedule import alphas_cumprod_for  # noqa: E402
from policies.diffusion.train import TrainConfig, build_model, load_checkpoint, model_from_checkpoint  # noqa: E402
from policies.export import FEW_STEPS, export_onnx  # noqa: E402
from policies.sampler import ddim_sample  # noqa: E402


def time_interleaved(denoisers: dict, noise, cond, ac, k, repeats) -> dict:
    """Median and min ms per chunk for each denoiser, run round-robin so that all of them see the
    same background load (the 2 cores here are shared with other jobs)."""
    for fn in denoisers.values():
        for _ in range(2):
            ddim_sample(fn, noise, cond, ac, k)
    times = {name: [] for name in denoisers}
    for _ in range(repeats):
        for name, fn in denoisers.items():
            t0 = time.perf_counter()
            ddim_sample(fn, noise, cond, ac, k)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (float(np.median(v)), float(np.min(v))) for name, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--obs-dim", type=int, default=20, help="obs features per frame (without --checkpoint)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(ckpt)
        tp = int(ckpt["config"]["pred_horizon"])
    else:
        cfg = TrainConfig()
        torch.manual_seed(0)
        model = build_model(cfg, action_dim=8, obs_dim=args.obs_dim).eval()
        tp = cfg.pred_horizon
    da, cond_dim = model.cfg.action_dim, model.cfg.obs_cond_dim
    n_params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((1, tp, da)).astype(np.float32)
    cond = rng.uniform(-1, 1, (1, cond_dim)).astype(np.float32)
    ac = alphas_cumprod_for(100)

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "policy.onnx"
        export_onnx(model, path, "{}", tp, da, cond_dim)
        sessions = {n: open_session(path, intra_op_num_threads=n) for n in (1, 2)}

        def ort_denoiser(sess):
            return lambda x, t, c: sess.run(["eps"], {"sample": x, "timestep": t, "obs_cond": c})[0]

        def torch_denoiser(x, t, c):
            with torch.inference_mode():
                return model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(c)).numpy()

        def torch_denoiser(threads):
            def call(x, t, c):
                torch.set_num_threads(threads)
                with torch.inference_mode():
                    return model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(c)).numpy()
            return call

        denoisers = {"ort1": ort_denoiser(sessions[1]), "ort2": ort_denoiser(sessions[2]),
                     "torch1": torch_denoiser(1), "torch2": torch_denoiser(2)}
        rows = []
        for k in (FEW_STEPS, 10, 100):
            reps = args.repeats if k <= 10 else max(5, args.repeats // 10)
            m = time_interleaved(denoisers, noise, cond, ac, k, reps)
            best_ort = min(m["ort1"][0], m["ort2"][0])
            best_torch = min(m["torch1"][0], m["torch2"][0])
            rows.append({"sampler steps": k, "ORT 1 thread ms (median/min)": f"{m['ort1'][0]:.2f} / {m['ort1'][1]:.2f}",
                         "ORT 2 threads ms": f"{m['ort2'][0]:.2f} / {m['ort2'][1]:.2f}",
                         "torch eager 1 thread ms": f"{m['torch1'][0]:.2f} / {m['torch1'][1]:.2f}",
                         "torch eager 2 threads ms": f"{m['torch2'][0]:.2f} / {m['torch2'][1]:.2f}",
                         "speedup (best torch / best ORT, medians)": best_torch / best_ort})
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    notes = (f"Model: 1-D U-Net down_dims {tuple(model.cfg.down_dims)}, kernel {model.cfg.kernel_size}, "
             f"{n_params / 1e6:.2f} M parameters; chunk ({tp}, {da}), obs_cond {cond_dim}; batch 1; median and min of "
             f"{args.repeats} chunks (100-step rows: fewer), run round-robin. Same weights, same numpy DDIM loop; only the "
             f"denoiser differs. Load average (1/5/15 min) during the run: {load}. Targets: speedup >= 3x, few-step chunk <= 5 ms.")
    record("Policy runtime: ONNX Runtime vs torch eager (diffusion chunk, batch 1)", rows,
           notes=notes, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
