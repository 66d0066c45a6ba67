"""PPO with an asymmetric critic and observation history for the G1 legs (stand / push recovery, walk).

A thin layer over ``policies.ppo`` (the CleanRL-style quadrotor trainer): it
reuses ``mlp``, ``RunningMeanStd``, ``Rollout`` (GAE) and ``ppo_update``
unchanged. The asymmetry is carried by the rollout row: each stored row is
``[actor_obs_std | critic_obs_std]``; ``AsymmetricActorCritic.dist`` reads the
first part (the history of 47-D frames the robot really has), ``value`` the
second (the noise-free frame plus privileged figures only the simulator
knows: base velocity, friction, masses, gains, pushes, delays). So the PPO
algorithm stays one piece of code for both robots.

Reads top to bottom: ``HumanoidPPOConfig``, ``AsymmetricActorCritic``, ``train``,
checkpoint I/O, ``export_humanoid`` (the artifact, same contract schema and
graph name ``policy`` as ``policies.export_mlp``), ``evaluate`` (survival and
velocity tracking, through ``policies.runtime.PolicyRuntime`` and the safety
filter when given an artifact), and the command line.

Imports torch, numpy, sim (the task env) and policies. Never imported by the runtime.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from onboard.errors import OnboardError
from policies.ppo import Rollout, RunningMeanStd, checkpoint_has, mlp, ppo_update
from sim.humanoid_env import (ACTION_CLIP, ACTION_SCALE, FRAME_DIM, GAIT_LIFT_PATTERN, GAIT_PERIOD_S, JOINT_MIRROR,
                              KNEES, OBS_SPEC, PRIVILEGED_SPEC, HumanoidVecEnv, ShardedHumanoidEnv, actor_mirror,
                              check_gait_period, clock_rate, gait_period_of_contract, history_layout,
                              physics_substeps)

EXPORT_ACTION_BOUND = ACTION_CLIP   # |a| <= 10: PD target within 2.5 rad of the default pose, the training env's own
#                                     bound (sim.humanoid_env.ACTION_CLIP); the safety filter clamps to the joint limits.
#                                     Until session 10 it was 4 (1 rad), tighter than training: 9 points of survival lost


@dataclass
class HumanoidPPOConfig:
    task: str = "stand"
    dr: bool = True
    dr_config: str = ""                  # training DR YAML (default: config/randomization/g1_12dof_<task>.yaml)
    history: int = 5                     # actor frames (47-D each)
    num_envs: int = 64
    num_steps: int = 24                  # rollout length per env per update (legged_gym)
    total_steps: int = 2_000_000
    learning_rate: float = 2e-4
    desired_kl: float = 0.01             # > 0: adapt the learning rate to this KL per update (rsl_rl's schedule)
    anneal_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 5
    num_minibatches: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.005
    vf_coef: float = 1.0
    max_grad_norm: float = 1.0
    hidden: tuple = (256, 128)
    critic_hidden: tuple = (256, 128)
    init_log_std: float = -1.0           # std 0.37 on the action (0.09 rad on the target)
    seed: int = 0
    torch_threads: int = 1               # torch threads while the robots step (rollout inference)
    update_threads: int = 0              # torch threads for the PPO update and estimator fit (0: as many as the
    #                                      workers, which idle meanwhile)
    log_every: int = 10                  # updates
    max_wall_s: float = 0.0              # > 0: stop (and keep the model) after this much training time
    resume: str = ""                     # checkpoint to continue from (weights and statistics)
    stream_limits: bool = True           # train inside the safety filter's joint-stream limits (see StreamLimits)
    step_in_place: bool = False          # stand: gait rewards at zero command (march in place, step into pushes)
    push_curriculum: bool = False        # grow the push size from push_start to the YAML's maximum
    push_start: float = 0.3              # first push scale of the curriculum (x the YAML's max_vel_m_s)
    push_step: float = 0.1               # scale change per decision
    push_window: int = 32                # finished episodes per curriculum decision
    push_up_fall_rate: float = 0.15      # raise the scale when fewer episodes than this fell
    push_down_fall_rate: float = 0.5     # lower it when more fell
    gait_reference: float = 0.0          # > 0: the actor adds a stepping-in-place reference of this amplitude [rad]
    symmetry: bool = False               # left/right mirror-equivariant actor (by construction)
    workers: int = 1                     # > 1: step the robots in this many processes (one per core)
    reference_reward: bool = False       # reward the knees for following the gait reference (env knee_reference)
    force_step: bool = False             # knees never flex less than the gait reference (the step cannot be undone)
    capture_reward: float = 0.0          # > 0: weight of the env's capture_step term (touch down at the capture point)
    estimator: bool = False              # learn the base velocity from the history (supervised) and feed it to the actor
    placement_gain: float = 0.0          # > 0: the gait reference moves the feet by this [rad per m/s] of estimated velocity
    early_touchdown: bool = False        # with force_step: force only the rising half of each swing (land early)
    side_step: float = 0.0               # > 0: V0 [m/s]; a body moving sideways faster than V0 lifts the leg on that side
    gantry_starts: float = 0.0           # fraction of episodes that start on the gantry (sim.humanoid_env.GANTRY_S), 0 = off
    physics_dt_s: float = 0.002          # training sim's physics + PD step; evaluation always runs the 2 ms reference
    clock_action: bool = False           # the policy paces the gait clock (a 13th action; not exportable yet)
    async_rollout: bool = False          # robots step in a worker process during the update (policy lag 1)
    gait_period_s: float = GAIT_PERIOD_S  # the gait clock's period (one left + one right step); in the contract
    final_std: float = 0.0               # > 0: over the last std_anneal_frac of training, cap the noise down to this
    std_anneal_frac: float = 0.3         # the share of training (of max_wall_s, else of total_steps) that anneals
    average_frac: float = 0.0            # > 0: the kept actor is the average of its weights over the last F of training
    average_every: int = 10              # updates between the averaged snapshots

    def validate(self) -> None:
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise OnboardError("num_envs * num_steps must divide into num_minibatches", field="num_minibatches",
                               fix="pick a divisor of num_envs * num_steps")
        if self.async_rollout and self.workers > 1:
            raise OnboardError(f"--async-rollout already uses two processes; workers {self.workers} would add more",
                               field="workers", fix="drop --workers (or pass --workers 1) with --async-rollout")
        if self.workers < 1 or self.num_envs % self.workers:
            raise OnboardError(f"workers {self.workers} must be >= 1 and divide num_envs {self.num_envs}",
                               field="workers", fix="e.g. --workers 2 with --num-envs 64")
        if not 0.0 <= self.capture_reward <= 100.0:
            raise OnboardError(f"capture_reward {self.capture_reward} outside [0, 100]", field="capture_reward",
                               fix="pass --capture-reward between 0 (off) and about 10")
        if not 0.0 <= self.ent_coef < 1.0:
            raise OnboardError(f"ent_coef {self.ent_coef} outside [0, 1)", field="ent_coef",
                               fix="pass --ent-coef between 0 and about 0.01")
        if not 1 <= self.update_epochs <= 50:
            raise OnboardError(f"update_epochs {self.update_epochs} outside [1, 50]", field="update_epochs",
                               fix="pass --update-epochs between 1 and about 10 (default 5)")
        if self.history < 1:
            raise OnboardError(f"history {self.history} < 1", field="history", fix="use 1 or more frames")
        check_gait_period(self.gait_period_s)
        if not 0.0 <= self.gait_reference <= 0.5:
            raise OnboardError(f"gait_reference {self.gait_reference} rad outside [0, 0.5]", field="gait_reference",
                               fix="pass --gait-reference between 0 (off) and 0.5 rad (about 0.3 lifts the foot 6 cm)")
        if self.early_touchdown and not self.force_step:
            raise OnboardError("--early-touchdown relaxes --force-step, which is off", field="early_touchdown",
                               fix="add --force-step --gait-reference 0.3")
        if not 0.0 <= self.side_step <= 1.0:
            raise OnboardError(f"side_step {self.side_step} m/s outside [0, 1]", field="side_step",
                               fix="pass --side-step between 0 (off) and about 0.3 m/s")
        if self.side_step > 0 and (not self.estimator or self.gait_reference <= 0):
            raise OnboardError("--side-step needs the velocity estimator and a gait reference", field="side_step",
                               fix="add --estimator --gait-reference 0.3")
        if (self.reference_reward or self.force_step) and self.gait_reference <= 0:
            raise OnboardError("--reference-reward / --force-step need a gait reference", field="gait_reference",
                               fix="add --gait-reference 0.3")
        if not 0.0 <= self.gantry_starts <= 1.0:
            raise OnboardError(f"gantry_starts {self.gantry_starts} outside [0, 1]", field="gantry_starts",
                               fix="pass --gantry-starts as a fraction of episodes, e.g. 0.3")
        physics_substeps(self.physics_dt_s)
        if not 0.0 <= self.placement_gain <= 1.0:
            raise OnboardError(f"placement_gain {self.placement_gain} outside [0, 1] rad per m/s",
                               field="placement_gain", fix="pass --placement-gain between 0 (off) and about 0.4")
        if not 0.0 <= self.final_std < 1.0:
            raise OnboardError(f"final_std {self.final_std} outside [0, 1)", field="final_std",
                               fix="pass --final-std between 0 (off) and the starting noise, about 0.37")
        if not 0.0 < self.std_anneal_frac <= 1.0:
            raise OnboardError(f"std_anneal_frac {self.std_anneal_frac} outside (0, 1]", field="std_anneal_frac",
                               fix="pass --std-anneal-frac as a share of training, e.g. 0.3")
        if not 0.0 <= self.average_frac < 1.0:
            raise OnboardError(f"average_frac {self.average_frac} outside [0, 1)", field="average_frac",
                               fix="pass --average-frac as a share of training, e.g. 0.2 (0: off)")
        if self.average_every < 1:
            raise OnboardError(f"average_every {self.average_every} is not a positive number of updates",
                               field="average_every", fix="pass --average-every 10")
        if self.placement_gain > 0 and (not self.estimator or self.gait_reference <= 0):
            raise OnboardError("--placement-gain needs the velocity estimator and a gait reference",
                               field="placement_gain", fix="add --estimator --gait-reference 0.3")
        if not 0.0 < self.push_start <= 1.0:
            raise OnboardError(f"push_start {self.push_start} outside (0, 1]", field="push_start",
                               fix="pass --push-start between 0 and 1 (a fraction of the YAML's push size)")


def gait_sin_index(history: int) -> int:
    """Column of the newest sin(gait phase) in the key-major actor observation."""
    return history_layout(history)[1]["gait_phase"].start + 2 * (history - 1)


VELOCITY_MIRROR = (np.arange(3), np.array([1.0, -1.0, 1.0]))   # body-frame (vx, vy, vz) under the left/right mirror
VELOCITY_UNITS = 2.0          # the estimator's output is base_lin_vel as the critic sees it: m/s x 2, body frame


class MirrorSymmetricNet(nn.Module):
    """``(f(x) + M_a f(M_o x)) / 2``: an actor that is left/right mirror-equivariant by construction
    (pi(M_o o) = M_a pi(o)), so what it learns from a push to the left also answers a push to the right.
    ``M_o`` is the reflection of the raw observation (``sim.humanoid_env.actor_mirror``), applied to the
    standardized input through the normalizer's statistics (buffers, synced like the gait reference's);
    ``M_a`` swaps the legs and flips roll and yaw (``JOINT_MIRROR``). Both are signed permutations, so the
    exported graph is two passes of the same MLP plus gathers."""

    def __init__(self, net: nn.Module, history: int, obs_dim: int, out_mirror=JOINT_MIRROR):
        super().__init__()
        self.net = net
        perm, sign = actor_mirror(history)
        self.register_buffer("obs_perm", torch.as_tensor(perm, dtype=torch.long))
        self.register_buffer("obs_sign", torch.as_tensor(sign, dtype=torch.float32))
        self.register_buffer("act_perm", torch.as_tensor(out_mirror[0], dtype=torch.long))
        self.register_buffer("act_sign", torch.as_tensor(out_mirror[1], dtype=torch.float32))
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def sync(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """``v``: a velocity estimate already made for ``x`` (an ``EstimatorFedNet`` inside); the mirrored
        pass then gets its reflection instead of estimating again (equal when the estimator is symmetric)."""
        raw = x * self.obs_std + self.obs_mean
        xm = (raw[..., self.obs_perm] * self.obs_sign - self.obs_mean) / self.obs_std
        if v is None:
            return 0.5 * (self.net(x) + self.net(xm)[..., self.act_perm] * self.act_sign)
        vm = v * torch.tensor(VELOCITY_MIRROR[1], dtype=v.dtype)
        return 0.5 * (self.net(x, v) + self.net(xm, vm)[..., self.act_perm] * self.act_sign)


def velocity_estimator(actor_dim: int, history: int, symmetry: bool, hidden=(128, 64)) -> nn.Module:
    """Standardized actor observation (the history) -> body-frame base velocity [m/s x 2]. Trained by
    regression on the simulator's true velocity (the critic's privileged ``base_lin_vel``) alongside PPO,
    in the style of concurrent state-estimator training (Ji et al. 2022); the robot has no velocity sensor,
    so the estimate is how the actor (and the foot-placement prior) know how fast a push sends the body."""
    net = mlp([actor_dim, *hidden, 3], out_gain=1.0)
    return MirrorSymmetricNet(net, history, actor_dim, VELOCITY_MIRROR) if symmetry else net


class EstimatorFedNet(nn.Module):
    """``net([x, estimator(x)])``: the actor MLP reads the velocity estimate beside the history. The estimate
    is detached: PPO does not shape the estimator, its own regression loss does."""

    def __init__(self, net: nn.Module, estimator: nn.Module):
        super().__init__()
        self.net, self.estimator = net, estimator

    def forward(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        v = self.estimator(x) if v is None else v
        return self.net(torch.cat([x, v.detach()], dim=-1))


class GaitReferenceActor(nn.Module):
    """``net(x) + reference(phase)``: a stepping-in-place prior in action units, so that PPO learns the
    balance and foot placement around a gait that already lifts the feet (humanoid-gym's reference-motion
    idea, here as a residual): ``A (relu(-sin), relu(sin)) @ GAIT_LIFT_PATTERN`` (``sim.humanoid_env``), left
    swing while sin(phase) < 0, matching the stance windows of the env's contact reward. The input is the standardized
    observation; the buffers undo the standardization of the sin column (synced from the normalizer),
    so the exported graph computes the same reference from the runtime's standardized input.

    With ``estimator`` and ``placement_gain`` K [rad per m/s], the reference also places the feet where a
    step stops the body (a Raibert / capture-point heuristic in joint space): leg weights w_L = (1 + cos) / 2,
    w_R = (1 - cos) / 2 rise over each leg's swing, peak at its touchdown and fade over its stance; the
    weighted leg gets hip pitch -K vx (foot forward when the body moves forward) and hip roll +K vy, the
    latter only outward (left leg for vy > 0, right for vy < 0), so the legs never cross. K = 0.4 puts the
    foot of a 0.7 m leg about v sqrt(h / g) ahead, the capture-point offset of a 0.78 m pendulum."""

    def __init__(self, net: nn.Module, sin_index: int, amplitude_rad: float, act_dim: int = 12,
                 force_step: bool = False, estimator: nn.Module | None = None, placement_gain: float = 0.0,
                 early_touchdown: bool = False, side_step: float = 0.0):
        super().__init__()
        self.net, self.sin_index, self.force_step = net, int(sin_index), bool(force_step)
        self.early_touchdown, self.side_step = bool(early_touchdown), float(side_step)
        self.act_dim = int(act_dim)
        pad = np.zeros((2, act_dim))                   # a 13th (gait clock) output gets no reference
        pad[:, :min(12, act_dim)] = GAIT_LIFT_PATTERN[:, :min(12, act_dim)]
        pattern = torch.as_tensor(pad, dtype=torch.float32)
        self.register_buffer("pattern", pattern * float(amplitude_rad) / ACTION_SCALE)
        self.register_buffer("sin_mean", torch.zeros(()))
        self.register_buffer("sin_std", torch.ones(()))
        self.placement_gain = float(placement_gain)
        if estimator is not None:        # estimated once per call, shared by the net and the placement term
            self.estimator = estimator
        elif self.placement_gain > 0 or self.side_step > 0:
            raise OnboardError("foot placement and the side step need the velocity estimator",
                               field="placement_gain", fix="add --estimator")
        if self.placement_gain > 0 or self.early_touchdown:   # only then: older checkpoints keep their keys
            self.register_buffer("cos_mean", torch.zeros(()))
            self.register_buffer("cos_std", torch.ones(()))

    def sync(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.sin_mean.fill_(float(mean[self.sin_index]))
        self.sin_std.fill_(float(std[self.sin_index]))
        if hasattr(self, "cos_mean"):
            self.cos_mean.fill_(float(mean[self.sin_index + 1]))
            self.cos_std.fill_(float(std[self.sin_index + 1]))

    def side_gates(self, v: torch.Tensor) -> torch.Tensor:
        """(B, 2) the side-step gates g_L, g_R in [0, 1] from the velocity estimate ``v`` [m/s x 2]: g_L rises
        from 0 at vy = V0 to 1 at 2 V0 (the body moving left), g_R likewise for vy < -V0."""
        vy = v.detach()[..., 1:2] / VELOCITY_UNITS
        v0 = self.side_step
        return torch.cat([torch.clamp((vy - v0) / v0, 0.0, 1.0), torch.clamp((-vy - v0) / v0, 0.0, 1.0)], dim=-1)

    def lifts(self, x: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference lift, floor lift), each (B, 2) left/right in units of the pattern. Without the side step
        both are the clock's (relu(-sin), relu(sin)). With it, a body moving sideways (gate g) lifts the leg
        on that side now, whatever the clock says, and lowers the other: lift_L = max(clock_L, g_L) (1 - g_R).
        The floor of --force-step keeps only the lowering (clock x (1 - g_other)), so the net decides when
        the side step starts (both feet must not be up at once) but cannot undo the clock's step otherwise."""
        s = x[..., self.sin_index:self.sin_index + 1] * self.sin_std + self.sin_mean
        clock = torch.cat([torch.relu(-s), torch.relu(s)], dim=-1)
        if self.side_step <= 0:
            return clock, clock
        g = self.side_gates(self.estimator(x) if v is None else v)
        keep = 1.0 - g.flip(-1)                     # (1 - g_R, 1 - g_L)
        return torch.maximum(clock, g) * keep, clock * keep

    def reference(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        return self._reference(x, v)[0]

    def _reference(self, x: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference (B, 12), knee floor (B, 2)), the lifts computed once for both."""
        if self.side_step > 0 and v is None:
            v = self.estimator(x)
        lift, floor = self.lifts(x, v)
        ref = lift @ self.pattern
        if self.placement_gain > 0:
            ref = ref + self.placement(x, v)
        return ref, floor @ self.pattern[:, KNEES]

    def placement(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 12) the foot-placement term [action units] from the detached velocity estimate ``v``
        (made here when not given). With the side step, a gated leg is weighted as at its touchdown."""
        c = x[..., self.sin_index + 1:self.sin_index + 2] * self.cos_std + self.cos_mean
        w_left, w_right = 0.5 * (1 + c), 0.5 * (1 - c)
        v = self.estimator(x) if v is None else v
        if self.side_step > 0:
            g = self.side_gates(v)
            w_left, w_right = torch.maximum(w_left, g[..., :1]), torch.maximum(w_right, g[..., 1:])
        v = v.detach() / VELOCITY_UNITS
        k = self.placement_gain / ACTION_SCALE
        pitch = -k * v[..., :1]
        zero = torch.zeros_like(pitch)
        left = [w_left * pitch, w_left * k * torch.relu(v[..., 1:2])]
        right = [w_right * pitch, -w_right * k * torch.relu(-v[..., 1:2])]
        clock = [zero] * (self.act_dim - 12)
        return torch.cat([*left, zero, zero, zero, zero, *right, zero, zero, zero, zero, *clock], dim=-1)

    def lift_rising(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2) bool: the left / right leg's reference lift is rising (the first half of its swing: left
        while sin < 0 and cos < 0, right while sin > 0 and cos > 0)."""
        s = x[..., self.sin_index:self.sin_index + 1] * self.sin_std + self.sin_mean
        c = x[..., self.sin_index + 1:self.sin_index + 2] * self.cos_std + self.cos_mean
        return torch.cat([(s < 0) & (c < 0), (s > 0) & (c > 0)], dim=-1)

    def forward(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        if v is None and hasattr(self, "estimator"):
            v = self.estimator(x)
        ref, floor = self._reference(x, v)
        out = (self.net(x, v) if v is not None else self.net(x)) + ref
        if self.force_step:   # the knees may flex more than the reference, never less: the step cannot be undone
            knees = torch.maximum(out[..., KNEES], floor)
            if self.early_touchdown:   # ... only while the lift rises: after its top the foot may land early
                knees = torch.where(self.lift_rising(x), knees, out[..., KNEES])
            out = torch.cat([out[..., :3], knees[..., :1], out[..., 4:9], knees[..., 1:], out[..., 10:]], dim=-1)
        return out


class AsymmetricActorCritic(nn.Module):
    """Actor on the first ``actor_dim`` columns (history), critic on the rest (privileged)."""

    def __init__(self, actor_dim: int, critic_dim: int, act_dim: int, hidden=(256, 128),
                 critic_hidden=(256, 128), init_log_std=-1.0, gait_reference: float = 0.0, history: int = 5,
                 symmetry: bool = False, force_step: bool = False, estimator: bool = False,
                 placement_gain: float = 0.0, early_touchdown: bool = False, side_step: float = 0.0):
        super().__init__()
        self.actor_dim, self.critic_dim = int(actor_dim), int(critic_dim)
        self.estimator = velocity_estimator(actor_dim, history, symmetry) if estimator else None
        self.actor = mlp([actor_dim + (3 if estimator else 0), *hidden, act_dim], out_gain=0.01)
        if estimator:
            self.actor = EstimatorFedNet(self.actor, self.estimator)
        if symmetry:     # a gait clock output (13th) is the same for a robot and its mirror image
            out_mirror = (JOINT_MIRROR if act_dim == 12 else
                          (np.r_[JOINT_MIRROR[0], 12:act_dim], np.r_[JOINT_MIRROR[1], np.ones(act_dim - 12)]))
            self.actor = MirrorSymmetricNet(self.actor, history, actor_dim, out_mirror)
        if gait_reference > 0:
            self.actor = GaitReferenceActor(self.actor, gait_sin_index(history), gait_reference, act_dim, force_step,
                                            self.estimator, placement_gain, early_touchdown, side_step)
        self.critic = mlp([critic_dim, *critic_hidden, 1], out_gain=1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def dist(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.distributions.Normal:
        """``v``: the velocity estimate for ``x``, when already made (``estimate``); the same as without it."""
        a = self.actor(x[..., :self.actor_dim]) if v is None else self.actor(x[..., :self.actor_dim], v)
        return torch.distributions.Normal(a, self.log_std.exp())

    def estimate(self, x: torch.Tensor) -> torch.Tensor | None:
        """The velocity estimate for the rows of ``x`` (None without an estimator), without gradient. The
        PPO update makes it once per rollout: PPO never moves the estimator (its output is detached)."""
        if self.estimator is None:
            return None
        with torch.no_grad():
            return self.estimator(x[..., :self.actor_dim])

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x[..., self.actor_dim:]).squeeze(-1)


class ObsNormalizer:
    """Frame statistics (47-D) applied to every history slot, plus the critic's own statistics."""

    def __init__(self, env: HumanoidVecEnv):
        self.frame = RunningMeanStd(FRAME_DIM)
        self.critic = RunningMeanStd(env.critic_dim)
        self.history = env.history
        self._perm = env._perm

    def update(self, critic_obs: np.ndarray) -> None:
        self.frame.update(critic_obs[:, :FRAME_DIM])      # the noise-free frame: stable statistics
        self.critic.update(critic_obs)

    def actor_mean_std(self):
        mean = np.tile(self.frame.mean, self.history)[self._perm]
        std = np.tile(self.frame.std, self.history)[self._perm]
        return mean, std

    def sync(self, model: "AsymmetricActorCritic") -> None:
        """Give a gait-reference / mirror-symmetric actor the current statistics of its input."""
        for m in model.actor.modules():
            if isinstance(m, (GaitReferenceActor, MirrorSymmetricNet)):
                m.sync(*self.actor_mean_std())

    def actor(self, obs: np.ndarray) -> np.ndarray:
        mean, std = self.actor_mean_std()
        return np.clip((obs - mean) / std, -10, 10).astype(np.float32)

    def both(self, obs, critic_obs) -> np.ndarray:
        return np.concatenate([self.actor(obs), self.critic.normalize(critic_obs)], axis=1)


class StreamLimits:
    """The safety filter's joint-stream limits (``sim2real.safety.JointStreamLimits``: position with the soft
    margin, velocity, acceleration, jerk of the 50 Hz PD target stream), batched over robots.

    Training inside them means the deployed filter never has to cut what the policy relies on: measured
    on a policy trained without them, the acceleration limit alone clipped ~24% of joint commands and
    survival through the filter halved. Same class and envelope as the filter, vectorized over
    robots x joints."""

    def __init__(self, n: int, dt_s: float, robot: str = "g1_12dof"):
        from onboard.paths import config_dir
        from onboard.spec import load_robot
        from sim2real.safety import JointStreamLimits
        from sim2real.safety_envelope import load_envelope
        profile = load_robot(robot)
        env = load_envelope(profile, config_dir() / "safety" / f"{profile.name}.yaml")
        lim, sc, j = profile.limits, env.limit_scale, profile.n_joints

        def tile(x):
            return np.tile(np.broadcast_to(np.asarray(x, float), (j,)), n)
        self.n, self.j = n, j
        self.limits = JointStreamLimits(tile(lim.position[:, 0]), tile(lim.position[:, 1]), tile(env.position_margin),
                                        tile(lim.velocity * sc["velocity"]), tile(lim.acceleration * sc["acceleration"]),
                                        tile(lim.jerk * sc["jerk"]), dt_s)
        self.hist = np.zeros((3, n * j))

    def reset(self, idx, q: np.ndarray) -> None:
        """Robots ``idx`` restart from measured joint positions ``q`` (len(idx), j), as the filter's reset."""
        for i, qi in zip(np.atleast_1d(idx), np.asarray(q, float).reshape(-1, self.j)):
            sl = slice(i * self.j, (i + 1) * self.j)
            q_c = np.clip(qi, self.limits.hard_lo[sl], self.limits.hard_hi[sl])
            self.hist[:, sl] = q_c

    def __call__(self, target: np.ndarray) -> np.ndarray:
        h = self.hist
        lo, hi = self.limits.interval(h[0], h[1], h[2])
        out = h[0] + np.clip(np.asarray(target, float).ravel() - h[0], lo, hi)
        self.hist = np.stack([out, h[0], h[1]])
        return out.reshape(self.n, self.j)


class PushCurriculum:
    """Push size as a fraction of the DR YAML's maximum, raised while the robot survives.

    Every ``push_window`` finished episodes: fewer than ``push_up_fall_rate`` of them fell -> scale up by
    ``push_step`` (at most 1.0); more than ``push_down_fall_rate`` fell -> down (at least ``push_start``).
    The evaluation always uses the full pushes (scale 1.0)."""

    def __init__(self, cfg: HumanoidPPOConfig):
        self.cfg, self.scale, self._fell = cfg, float(cfg.push_start), []

    def update(self, fell, log=None) -> float:
        c = self.cfg
        self._fell += [bool(f) for f in np.atleast_1d(fell)]
        if len(self._fell) >= c.push_window:
            rate, old = float(np.mean(self._fell)), self.scale
            if rate < c.push_up_fall_rate:
                self.scale = min(1.0, round(self.scale + c.push_step, 6))
            elif rate > c.push_down_fall_rate:
                self.scale = max(c.push_start, round(self.scale - c.push_step, 6))
            if self.scale != old and log is not None:
                log(json.dumps({"push_scale": self.scale, "fall_rate_window": round(rate, 3)}))
            self._fell = []
        return self.scale


@dataclass
class HumanoidTrainResult:
    model: AsymmetricActorCritic
    norm: ObsNormalizer
    config: HumanoidPPOConfig
    history: list = field(default_factory=list)
    wall_s: float = 0.0
    env_steps: int = 0
    env_meta: dict = field(default_factory=dict)
    last_state: dict | None = None       # with weight averaging: the model's last (not averaged) weights


EPISODE_KEYS = {"return": "episode_return", "steps": "episode_steps", "fell": "episode_fell",
                "lin_vel_err": "episode_lin_vel_err"}       # training log name -> the env's info key


def _env_kwargs(cfg: HumanoidPPOConfig) -> dict:
    dr = (cfg.dr_config or True) if cfg.dr else False
    return dict(task=cfg.task, dr=dr, seed=cfg.seed, history=cfg.history, step_in_place=cfg.step_in_place,
                gait_reference=cfg.gait_reference if cfg.reference_reward else 0.0, capture_reward=cfg.capture_reward,
                gantry_starts=cfg.gantry_starts, physics_dt_s=cfg.physics_dt_s, clock_action=cfg.clock_action,
                gait_period_s=cfg.gait_period_s)


def _new_model(cfg: HumanoidPPOConfig, env) -> AsymmetricActorCritic:
    return AsymmetricActorCritic(env.obs_dim, env.critic_dim, env.action_dim, cfg.hidden, cfg.critic_hidden,
                                 cfg.init_log_std, cfg.gait_reference, cfg.history, cfg.symmetry, cfg.force_step,
                                 cfg.estimator, cfg.placement_gain, cfg.early_touchdown, cfg.side_step)


def train(cfg: HumanoidPPOConfig, log=print) -> HumanoidTrainResult:
    cfg.validate()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    kw = _env_kwargs(cfg)
    if cfg.async_rollout:      # the robots step in one worker process; this process only learns
        return _train(cfg, HumanoidVecEnv(1, **kw), rng, log)
    env = (ShardedHumanoidEnv(cfg.num_envs, shards=cfg.workers, **kw) if cfg.workers > 1
           else HumanoidVecEnv(cfg.num_envs, **kw))
    try:
        return _train(cfg, env, rng, log)
    finally:
        if cfg.workers > 1:
            env.close()


class RolloutCollector:
    """Steps ``env`` with ``ac`` for one PPO rollout (``cfg.num_steps`` x ``cfg.num_envs``): standardizes with
    ``norm`` (updated every step), samples, applies the stream limits and the push curriculum, and keeps
    the finished episodes' statistics. Used in the learner's process, or in the worker of ``--async-rollout``
    with its own copy of the model."""

    def __init__(self, cfg: HumanoidPPOConfig, env, ac: AsymmetricActorCritic, norm: ObsNormalizer):
        self.cfg, self.env, self.ac, self.norm = cfg, env, ac, norm
        self.curriculum = PushCurriculum(cfg) if cfg.push_curriculum else None
        if self.curriculum is not None:
            env.push_scale = self.curriculum.scale
        self.ro = Rollout(cfg.num_steps, cfg.num_envs, env.obs_dim + env.critic_dim, env.action_dim)
        self.vel = np.zeros((cfg.num_steps, cfg.num_envs, 3), np.float32)   # the estimator's regression targets
        self.obs, info = env.reset(seed=cfg.seed)
        self.cobs = info["critic_obs"]
        self.limiter = StreamLimits(cfg.num_envs, env.dt_s) if cfg.stream_limits else None
        if self.limiter is not None:
            self.limiter.reset(np.arange(cfg.num_envs), [env.robot_state(i)["q"] for i in range(cfg.num_envs)])
        self.episodes = {k: [] for k in EPISODE_KEYS}

    def take_episodes(self) -> dict:
        out, self.episodes = self.episodes, {k: [] for k in self.episodes}
        return out

    def collect(self, log=None) -> np.ndarray:
        """Fill ``self.ro`` and ``self.vel``; returns the standardized observation after the last step."""
        cfg, env, ac, norm, ro, limiter = self.cfg, self.env, self.ac, self.norm, self.ro, self.limiter
        obs, cobs = self.obs, self.cobs
        for t in range(cfg.num_steps):
            norm.update(cobs)
            norm.sync(ac)
            x = norm.both(obs, cobs)
            with torch.no_grad():
                xt = torch.as_tensor(x)
                d = ac.dist(xt)
                u = d.sample()
                ro.logp[t] = d.log_prob(u).sum(-1).numpy()
                ro.val[t] = ac.value(xt).numpy()
            ro.obs[t], ro.u[t] = x, u.numpy()
            self.vel[t] = cobs[:, VEL_COLUMNS]
            if limiter is None:
                obs, rew, term, trunc, info = env.step(u.numpy())
            else:   # the limits are part of the plant the policy acts on; PPO scores the sample u
                a = np.clip(u.numpy(), -ACTION_CLIP, ACTION_CLIP)
                target = limiter(env.default_pose + ACTION_SCALE * a[:, :12])
                obs, rew, term, trunc, info = (env.step_targets_clock(np.c_[target, clock_rate(a[:, 12])])
                                               if cfg.clock_action else env.step_targets(target))
            cobs = info["critic_obs"]
            rew = rew.copy()
            if "done_idx" in info:
                idx = info["done_idx"]
                if limiter is not None:
                    limiter.reset(idx, [env.robot_state(i)["q"] for i in idx])
                tr = trunc[idx]
                if tr.any():   # time limit: bootstrap from the final observation's value
                    xf = norm.both(info["final_obs"][tr], info["final_critic_obs"][tr])
                    with torch.no_grad():
                        rew[idx[tr]] += cfg.gamma * ac.value(torch.as_tensor(xf)).numpy()
                for k, key in EPISODE_KEYS.items():
                    self.episodes[k] += info[key].tolist()
                if self.curriculum is not None:
                    env.push_scale = self.curriculum.update(info["episode_fell"], log)
            ro.rew[t], ro.done[t] = rew, (term | trunc).astype(np.float32)
        self.obs, self.cobs = obs, cobs
        return norm.both(obs, cobs)


def _norm_state(norm: ObsNormalizer) -> tuple:
    return tuple((r.mean, r.var, r.count) for r in (norm.frame, norm.critic))


def _set_norm_state(norm: ObsNormalizer, state) -> None:
    for r, (mean, var, count) in zip((norm.frame, norm.critic), state):
        r.mean, r.var, r.count = np.array(mean), np.array(var), float(count)


def _collector_worker(conn, cfg: HumanoidPPOConfig, norm_state) -> None:
    """``--async-rollout``'s worker: all robots and a copy of the model in one process. Each
    ("collect", version, weights) is answered with the rollout made with exactly those weights.

    The velocity estimator is this process's: the first message's weights set it, later ones leave it
    alone. Each rollout goes out with the estimator that acted in it; the worker then fits the estimator on
    that rollout while the learner runs its update, so the fit costs the learner nothing."""
    import traceback
    try:
        torch.set_num_threads(1)
        torch.manual_seed(cfg.seed + 1)
        rng = np.random.default_rng(cfg.seed + 1)
        env = HumanoidVecEnv(cfg.num_envs, **_env_kwargs(cfg))
        ac, norm = _new_model(cfg, env), ObsNormalizer(env)
        est_opt = torch.optim.Adam(ac.estimator.parameters(), lr=1e-3) if ac.estimator is not None else None
        _set_norm_state(norm, norm_state)
        col = RolloutCollector(cfg, env, ac, norm)
        est_rmse, first = None, True
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            _, version, weights = msg
            weights = {k: torch.as_tensor(v) for k, v in weights.items()
                       if first or est_opt is None or "estimator." not in k}
            missing, unexpected = ac.load_state_dict(weights, strict=False)
            if unexpected or any("estimator." not in k for k in missing):
                raise RuntimeError(f"weights do not fit the worker's model: {missing or unexpected}")
            first = False
            logs: list = []
            t0 = time.perf_counter()
            x_last = col.collect(logs.append)
            rollout_s = time.perf_counter() - t0
            ro = col.ro
            conn.send({"version": version, "obs": ro.obs, "u": ro.u, "logp": ro.logp, "rew": ro.rew,
                       "done": ro.done, "x_last": x_last, "episodes": col.take_episodes(),
                       "norm": _norm_state(norm), "push_scale": float(env.push_scale), "logs": logs,
                       "rollout_s": rollout_s, "est_rmse_m_s": est_rmse,
                       "estimator": None if est_opt is None else
                       {k: v.numpy().copy() for k, v in ac.estimator.state_dict().items()}})
            if est_opt is not None:
                x = torch.as_tensor(ro.obs.reshape(-1, ro.obs.shape[-1])[:, :ac.actor_dim])
                est_rmse = fit_estimator(ac.estimator, est_opt, x, col.vel, cfg, rng)
    except Exception:                       # the learner raises it with the worker's traceback
        with contextlib.suppress(Exception):
            conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


class AsyncCollector:
    """``--async-rollout``: the robots step in a worker process (``_collector_worker``) while this process
    runs the PPO update, so on two cores neither waits for the other. The worker collects rollout k + 1 with
    the weights that come out of update k - 1 (``submit`` before the update, ``receive`` after it), so every
    update learns from data one update old: policy lag 1, the same at any speed, so a run is reproducible.
    The update clips its ratio around the weights it starts from and weights each sample by how much more
    likely those make its action than the acting weights did (``ppo_update``'s ``logp_prox``)."""

    def __init__(self, cfg: HumanoidPPOConfig, norm: ObsNormalizer):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")          # never fork a process that holds torch's thread pools
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_collector_worker, args=(child, cfg, _norm_state(norm)), daemon=True)
        self.proc.start()
        child.close()

    def submit(self, version: int, ac: AsymmetricActorCritic) -> None:
        try:
            self.conn.send(("collect", version, {k: v.detach().numpy().copy() for k, v in ac.state_dict().items()}))
        except (BrokenPipeError, ConnectionResetError):
            raise RuntimeError(f"the rollout worker died (exit code {self.proc.exitcode})") from None

    def receive(self) -> dict:
        try:
            r = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the rollout worker died (exit code {self.proc.exitcode})") from None
        if "error" in r:
            raise RuntimeError("the rollout worker failed:\n" + r["error"])
        return r

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("close",))
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)


def _train(cfg: HumanoidPPOConfig, env, rng, log) -> HumanoidTrainResult:
    ac = _new_model(cfg, env)
    opt = torch.optim.Adam(ac.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=True)
    # the learner fits the estimator itself, unless the --async-rollout worker does
    est_opt = (torch.optim.Adam(ac.estimator.parameters(), lr=1e-3)
               if ac.estimator is not None and not cfg.async_rollout else None)
    norm = ObsNormalizer(env)
    if cfg.resume:
        prev, _ = load_checkpoint(cfg.resume)
        if prev.model.state_dict().keys() != ac.state_dict().keys():
            raise OnboardError("the checkpoint's actor differs from this run's", file=cfg.resume,
                               field="gait_reference/symmetry",
                               fix="resume with the checkpoint's --gait-reference and --symmetry")
        ac.load_state_dict(prev.model.state_dict())
        norm.frame, norm.critic = prev.norm.frame, prev.norm.critic
    n_updates = max(1, cfg.total_steps // (cfg.num_envs * cfg.num_steps))
    res = HumanoidTrainResult(ac, norm, cfg, env_meta={
        "obs_spec": env.obs_spec, "history": env.history,
        "dr_ranges": env.randomizer.ranges() if hasattr(env.randomizer, "ranges") else None})
    col = worker = None
    if cfg.async_rollout:
        worker = AsyncCollector(cfg, norm)
        worker.submit(0, ac)
        update_threads = cfg.update_threads or 1      # the other core steps the robots meanwhile
    else:
        col = RolloutCollector(cfg, env, ac, norm)
        update_threads = cfg.update_threads or max(cfg.torch_threads, cfg.workers)
    ep = {k: [] for k in EPISODE_KEYS}
    learn_s = rollout_s = 0.0
    anneal_from = None
    averager = WeightAverager(ac) if cfg.average_frac > 0 else None
    t0 = time.perf_counter()
    try:
        for upd in range(n_updates):
            if cfg.anneal_lr:
                opt.param_groups[0]["lr"] = cfg.learning_rate * (1 - upd / n_updates)
            if worker is None:
                x_last = col.collect(log)
                ro, vel, lag = col.ro, col.vel, 0
                for k, v in col.take_episodes().items():
                    ep[k] += v
                with torch.no_grad():
                    last_val = ac.value(torch.as_tensor(x_last)).numpy()
            else:
                r = worker.receive()
                if upd + 1 < n_updates:
                    worker.submit(upd, ac)       # the next rollout acts with these weights (version upd) meanwhile
                ro = Rollout(cfg.num_steps, cfg.num_envs, r["obs"].shape[-1], r["u"].shape[-1])
                for k in ("obs", "u", "logp", "rew", "done"):
                    setattr(ro, k, r[k])
                vel, lag = None, upd - r["version"]
                rollout_s += r["rollout_s"]
                if r["estimator"] is not None:      # the estimate that acted in this rollout (fit by the worker)
                    ac.estimator.load_state_dict({k: torch.as_tensor(v) for k, v in r["estimator"].items()})
                for line in r["logs"]:
                    log(line)
                for k, v in r["episodes"].items():
                    ep[k] += v
                _set_norm_state(norm, r["norm"])
                norm.sync(ac)
                env.push_scale = r["push_scale"]
                with torch.no_grad():   # values from the current critic (the rollout's are one update old)
                    ro.val = ac.value(torch.as_tensor(ro.obs.reshape(-1, ro.obs.shape[-1]))).numpy().reshape(
                        ro.rew.shape)
                    last_val = ac.value(torch.as_tensor(r["x_last"])).numpy()
            t_learn = time.perf_counter()
            adv, ret = ro.advantages(last_val, cfg.gamma, cfg.gae_lambda)
            x_all = torch.as_tensor(ro.obs.reshape(-1, ro.obs.shape[-1]))
            torch.set_num_threads(update_threads)
            v_all = ac.estimate(x_all)                 # fixed during the update: made once, not per minibatch
            with torch.no_grad():
                old = ac.dist(x_all, v_all)
                # with --async-rollout the rollout's actions came from the weights one update older
                prox = (None if worker is None else
                        old.log_prob(torch.as_tensor(ro.u.reshape(-1, ro.u.shape[-1]))).sum(-1))
            stats = ppo_update(ac, opt, ro, adv, ret, cfg, rng, aux=v_all, logp_prox=prox)
            if cfg.desired_kl > 0:
                with torch.no_grad():
                    kl = float(torch.distributions.kl_divergence(old, ac.dist(x_all, v_all)).sum(-1).mean())
                lr = opt.param_groups[0]["lr"]
                if kl > 2.0 * cfg.desired_kl:
                    lr = max(1e-5, lr / 1.5)
                elif kl < 0.5 * cfg.desired_kl:
                    lr = min(1e-2, lr * 1.5)
                opt.param_groups[0]["lr"] = lr
                stats.update(kl=kl, lr=lr)
            progress = max((upd + 1) / n_updates,
                           (time.perf_counter() - t0) / cfg.max_wall_s if cfg.max_wall_s > 0 else 0.0)
            if cfg.final_std > 0:
                anneal_from = anneal_std(ac, progress, cfg, anneal_from)
            if averager is not None and progress > 1.0 - cfg.average_frac and (upd + 1) % cfg.average_every == 0:
                averager.add(ac)
            if est_opt is not None:
                stats["est_rmse_m_s"] = fit_estimator(ac.estimator, est_opt, x_all[:, :ac.actor_dim], vel, cfg, rng)
            elif worker is not None and r["est_rmse_m_s"] is not None:
                stats["est_rmse_m_s"] = r["est_rmse_m_s"]
            torch.set_num_threads(cfg.torch_threads)
            learn_s += time.perf_counter() - t_learn
            res.env_steps = (upd + 1) * cfg.num_envs * cfg.num_steps
            stop = cfg.max_wall_s > 0 and time.perf_counter() - t0 > cfg.max_wall_s
            if ep["return"] and ((upd + 1) % cfg.log_every == 0 or upd == n_updates - 1 or stop):
                row = {"update": upd + 1, "env_steps": res.env_steps, "wall_s": round(time.perf_counter() - t0, 1),
                       "return": float(np.mean(ep["return"])), "episode_s": float(np.mean(ep["steps"])) * env.dt_s,
                       "fall_rate": float(np.mean(ep["fell"])), "lin_vel_err": float(np.mean(ep["lin_vel_err"])),
                       "episodes": len(ep["return"]), "std": float(ac.log_std.detach().exp().mean()),
                       "push_scale": float(env.push_scale), **stats}
                row["learn_s"] = learn_s       # this process's update time since the last row
                if worker is not None:
                    row.update(policy_lag=lag, rollout_s=rollout_s)   # the worker's rollout time, in parallel
                learn_s = rollout_s = 0.0
                res.history.append(row)
                log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
                ep = {k: [] for k in ep}
            if stop:
                log(json.dumps({"stopped": "max_wall_s", "update": upd + 1, "env_steps": res.env_steps}))
                break
    finally:
        if worker is not None:
            worker.close()
    if averager is not None:
        if averager.count == 0:          # too short a run to average: keep the last weights
            averager.add(ac)
        res.last_state = {k: v.clone() for k, v in ac.state_dict().items()}
        averager.apply(ac)
        log(json.dumps({"weight_average": {"snapshots": averager.count, "every_updates": cfg.average_every,
                                           "over_last_share": cfg.average_frac}}))
    res.wall_s = time.perf_counter() - t0
    return res


class WeightAverager:
    """Uniform running average of the actor's parameters (stochastic weight averaging, Izmailov et al. 2018;
    for RL, Nikishin et al. 2018): the deployed mean policy should not hang on where the last PPO update
    happened to step. Measured on three push-recovery seeds (session 16, docs/humanoid.md), it neither helped
    nor hurt. The critic and the buffers (input statistics, mirror permutations) are not averaged: the critic
    is not deployed and the buffers are the run's final ones."""

    def __init__(self, ac: nn.Module):
        self.names = [n for n, _ in ac.named_parameters() if not n.startswith("critic.")]
        self.sum = None
        self.count = 0

    def add(self, ac: nn.Module) -> None:
        params = dict(ac.named_parameters())
        with torch.no_grad():
            if self.sum is None:
                self.sum = {n: params[n].detach().clone().double() for n in self.names}
            else:
                for n in self.names:
                    self.sum[n] += params[n].detach().double()
        self.count += 1

    def average(self) -> dict:
        return {n: (v / self.count).float() for n, v in self.sum.items()}

    def apply(self, ac: nn.Module) -> None:
        params = dict(ac.named_parameters())
        with torch.no_grad():
            for n, v in self.average().items():
                params[n].copy_(v)


def _critic_columns(name: str) -> slice:
    """Columns of a privileged key in the critic observation (the noise-free frame, then PRIVILEGED_SPEC)."""
    start = FRAME_DIM
    for k in PRIVILEGED_SPEC:
        if k["name"] == name:
            return slice(start, start + k["shape"][0])
        start += k["shape"][0]
    raise KeyError(name)


VEL_COLUMNS = _critic_columns("base_lin_vel")     # the estimator's regression target: body-frame m/s x 2


def anneal_std(ac, progress: float, cfg: HumanoidPPOConfig, start):
    """Cap the exploration noise over the last ``cfg.std_anneal_frac`` of training (``progress`` in [0, 1]).

    The cap falls log-linearly, per joint, from each joint's noise when the anneal begins (``start``, recorded
    on the first call past the threshold and returned) to ``cfg.final_std`` at the end; a joint already below
    the cap keeps its noise. The deterministic policy is what deploys, so the last updates learn from rollouts
    nearer to it, where the rare falls are the big pushes rather than the exploration noise."""
    begin = 1.0 - cfg.std_anneal_frac
    if progress <= begin:
        return start
    if start is None:
        start = ac.log_std.detach().clone()
    p = min(1.0, (progress - begin) / cfg.std_anneal_frac)
    cap = (1.0 - p) * start + p * math.log(cfg.final_std)
    with torch.no_grad():
        ac.log_std.copy_(torch.minimum(ac.log_std, cap))
    return start


def fit_estimator(estimator: nn.Module, opt, x: torch.Tensor, vel: np.ndarray, cfg: HumanoidPPOConfig,
                  rng: np.random.Generator) -> float:
    """Regress the estimator on this rollout (standardized actor inputs -> true body velocity), as many
    epochs and minibatches as the PPO update; returns the RMS error [m/s] before the fit."""
    y = torch.as_tensor(vel.reshape(-1, 3))
    with torch.no_grad():
        before = float(((estimator(x) - y) ** 2).sum(-1).mean().sqrt()) / VELOCITY_UNITS
    n, mb = len(x), len(x) // cfg.num_minibatches
    for _ in range(cfg.update_epochs):
        perm = torch.as_tensor(rng.permutation(n))
        for s in range(0, n, mb):
            i = perm[s:s + mb]
            loss = ((estimator(x[i]) - y[i]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return before


# ---------------------------------------------------------------- checkpoint
def is_humanoid_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint written by ``save_checkpoint`` (the G1 legs' PPO)."""
    return checkpoint_has(path, "frame_mean", "critic_hidden")


def save_checkpoint(res: HumanoidTrainResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = res.norm
    torch.save({"config": asdict(res.config), "state_dict": res.model.state_dict(),
                "frame_mean": n.frame.mean.tolist(), "frame_var": n.frame.var.tolist(),
                "critic_mean": n.critic.mean.tolist(), "critic_var": n.critic.var.tolist(),
                "stats_count": float(n.frame.count),
                "history": res.history, "wall_s": res.wall_s, "env_steps": res.env_steps,
                "env_meta": res.env_meta}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    c = ck["config"]
    cfg = HumanoidPPOConfig(**{**c, "hidden": tuple(c["hidden"]), "critic_hidden": tuple(c["critic_hidden"])})
    env = HumanoidVecEnv(1, task=cfg.task, dr=False, history=cfg.history, clock_action=cfg.clock_action)
    ac = AsymmetricActorCritic(env.obs_dim, env.critic_dim, env.action_dim, cfg.hidden, cfg.critic_hidden,
                               gait_reference=cfg.gait_reference, history=cfg.history, symmetry=cfg.symmetry,
                               force_step=cfg.force_step, estimator=cfg.estimator,
                               placement_gain=cfg.placement_gain, early_touchdown=cfg.early_touchdown,
                               side_step=cfg.side_step)
    ac.load_state_dict(ck["state_dict"])
    norm = ObsNormalizer(env)
    norm.frame.mean, norm.frame.var = np.asarray(ck["frame_mean"]), np.asarray(ck["frame_var"])
    norm.critic.mean, norm.critic.var = np.asarray(ck["critic_mean"]), np.asarray(ck["critic_var"])
    norm.sync(ac)   # the reference undoes exactly the standardization the contract ships
    # Resumed training must not let the first new batch overwrite the statistics the weights were fitted to.
    norm.frame.count = norm.critic.count = float(ck.get("stats_count", max(ck.get("env_steps", 0), 1)))
    return HumanoidTrainResult(ac, norm, cfg, ck.get("history", []), ck.get("wall_s", 0.0),
                               ck.get("env_steps", 0), ck.get("env_meta", {})), ck


# ---------------------------------------------------------------- export
class _PolicyGraph(nn.Module):
    """Standardized (B, obs_dim) -> normalized action a / EXPORT_ACTION_BOUND in [-1, 1]."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor

    def forward(self, obs):
        return torch.clamp(self.actor(obs), -EXPORT_ACTION_BOUND, EXPORT_ACTION_BOUND) / EXPORT_ACTION_BOUND


def build_contract(res: HumanoidTrainResult, ck: dict, *, onnx_name: str, robot: str = "g1_12dof",
                   safety=None, evaluation=None):
    from onboard.spec import PolicyContract, load_robot
    from policies.export import _safety_envelope, git_sha
    profile = load_robot(robot)
    cfg, H = res.config, res.config.history
    norm = {}
    for k, (sl_start) in zip(OBS_SPEC, np.cumsum([0] + [k["shape"][0] for k in OBS_SPEC])[:-1]):
        d = k["shape"][0]
        m = np.tile(res.norm.frame.mean[sl_start:sl_start + d], H)
        s = np.tile(res.norm.frame.std[sl_start:sl_start + d], H)
        norm[k["name"]] = {"kind": "meanstd", "mean": m.tolist(), "std": s.tolist()}
    default = np.asarray(profile.default_pose, float)
    span = ACTION_SCALE * EXPORT_ACTION_BOUND
    return PolicyContract(
        policy_kind="ppo",
        robot={"name": profile.name, "profile_hash": profile.hash, "joint_names": list(profile.joint_names)},
        observation={"keys": [{"name": k["name"], "shape": [H * k["shape"][0]],
                               "units": k["units"] + f"; last {H} frames at 50 Hz, oldest first"} for k in OBS_SPEC],
                     "obs_horizon": 1, "normalization": norm},
        action={"type": "joint_pd_offset", "names": list(profile.joint_names), "dim": 12,
                "normalization": {"kind": "minmax", "min": (default - span).tolist(),
                                  "max": (default + span).tolist()},
                "pred_horizon": 1, "action_horizon": 1, "control_rate_hz": float(profile.rates_hz["control_hz"]),
                "pd_gains": {"kp": profile.raw["pd_gains"]["kp"], "kd": profile.raw["pd_gains"]["kd"]},
                "mapping": f"graph output a/{EXPORT_ACTION_BOUND} in [-1, 1] -> PD target = default_pose + "
                           f"{ACTION_SCALE} * a (minmax over default +- {span} rad)"},
        graphs={"policy": {"file": onnx_name, "opset": 20, "inputs": {"obs": ["batch", res.model.actor_dim]},
                           "outputs": {"action": ["batch", 12]}}},
        safety_envelope=_safety_envelope(profile.name, safety),
        provenance={"git_sha": git_sha(), "train_config": asdict(cfg), "env_steps": ck.get("env_steps"),
                    "train_wall_s": ck.get("wall_s"), "dr_ranges": (ck.get("env_meta") or {}).get("dr_ranges"),
                    "evaluation": evaluation, "torch_version": torch.__version__,
                    "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        extra={"obs_clip": 10.0, "history": H, "task": cfg.task, "gait_period_s": cfg.gait_period_s,
               "gait_reference_rad": cfg.gait_reference, "velocity_estimator": cfg.estimator,
               "placement_gain_rad_per_m_s": cfg.placement_gain, "gantry_starts": cfg.gantry_starts,
               "early_touchdown": cfg.early_touchdown, "side_step_m_s": cfg.side_step,
               "training_physics_dt_s": cfg.physics_dt_s,
               "observation_builder": "sim.humanoid_env.HumanoidVecEnv (key-major history layout)"},
    )


def export_humanoid(checkpoint: str | Path, out: str | Path, *, safety=None, evaluation=None):
    """Checkpoint -> ``out`` (.onnx with the contract); ONNX Runtime checked against torch before rename."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise OnboardError(f"output must end in .onnx, got '{out.name}'", file=str(out), field="--out",
                           fix="e.g. --out g1_stand.onnx")
    from onboard.spec import CONTRACT_KEY
    from policies.artifact import load_artifact
    res, ck = load_checkpoint(checkpoint)
    if res.config.clock_action:
        raise OnboardError("this policy paces its own gait clock (--clock-action), which the artifact contract and "
                           "the runtime do not carry yet", file=str(checkpoint), field="clock_action",
                           fix="evaluate it in torch (policies.humanoid_ppo.torch_act_fn + evaluate); train without "
                               "--clock-action for a deployable artifact")
    contract = build_contract(res, ck, onnx_name=out.name, safety=safety, evaluation=evaluation)
    graph = _PolicyGraph(res.model.actor).eval()
    x = np.random.default_rng(0).standard_normal((2, res.model.actor_dim)).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_path = Path(tmp) / out.name
        onnx_log = logging.getLogger("torch.onnx")
        level = onnx_log.level
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (torch.from_numpy(x),), dynamo=True, opset_version=20,
                                        input_names=["obs"], output_names=["action"],
                                        dynamic_shapes={"obs": {0: torch.export.Dim("batch", min=1, max=4096)}})
        onnx_log.setLevel(level)
        program.model.metadata_props[CONTRACT_KEY] = contract.to_json()
        program.save(str(tmp_path), external_data=False)
        art = load_artifact(tmp_path, robot="g1_12dof")
        with torch.no_grad():
            ref = graph(torch.from_numpy(x)).numpy()
        diff = float(np.abs(ref - art.policy(x)).max())
        if diff > 1e-5:
            raise OnboardError(f"ONNX Runtime differs from torch by {diff:.2e}", file=str(checkpoint),
                               field="parity", fix="check the exporter version; nothing was written")
        os.replace(tmp_path, out)
    return contract


# ---------------------------------------------------------------- evaluation
def torch_act_fn(res: HumanoidTrainResult, num_envs: int | None = None):
    """Deterministic torch policy (mean): obs (n, obs_dim) -> PD targets (n, 12) [rad], inside the same
    joint-stream limits as in training when the run used them (``num_envs`` rows)."""
    limited = res.config.stream_limits and num_envs is not None
    state = {"filters": None, "limiter": StreamLimits(num_envs, 0.02) if limited else None}

    def act(obs, env, reset_idx=None):
        lim = state["limiter"]
        if reset_idx is not None:
            if lim is not None:
                lim.reset(reset_idx, [env.robot_state(i)["q"] for i in reset_idx])
            return None
        with torch.no_grad():
            mu = np.clip(res.model.actor(torch.as_tensor(res.norm.actor(obs))).numpy(), -ACTION_CLIP, ACTION_CLIP)
        target = env.default_pose + ACTION_SCALE * mu[:, :12]
        target = target if lim is None else lim(target)
        return np.c_[target, clock_rate(mu[:, 12])] if res.config.clock_action else target
    if limited:
        act.state = state
    act.clock = res.config.clock_action     # returns (n, 13): targets and the gait clock's rate
    act.gait_period_s = res.config.gait_period_s
    return act


def runtime_act_fn(artifact: str | Path, num_envs: int, safety: bool = True):
    """The artifact through ``PolicyRuntime`` (ONNX Runtime) and one safety filter per robot."""
    from onboard.paths import config_dir
    from onboard.spec import load_robot
    from policies.runtime import PolicyRuntime
    from sim2real.safety import SafetyFilter
    from sim2real.safety_envelope import load_envelope
    filters = None
    if safety:
        profile = load_robot("g1_12dof")
        envelope = load_envelope(profile, config_dir() / "safety" / "g1_12dof.yaml")
        # Episodes start standing with the policy in charge: on the robot the 2 s ramp to the default
        # pose (HumanoidSupervisor RAMP) happens hanging on the gantry, and PD alone cannot stand it.
        envelope.ramp_in_s = 0.0
        filters = [SafetyFilter(profile, envelope) for _ in range(num_envs)]
    rt = PolicyRuntime(artifact, robot="g1_12dof", safety=filters, num_envs=num_envs)
    state = {"t": np.zeros(num_envs), "rt": rt, "filters": filters}
    period = gait_period_of_contract(rt.contract, str(artifact))

    def act(obs, env, reset_idx=None):
        if reset_idx is not None:
            state["t"][reset_idx] = 0.0
            if filters is not None:
                rt.reset_envs(reset_idx, [env.robot_state(i) for i in reset_idx], t=0.0)
            return None
        states = [env.robot_state(i) for i in range(env.num_envs)] if filters is not None else None
        cmd = rt.act_batch(env.split_obs(obs), t=state["t"].copy(), states=states)
        state["t"] += env.dt_s
        return cmd
    act.state = state
    act.gait_period_s = period      # the env builds the observation with the artifact's own gait period
    return act


FATAL_PUSH_S = 2.5      # a fall this soon after a push is charged to that push (evaluate's per-push outcome)


def evaluate(act_fn, *, task: str = "stand", episodes: int = 100, dr=True, seed: int = 10_000,
             num_envs: int = 50, history: int = 5, episode_s: float = 20.0, command=None,
             make_env=None, gantry_s: tuple | None = None) -> dict:
    """Survival of ``episode_s`` episodes (pushes and DR per the task's YAML) and velocity tracking.

    ``act_fn(obs, env) -> PD targets (n, 12)``; ``command`` (3,) fixes the walk command.
    Held-out seeds: ``seed`` is far from the training seeds. Each env slot scores its first episode.
    ``make_env(n, seed)`` swaps the simulator (e.g. ``sim.g1_pybullet.G1PyBulletEnv`` for sim-to-sim).
    ``gantry_s`` (low, high): every episode starts on the gantry for U(low, high) s with the policy acting,
    then is let go (the deployment's start, ``humanoid_sim_node``). The gait period is the policy's own
    (``act_fn.gait_period_s``: its config, or its artifact's contract)."""
    period = getattr(act_fn, "gait_period_s", GAIT_PERIOD_S)
    fell, lin_err, yaw_err, lengths, dampings, pushes = [], [], [], [], 0, []
    clock = getattr(act_fn, "clock", False)          # a policy that paces the gait clock (torch only)
    if clock and make_env is not None:
        raise OnboardError("a clock-pacing policy runs only in the MuJoCo env", field="clock_action",
                           fix="evaluate it without make_env")
    rounds = math.ceil(episodes / num_envs)
    for r in range(rounds):
        n = min(num_envs, episodes - r * num_envs)
        env = (make_env(n, seed + r) if make_env is not None else
               HumanoidVecEnv(n, task=task, dr=dr, seed=seed + r, history=history, episode_s=episode_s,
                              clock_action=clock, gait_period_s=period,
                              **({} if gantry_s is None else {"gantry_starts": 1.0, "gantry_s": gantry_s})))
        if getattr(env, "gait_period_s", period) != period:
            raise OnboardError(f"the env's gait period {env.gait_period_s} s is not the policy's {period} s",
                               field="gait_period_s",
                               fix="build make_env's env with gait_period_s=act_fn.gait_period_s")
        obs, _ = env.reset()
        if hasattr(act_fn, "state"):
            act_fn(obs, env, reset_idx=np.arange(n))
        if hasattr(env, "push_log"):
            env.push_log = []
        slot_pushes = [[] for _ in range(n)]      # (episode time [s], |dv| [m/s]) of each slot's first episode
        got = np.zeros(n, bool)
        f, le, ye, ln = np.zeros(n, bool), np.zeros(n), np.zeros(n), np.zeros(n)
        for _ in range(env.max_steps):
            if command is not None:
                env.command[:] = command
            target = act_fn(obs, env)
            obs, _, _, _, info = env.step_targets_clock(target) if clock else env.step_targets(target)
            if getattr(env, "push_log", None):
                for i, t_s, dvx, dvy in env.push_log:
                    if not got[i]:
                        slot_pushes[i].append((t_s, math.hypot(dvx, dvy)))
                env.push_log.clear()
            if "done_idx" in info:
                for j, i in enumerate(info["done_idx"]):
                    if not got[i]:
                        got[i] = True
                        f[i], le[i], ye[i] = info["episode_fell"][j], info["episode_lin_vel_err"][j], \
                            info["episode_yaw_rate_err"][j]
                        ln[i] = info["episode_steps"][j] * env.dt_s
                        # A push is fatal when the robot fell within FATAL_PUSH_S of it.
                        pushes += [(mag, bool(f[i] and ln[i] - t_s <= FATAL_PUSH_S)) for t_s, mag in slot_pushes[i]]
                if hasattr(act_fn, "state"):
                    act_fn(obs, env, reset_idx=info["done_idx"])
            if got.all():
                break
        if hasattr(act_fn, "state") and act_fn.state.get("filters"):
            dampings += sum(int(fl.counts.get("attitude", 0) > 0) for fl in act_fn.state["filters"])
        fell += f.tolist()
        lin_err += le.tolist()
        yaw_err += ye.tolist()
        lengths += ln.tolist()
    fell = np.asarray(fell)
    ok = ~fell
    return {"episodes": len(fell), "survival": float(ok.mean()), "falls": int(fell.sum()),
            "mean_episode_s": float(np.mean(lengths)),
            # Tracking is scored on the episodes that lasted; None (JSON null) when none did.
            "lin_vel_err_m_s": float(np.mean(np.asarray(lin_err)[ok])) if ok.any() else None,
            "yaw_rate_err_rad_s": float(np.mean(np.asarray(yaw_err)[ok])) if ok.any() else None,
            "attitude_damping_episodes": dampings,
            # Each push in the scored episodes: [|dv| m/s, fatal (a fall within FATAL_PUSH_S)].
            "pushes": [[round(m, 4), k] for m, k in pushes]}


# ---------------------------------------------------------------- command line
def evaluate_artifacts(prefix: str, *, task: str = "stand", episodes: int = 100, pybullet_episodes: int = 10,
                       log=print) -> dict:
    """The measured table: torch policy, the ONNX artifact through the runtime + safety filter
    (MuJoCo, DR, pushes), and the same artifact in PyBullet (nominal physics, pushes)."""
    res, _ = load_checkpoint(f"{prefix}.pt")
    H = res.config.history
    out = {}
    out["torch_mujoco_dr"] = evaluate(torch_act_fn(res, min(50, episodes)), task=task, episodes=episodes,
                                      history=H, num_envs=min(50, episodes))
    log(json.dumps({"torch_mujoco_dr": out["torch_mujoco_dr"]}))
    out["runtime_safety_mujoco_dr"] = evaluate(runtime_act_fn(f"{prefix}.onnx", min(50, episodes)), task=task,
                                               episodes=episodes, history=H, num_envs=min(50, episodes))
    log(json.dumps({"runtime_safety_mujoco_dr": out["runtime_safety_mujoco_dr"]}))
    if pybullet_episodes:
        from sim.g1_pybullet import G1PyBulletEnv
        act = runtime_act_fn(f"{prefix}.onnx", 1)
        out["runtime_safety_pybullet"] = evaluate(
            act, task=task, episodes=pybullet_episodes, history=H, num_envs=1,
            make_env=lambda n, seed: G1PyBulletEnv(seed=seed, history=H, task=task,
                                                   gait_period_s=act.gait_period_s))
        log(json.dumps({"runtime_safety_pybullet": out["runtime_safety_pybullet"]}))
    if task == "walk":
        for vx in (0.3, 0.5):
            out[f"walk_vx_{vx}"] = evaluate(torch_act_fn(res, min(episodes, 50)), task=task, episodes=min(episodes, 50), history=H,
                                            command=np.array([vx, 0.0, 0.0]))
            log(json.dumps({f"walk_vx_{vx}": out[f"walk_vx_{vx}"]}))
    return out


def main(argv=None) -> int:
    """``python -m policies.humanoid_ppo --task stand --max-wall-s 840 --out runs/g1/stand`` trains, saves
    ``<out>.pt``, exports ``<out>.onnx``; ``--eval-only`` evaluates an existing ``<out>.pt/.onnx``."""
    import argparse
    ap = argparse.ArgumentParser(description="PPO (asymmetric critic, history) for the G1 legs")
    ap.add_argument("--task", default="stand", choices=["stand", "walk"])
    ap.add_argument("--total-steps", type=int, default=HumanoidPPOConfig.total_steps)
    ap.add_argument("--num-envs", type=int, default=HumanoidPPOConfig.num_envs)
    ap.add_argument("--history", type=int, default=HumanoidPPOConfig.history)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wall-s", type=float, default=0.0)
    ap.add_argument("--no-dr", action="store_true")
    ap.add_argument("--resume", help="checkpoint to continue from (weights and statistics)")
    ap.add_argument("--step-in-place", action="store_true",
                    help="stand: reward the gait (stance/swing by phase) at zero command too: march in place")
    ap.add_argument("--push-curriculum", action="store_true",
                    help="start pushes at --push-start x the YAML's size and raise them as falls get rare")
    ap.add_argument("--push-start", type=float, default=HumanoidPPOConfig.push_start)
    ap.add_argument("--gait-reference", type=float, default=0.0, metavar="RAD",
                    help="stand/walk: the actor adds a stepping-in-place reference of this amplitude (0.3 lifts "
                         "the feet about 6 cm); PPO learns the balance around it. Use with --step-in-place")
    ap.add_argument("--workers", type=int, default=1,
                    help="step the robots in this many processes (2 on a 2-core machine; speed-up measured by "
                         "bench/bench_humanoid_env.py --workers 2)")
    ap.add_argument("--reference-reward", action="store_true",
                    help="with --gait-reference: reward the knees for following it, so the policy keeps stepping")
    ap.add_argument("--force-step", action="store_true",
                    help="with --gait-reference: the knees never flex less than the reference, so the policy "
                         "must balance while stepping instead of cancelling the step")
    ap.add_argument("--early-touchdown", action="store_true",
                    help="with --force-step: force the knee flexion only while the reference lift rises, so a "
                         "swing foot may land early (a robot pushed toward its stance leg can then free that "
                         "leg for a step sooner). Measured worse: 32%% against 64%% (docs/humanoid.md, session 9)")
    ap.add_argument("--side-step", type=float, default=0.0, metavar="V0",
                    help="with --estimator --gait-reference: when the estimated sideways velocity exceeds V0 m/s "
                         "(fully at 2 V0), the reference lifts the leg on that side at once and lowers the other, "
                         "whatever the gait clock says (about 0.3); the clock's step timing otherwise makes a "
                         "robot pushed toward its stance leg wait up to 0.4 s for the leg it must step with. "
                         "Measured worse: 4%% against 64%% (docs/humanoid.md, session 9)")
    ap.add_argument("--async-rollout", action="store_true",
                    help="step all robots in one worker process (with a copy of the policy; it also fits the "
                         "velocity estimator) while this process runs the PPO update, so on two cores neither "
                         "waits; each update learns from the rollout of the weights one update older (policy "
                         "lag 1) with decoupled clipping. Replaces --workers")
    ap.add_argument("--update-threads", type=int, default=0, metavar="N",
                    help="torch threads for the PPO update and the estimator fit (default: --workers, since "
                         "the env workers idle meanwhile)")
    ap.add_argument("--symmetry", action="store_true",
                    help="make the actor left/right mirror-equivariant by construction: a push to the left "
                         "gets the mirror image of the answer to a push to the right")
    ap.add_argument("--capture-reward", type=float, default=0.0, metavar="W",
                    help="reward each touchdown near the capture point (the spot that stops the body), weight W "
                         "(about 5); shapes where a pushed robot steps")
    ap.add_argument("--estimator", action="store_true",
                    help="learn the base velocity from the observation history (regression on the simulator's "
                         "true velocity, inside the exported graph) and feed the estimate to the actor")
    ap.add_argument("--placement-gain", type=float, default=0.0, metavar="K",
                    help="with --estimator and --gait-reference: the reference swings each foot K rad per m/s "
                         "of estimated velocity toward where a step stops the body (about 0.4)")
    ap.add_argument("--gantry-starts", type=float, default=0.0, metavar="FRAC",
                    help="this fraction of training episodes starts with the pelvis held for 0-1.5 s while the "
                         "policy acts, then let go, as when humanoid_sim_node's gantry releases a robot whose "
                         "policy is already ACTIVE (about 0.3)")
    ap.add_argument("--physics-dt", type=float, default=HumanoidPPOConfig.physics_dt_s, metavar="S",
                    help="the training sim's physics and PD step (0.002 = the reference sim; 0.005 = legged_gym's "
                         "200 Hz: the env steps 1.97x, PPO training 1.23x as fast, bench_humanoid_env --physics-dt). "
                         "Evaluation always runs at 0.002, so the figures include the transfer")
    ap.add_argument("--gait-period", type=float, default=HumanoidPPOConfig.gait_period_s, metavar="S",
                    help="the gait clock's period, one left + one right step (0.8 = unitree_rl_gym's G1; 0.3-1.2). "
                         "A shorter period gives a pushed robot its next step sooner. The contract records it "
                         "(extra.gait_period_s) and the evaluation, sim2sim and the robot nodes run the policy with it")
    ap.add_argument("--clock-action", action="store_true",
                    help="the policy paces the gait clock: a 13th action runs it at 0.5x-2.5x real time, so a "
                         "robot pushed toward its stance leg can hurry that leg's turn to step. Torch evaluation "
                         "only: the artifact contract does not carry the clock yet, export refuses it")
    ap.add_argument("--ent-coef", type=float, default=HumanoidPPOConfig.ent_coef,
                    help="entropy bonus (0: let the exploration noise shrink as the policy firms up)")
    ap.add_argument("--update-epochs", type=int, default=HumanoidPPOConfig.update_epochs,
                    help="passes over each rollout in the PPO update and the estimator fit; the learning rate "
                         "adapts to the KL target either way, so fewer passes make more updates per minute")
    ap.add_argument("--dr-config", default="", help="training DR YAML (default: the task's; evaluation always "
                                                    "uses the task's own YAML)")
    ap.add_argument("--final-std", type=float, default=0.0, metavar="S",
                    help="over the last --std-anneal-frac of training (of --max-wall-s when set), cap the "
                         "exploration noise down to S (log-linear, per joint; 0 = off). The deployed policy is "
                         "the noise-free mean, so the last updates learn nearer to it")
    ap.add_argument("--std-anneal-frac", type=float, default=HumanoidPPOConfig.std_anneal_frac, metavar="F",
                    help="with --final-std: the last share of training that anneals the noise (0-1, default 0.3)")
    ap.add_argument("--average-frac", type=float, default=0.0, metavar="F",
                    help="> 0: keep the average of the actor's weights over the last F of training (0 < F < 1); "
                         "the last weights are also written, as <out>_last.pt/.onnx")
    ap.add_argument("--average-every", type=int, default=HumanoidPPOConfig.average_every, metavar="N",
                    help="updates between the averaged snapshots (with --average-frac)")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--pybullet-episodes", type=int, default=10)
    ap.add_argument("--eval-only", action="store_true", help="evaluate <out>.pt / <out>.onnx, no training")
    ap.add_argument("--out", required=True, help="path prefix for <out>.pt and <out>.onnx")
    a = ap.parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731
    if not a.eval_only:
        cfg = HumanoidPPOConfig(task=a.task, total_steps=a.total_steps, num_envs=a.num_envs, history=a.history,
                                seed=a.seed, dr=not a.no_dr, max_wall_s=a.max_wall_s, resume=a.resume or "",
                                step_in_place=a.step_in_place, push_curriculum=a.push_curriculum,
                                push_start=a.push_start, dr_config=a.dr_config, gait_reference=a.gait_reference,
                                symmetry=a.symmetry, workers=a.workers, reference_reward=a.reference_reward,
                                force_step=a.force_step, ent_coef=a.ent_coef, update_epochs=a.update_epochs,
                                early_touchdown=a.early_touchdown,
                                update_threads=a.update_threads, side_step=a.side_step,
                                capture_reward=a.capture_reward, estimator=a.estimator,
                                placement_gain=a.placement_gain, gantry_starts=a.gantry_starts,
                                physics_dt_s=a.physics_dt, clock_action=a.clock_action,
                                async_rollout=a.async_rollout, gait_period_s=a.gait_period,
                                final_std=a.final_std, std_anneal_frac=a.std_anneal_frac,
                                average_frac=a.average_frac, average_every=a.average_every)
        res = train(cfg, log=log)
        ck = save_checkpoint(res, f"{a.out}.pt")
        if not a.clock_action:
            export_humanoid(ck, f"{a.out}.onnx")
        if res.last_state is not None:      # the last weights beside the average, to compare them
            averaged = {k: v.clone() for k, v in res.model.state_dict().items()}
            res.model.load_state_dict(res.last_state)
            last = save_checkpoint(res, f"{a.out}_last.pt")
            res.model.load_state_dict(averaged)
            if not a.clock_action:
                export_humanoid(last, f"{a.out}_last.onnx")
        log(json.dumps({"checkpoint": str(ck), "artifact": None if a.clock_action else f"{a.out}.onnx",
                        "train_wall_s": round(res.wall_s, 1), "env_steps": res.env_steps}))
    if a.eval_episodes and a.clock_action:      # no artifact: the torch policy in the MuJoCo env, DR + pushes
        res, _ = load_checkpoint(f"{a.out}.pt")
        r = evaluate(torch_act_fn(res, min(50, a.eval_episodes)), task=a.task, episodes=a.eval_episodes,
                     num_envs=min(50, a.eval_episodes), history=res.config.history)
        log(json.dumps({"evaluation": "torch_mujoco_dr", **{k: v for k, v in r.items() if k != "pushes"}}))
    elif a.eval_episodes:
        evaluate_artifacts(a.out, task=a.task, episodes=a.eval_episodes, pybullet_episodes=a.pybullet_episodes,
                           log=log)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except OnboardError as exc:          # bad options: the error names the field and the fix; exit 2
        print(f"policies.humanoid_ppo: error: {exc}", file=sys.stderr)
        raise SystemExit(2)
