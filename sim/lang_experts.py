"""Scripted experts for ``LangArmEnv``: the push and pick-and-place experts of ``sim.experts``, at the named cube.

Owns ``make_lang_expert(env)``. ``LangArmEnv`` exposes the named cube as the
expert's object (``env.ix``, ``env.object_pose()``, ``env.target_pos``), so the
experts plan unchanged; the one change is the push route: a cube in a side lane
is passed on its inner side (the outer side is near the edge of the arm's reach),
so the pusher never sweeps into a neighbouring lane's cube either.

Imports: numpy, sim. Never imports sim2real or policies.
"""
from __future__ import annotations

import numpy as np

from sim.experts import PickPlaceExpert, PushExpert


class LanePushExpert(PushExpert):
    def choose_side(self, rng) -> float:
        draw = rng.random()                   # drawn always, so the rest of the plan stays reproducible
        lane_y = self.env.object_pose()[0][1]
        if abs(lane_y) > 0.1:                 # side lane: go around on the side facing the centre
            return -float(np.sign(lane_y))
        return 1.0 if draw < 0.5 else -1.0


class LangExpert:
    """Dispatches to the push or pick-and-place expert by ``env.task_kind``; ``route`` names what it did."""

    def __init__(self, env):
        self.env = env
        self.experts = {"push": LanePushExpert(env), "pick_place": PickPlaceExpert(env)}
        self.active = None

    def reset(self, seed: int | None = None) -> None:
        for e in self.experts.values():
            e.reset(seed)
        self.active = None

    @property
    def route(self):
        if self.active is None:
            return None
        e = self.experts[self.active]
        return f"{self.active}:{e.route}" if e.route else self.active

    def act(self, obs=None) -> np.ndarray:
        self.active = self.env.task_kind
        return self.experts[self.active].act(obs)


def make_lang_expert(env) -> LangExpert:
    return LangExpert(env)


def run_lang_episode(env, expert, seed: int | None = None, options=None, record=None) -> dict:
    """Roll out one expert episode; ``record(obs, action)`` per step. Returns a summary."""
    obs, info = env.reset(seed=seed, options=options)
    expert.reset(seed=info["episode_seed"] % (2**32))
    steps = 0
    start = env.cube_positions()
    while True:
        action = expert.act(obs)
        if record is not None:
            record(obs, action)
        obs, _, terminated, truncated, step_info = env.step(action)
        steps += 1
        if terminated or truncated:
            break
    others = [i for i in range(len(start)) if i != env.goal_cube]
    moved = float(np.max(np.linalg.norm(env.cube_positions()[others] - start[others], axis=1)))
    return {"success": bool(step_info["success"]), "steps": steps, "route": expert.route, "task": info["task"],
            "colour": info["colour"], "slot": info["slot"], "instruction": info["instruction"],
            "others_moved_m": moved}
