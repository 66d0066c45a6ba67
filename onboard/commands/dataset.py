"""``onboard dataset info|plot|video|merge|split|validate``: tools for LeRobot v3 datasets.

``validate`` exits 1 when it finds corruption (each problem printed with file
and field), 0 when the dataset is clean (warnings allowed). An unreadable root
is bad input (exit 2). The work lives in ``policies.dataset_tools``.
"""
from __future__ import annotations

HELP = "inspect, plot, export video, merge, split and validate LeRobot v3 datasets"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("info", help="episodes, frames, features, tasks, recorder loss counts")
    p.add_argument("dataset")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("plot", help="joint positions and actions of episodes -> PNG")
    p.add_argument("dataset")
    p.add_argument("--episodes", default="0", help="e.g. 0,2,5-7 (default: 0)")
    p.add_argument("--out", default=None, help="PNG path (default: <dataset>/plots/episodes.png)")
    p = sub.add_parser("video", help="copy one episode's camera video to a file")
    p.add_argument("dataset")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--camera", default=None, help="camera name (default: the first)")
    p.add_argument("--out", required=True, help="mp4 path")
    p = sub.add_parser("merge", help="merge datasets with the same features into a new one")
    p.add_argument("datasets", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("split", help="write a subset of episodes as a new dataset")
    p.add_argument("dataset")
    p.add_argument("--episodes", required=True, help="e.g. 0,2,5-7 or :40 or 40:")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("validate", help="check layout, stats, timestamps, videos; exit 1 on corruption")
    p.add_argument("dataset")
    p.add_argument("--no-videos", action="store_true", help="skip the video frame counts (faster)")


def run(args) -> int:
    import json
    from pathlib import Path

    from onboard.errors import OnboardError
    from policies import dataset_tools as tools
    from policies.dataset import load_dataset

    if args.action == "validate":
        root = Path(args.dataset)
        if not root.is_dir():
            raise OnboardError("not a directory", file=str(root), fix="pass the dataset root (holds meta/)")
        problems = tools.validate_dataset(root, check_videos=not args.no_videos)
        for p in problems:
            print(p)
        errors = [p for p in problems if p.severity == "error"]
        print(f"validate {root}: {'INVALID' if errors else 'ok'} ({len(errors)} errors, "
              f"{len(problems) - len(errors)} warnings)")
        return 1 if errors else 0
    if args.action == "info":
        s = tools.dataset_summary(args.dataset)
        if args.json:
            print(json.dumps(s, indent=2))
            return 0
        print(f"{s['root']}: {s['episodes']} episodes, {s['frames']} frames ({s['duration_s']:.1f} s at "
              f"{s['fps']:g} fps), robot {s['robot_type']}, {s['codebase_version']}")
        el = s["episode_length"]
        print(f"  episode length: min {el['min']}, mean {el['mean']:.1f}, max {el['max']} frames")
        print(f"  tasks: {s['tasks']}")
        for k, f in s["features"].items():
            print(f"  {k}: {f['dtype']} {f['shape']}")
        if s["recorder_totals"]:
            print("  recorder totals: " + ", ".join(f"{k} {v:g}" for k, v in sorted(s["recorder_totals"].items())))
        return 0
    if args.action == "plot":
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        ds = load_dataset(args.dataset)
        eps = tools.parse_episode_list(args.episodes, ds.num_episodes)
        out = Path(args.out or Path(args.dataset) / "plots" / "episodes.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        q, a = ds.column("observation.joint_pos"), ds.column("action")
        for ep in eps:
            sl = ds.episode_slice(ep)
            t = ds.column("timestamp")[sl]
            for j in range(q.shape[1]):
                axes[0].plot(t, q[sl, j], lw=1, label=f"ep{ep} q{j + 1}" if len(eps) == 1 else None)
                axes[1].plot(t, a[sl, j], lw=1)
        axes[0].set_ylabel("observation.joint_pos [rad]")
        axes[1].set_ylabel("action [rad]")
        axes[1].set_xlabel("time [s]")
        if len(eps) == 1:
            axes[0].legend(fontsize=6, ncol=4)
        fig.suptitle(f"{args.dataset}: episodes {eps}")
        fig.tight_layout()
        tmp = out.with_name(f".{out.name}.tmp.png")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(out)
        print(f"wrote {out}")
        return 0
    if args.action == "video":
        import shutil
        ds = load_dataset(args.dataset)
        keys = [k for k, f in ds.features.items() if f["dtype"] == "video"]
        if not keys:
            raise OnboardError("the dataset has no video features", file=args.dataset, field="features",
                               fix="record with cameras")
        key = f"observation.images.{args.camera}" if args.camera else keys[0]
        if key not in keys:
            raise OnboardError(f"no camera {args.camera!r}", field="--camera",
                               fix=f"use one of {[k.split('.')[-1] for k in keys]}")
        if not 0 <= args.episode < ds.num_episodes:
            raise OnboardError(f"episode {args.episode} does not exist", field="--episode",
                               fix=f"use 0..{ds.num_episodes - 1}")
        e = ds.episodes[args.episode]
        src = Path(args.dataset) / ds.info["video_path"].format(
            video_key=key, chunk_index=e[f"videos/{key}/chunk_index"], file_index=e[f"videos/{key}/file_index"])
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(out)
        print(f"wrote {out} (episode {args.episode}, {key}, {e['length']} frames at {ds.fps:g} fps)")
        return 0
    if args.action == "merge":
        sources = []
        for root in args.datasets:
            ds = load_dataset(root)
            sources.append((ds, list(range(ds.num_episodes))))
        s = tools.write_episodes(sources, args.out, overwrite=args.overwrite)
        print(f"merged {len(sources)} datasets -> {args.out}: {s['episodes']} episodes, {s['frames']} frames")
        return 0
    if args.action == "split":
        ds = load_dataset(args.dataset)
        eps = tools.parse_episode_list(args.episodes, ds.num_episodes)
        if not eps:
            raise OnboardError("no episodes selected", field="--episodes", fix="select at least one episode")
        s = tools.write_episodes([(ds, eps)], args.out, overwrite=args.overwrite)
        print(f"split {len(eps)} episodes -> {args.out}: {s['episodes']} episodes, {s['frames']} frames")
        return 0
    raise OnboardError(f"unknown action {args.action!r}", field="ACTION", fix="see onboard dataset --help")
