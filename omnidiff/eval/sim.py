"""Closed-loop evaluation of a `VLAPolicy` in MetaWorld: does the robot solve the task?

The policy sees what the dataset builder recorded (the same camera, frame size and proprio
layout from `omnidiff.data.sources.metaworld`) and is asked for one action per step; its executor
decides when to decode a new chunk (`omnidiff.pipelines.chunk_execution`). Success is MetaWorld's ``info["success"]``.
Environments are placed by seeds disjoint from the builder's training seeds when the caller
passes fresh ones.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class PolicyEpisode:
    task: str
    seed: int
    success: bool
    steps: int
    frames: list  # a few PIL frames for a filmstrip


def run_policy(policy, task: str, seed: int, *, instruction: str | None = None, size: int = 64, max_steps: int = 150,
               camera: str | None = None, keep_frames: int = 6) -> PolicyEpisode:
    """One closed-loop episode of ``policy`` on ``task``."""
    from omnidiff.data.sources import metaworld as mw

    mw.check_task(task)
    instruction = instruction or mw.instructions(task)[0]
    env = mw.make_env(task, seed)
    renderer = mw.FrameRenderer(env, size, camera or mw.DEFAULT_CAMERA)
    policy.reset()
    frames, success, steps = [], False, 0
    try:
        obs, _ = env.reset()
        for steps in range(1, max_steps + 1):  # noqa: B007 (steps is read after the loop)
            image = Image.fromarray(renderer.render())
            if len(frames) < keep_frames and (steps - 1) % max(1, max_steps // keep_frames) == 0:
                frames.append(image)
            proprio = np.asarray(obs[: mw.PROPRIO_DIM], dtype=np.float32)
            action = np.clip(policy.act(image, instruction, proprio, seed=seed * 1000 + steps), -1.0, 1.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obs, _, _, truncated, info = env.step(action.astype(np.float32))
            if info.get("success"):
                success = True
                break
            if truncated:
                break
    finally:
        renderer.close()
        env.close()
    return PolicyEpisode(task=task, seed=int(seed), success=success, steps=steps, frames=frames)


def success_rates(policy, tasks: list[str], seeds: list[int], **kwargs) -> tuple[dict, list[PolicyEpisode]]:
    """Success rate per task (and overall) over the given seeds."""
    episodes = [run_policy(policy, t, s, **kwargs) for t in tasks for s in seeds]
    rates = {t: float(np.mean([e.success for e in episodes if e.task == t])) for t in tasks}
    rates["overall"] = float(np.mean([e.success for e in episodes])) if episodes else 0.0
    return rates, episodes
