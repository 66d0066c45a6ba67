"""``onboard export CHECKPOINT --out policy.onnx``: the self-describing ONNX artifact.

Parity with torch is checked at batch 1 and 2 before anything is written; a
failure writes nothing and exits 2. A PPO checkpoint (``onboard train --policy
ppo``) is recognised and exported as the quadrotor MLP artifact
(``policies.export_mlp``: graph ``policy``, residual baseline in the contract).
A VLA checkpoint (``onboard train --policy vla``) becomes an artifact folder of
three graphs (``policies.vla.export``): ``--out DIR`` (or ``DIR/policy.onnx``).
A G1 legs checkpoint (``onboard train --policy humanoid``) is exported by
``policies.humanoid_ppo.export_humanoid`` (e.g. to re-export an older artifact).
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
    from policies.export_mlp import export_ppo_checkpoint, is_ppo_checkpoint

    from policies.vla.train import is_vla_checkpoint
    if is_vla_checkpoint(args.checkpoint):
        return _run_vla(args)
    from onboard.commands._residual import is_residual_checkpoint, run_export
    if is_residual_checkpoint(args.checkpoint):
        return run_export(args)
    from policies.humanoid_ppo import export_humanoid, is_humanoid_checkpoint
    if is_humanoid_checkpoint(args.checkpoint):          # G1 legs (onboard train --policy humanoid)
        c = export_humanoid(args.checkpoint, args.out, safety=args.safety)
        print(f"wrote {args.out} (G1 legs PPO actor, parity-checked against torch; gait period "
              f"{c.extra['gait_period_s']} s, history {c.extra['history']})")
        return 0
    if is_ppo_checkpoint(args.checkpoint):
        import json
        import time
        t0 = time.perf_counter()
        contract = export_ppo_checkpoint(args.checkpoint, args.out, safety=args.safety)
        print(f"wrote {args.out} ({contract.policy_kind} MLP, parity-checked against torch, "
              f"{time.perf_counter() - t0:.1f} s)")
        c = contract
        print("contract: " + json.dumps({"robot": c.robot["name"], "policy_kind": c.policy_kind, "obs_keys": c.obs_keys,
                                         "obs_dim": c.obs_dim, "action": c.action["names"],
                                         "control_rate_hz": c.control_rate_hz,
                                         "residual_scale": (c.extra.get("residual") or {}).get("scale"),
                                         "safety_envelope": c.safety_envelope.get("path")}))
        return 0

    res = export_checkpoint(args.checkpoint, args.out, robot=args.robot, safety=args.safety)
    print(f"wrote {res.onnx_path} and {res.data_path.name} (parity max |diff| {res.parity_max_abs_diff:.2e} "
          f"at batch 1 and 2, {res.seconds:.1f} s)")
    print("contract: " + contract_summary(res.contract))
    return 0


def _run_vla(args) -> int:
    from policies.vla.export import contract_summary, export_checkpoint

    res = export_checkpoint(args.checkpoint, args.out, robot=args.robot, safety=args.safety)
    print(f"wrote {res.out_dir}/ (policy.onnx = action head, text_encoder.onnx, obs_encoder.onnx; parity max "
          f"|diff| " + ", ".join(f"{k} {v:.1e}" for k, v in res.parity.items()) + f"; {res.seconds:.1f} s)")
    print("contract: " + contract_summary(res.contract))
    return 0
