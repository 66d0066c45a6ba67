"""``onboard export CHECKPOINT --out policy.onnx``: the self-describing ONNX artifact.

Parity with torch is checked at batch 1 and 2 before anything is written; a
failure writes nothing and exits 2.
"""
from __future__ import annotations

HELP = "Export a checkpoint to policy.onnx (+ .onnx.data) with the policy contract embedded; parity-checked."


def add_arguments(p):
    p.add_argument("checkpoint", help="checkpoint.pt written by `onboard train`")
    p.add_argument("--out", default="policy.onnx", help="artifact path (default: policy.onnx)")
    p.add_argument("--robot", default=None, help="robot profile name or YAML (default: the dataset's robot)")
    p.add_argument("--safety", default=None,
                   help="safety envelope YAML to record (default: config/safety/<robot>.yaml when present)")


def run(args) -> int:
    from policies.export import contract_summary, export_checkpoint

    res = export_checkpoint(args.checkpoint, args.out, robot=args.robot, safety=args.safety)
    print(f"wrote {res.onnx_path} and {res.data_path.name} (parity max |diff| {res.parity_max_abs_diff:.2e} "
          f"at batch 1 and 2, {res.seconds:.1f} s)")
    print("contract: " + contract_summary(res.contract))
    return 0
