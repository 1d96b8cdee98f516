"""MetaWorld 3.1.1 manipulation tasks: environments, scripted experts, fast offscreen frames and instructions.

What this file owns:

- the task list (the 50 MT50 names such as ``"reach-v3"``, read from the installed package) and
  natural-language instructions with paraphrases for each task;
- `make_env`: a goal-observable environment whose object and goal positions are a pure function of
  the seed (the scripted experts read the goal from the observation, so it must be observable);
- `FrameRenderer`: offscreen RGB frames through MuJoCo's EGL backend with the expensive extras
  off (multisampling, shadows, reflections, skybox), measured ~5-8x faster than the defaults at
  64-128 px. The corner cameras of the MetaWorld scene are mounted with their up axis pointing at
  the floor, so their images are turned by 180 degrees (a rotation, not a mirror: left stays left);
- `rollout`: one expert episode -> per-step frame, proprio state, action and success flag;
  `rollouts`: many, in order, from several processes.

Proprio state (``PROPRIO_DIM`` = 4): the first four observation values, the end effector's xyz in
metres and how far the gripper fingers are apart (0 closed .. 1 open). Actions (``ACTION_DIM`` = 4):
xyz displacement of the hand (scaled by 1/100 m by the environment) and the gripper command, all
in [-1, 1]; the expert's raw output is clipped to that box before it is sent and stored, so the
stored action is exactly the one the robot executed.

``MUJOCO_GL`` must be chosen before MuJoCo is imported; importing this module sets it to ``egl``
unless the caller already chose (``make`` exports it too), so import it before ``metaworld``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from omnidiff.data.builder import MissingSystemPackage

# MuJoCo reads MUJOCO_GL once, when it is first imported: choose EGL before anything imports it.
os.environ.setdefault("MUJOCO_GL", "egl")

ACTION_DIM = 4
PROPRIO_DIM = 4
DEFAULT_CAMERA = "corner4"
CORNER_CAMERAS = ("corner", "corner2", "corner3", "corner4")  # rendered upside down by the scene: turned 180 degrees
OTHER_CAMERAS = ("topview", "behindGripper", "gripperPOV")

# One instruction and a few paraphrases per MT50 task; the first entry is the canonical instruction.
TASK_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly-v3": ("put the ring on the peg", "slide the ring down over the peg", "assemble the ring onto the peg"),
    "basketball-v3": ("put the ball in the basket", "dunk the ball into the hoop", "pick up the ball and drop it in the basket"),
    "bin-picking-v3": ("move the cube to the other bin", "pick the cube out of one bin and place it in the other",
                       "transfer the block between the bins"),
    "box-close-v3": ("close the box with its lid", "put the lid on the box", "cover the box"),
    "button-press-topdown-v3": ("press the button from the top", "push the button down from above",
                                "press down on the button"),
    "button-press-topdown-wall-v3": ("press the button from the top behind the wall",
                                     "reach over the wall and press the button down",
                                     "push the button down from above, past the wall"),
    "button-press-v3": ("press the button", "push the button in", "press the button on the box"),
    "button-press-wall-v3": ("press the button behind the wall", "reach around the wall and press the button",
                             "push the button past the wall"),
    "coffee-button-v3": ("press the coffee machine button", "push the button on the coffee machine",
                         "start the coffee machine"),
    "coffee-pull-v3": ("pull the mug away from the coffee machine", "take the mug out of the coffee machine",
                       "slide the cup back from the machine"),
    "coffee-push-v3": ("push the mug under the coffee machine", "slide the cup into the coffee machine",
                       "move the mug to the coffee machine"),
    "dial-turn-v3": ("turn the dial", "rotate the dial", "twist the knob around"),
    "disassemble-v3": ("take the ring off the peg", "pull the ring up off the peg", "remove the ring from the peg"),
    "door-close-v3": ("close the door", "push the door shut", "swing the door closed"),
    "door-lock-v3": ("lock the door", "turn the lock on the door", "rotate the door lock down"),
    "door-open-v3": ("open the door", "pull the door open", "swing the door open by its handle"),
    "door-unlock-v3": ("unlock the door", "turn the door lock open", "rotate the lock to unlock the door"),
    "hand-insert-v3": ("put the hand in the hole", "insert the gripper into the hole", "reach into the hole"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut", "slide the drawer closed"),
    "drawer-open-v3": ("open the drawer", "pull the drawer open", "slide the drawer out"),
    "faucet-open-v3": ("open the faucet", "turn the faucet on", "rotate the tap handle to open it"),
    "faucet-close-v3": ("close the faucet", "turn the faucet off", "rotate the tap handle to close it"),
    "hammer-v3": ("hammer the nail in", "pick up the hammer and drive the nail", "use the hammer on the nail"),
    "handle-press-side-v3": ("press the handle down from the side", "push the side handle down",
                             "press down the handle on the side"),
    "handle-press-v3": ("press the handle down", "push the handle down", "press down on the handle"),
    "handle-pull-side-v3": ("pull the handle up from the side", "lift the side handle", "pull up the handle on the side"),
    "handle-pull-v3": ("pull the handle up", "lift the handle", "pull up on the handle"),
    "lever-pull-v3": ("pull the lever up", "lift the lever", "raise the lever"),
    "pick-place-wall-v3": ("pick up the puck and place it at the goal behind the wall",
                           "lift the puck over the wall to the goal", "move the puck past the wall to the target"),
    "pick-out-of-hole-v3": ("pick the peg out of the hole", "lift the peg out of the hole",
                            "pull the peg up out of the hole"),
    "pick-place-v3": ("pick up the puck and place it at the goal", "lift the puck and put it on the target",
                      "move the puck through the air to the goal"),
    "plate-slide-v3": ("slide the plate into the goal", "push the plate into the net", "slide the plate forward"),
    "plate-slide-side-v3": ("slide the plate sideways into the goal", "push the plate sideways into the net",
                            "slide the plate to the side"),
    "plate-slide-back-v3": ("slide the plate back out of the goal", "pull the plate back from the net",
                            "slide the plate backwards"),
    "plate-slide-back-side-v3": ("slide the plate back sideways", "pull the plate sideways out of the net",
                                 "slide the plate back to the side"),
    "peg-insert-side-v3": ("insert the peg into the hole from the side", "push the peg sideways into the hole",
                           "put the peg in the side hole"),
    "peg-unplug-side-v3": ("unplug the peg from the side", "pull the peg sideways out of the hole",
                           "remove the peg from the side hole"),
    "soccer-v3": ("kick the ball into the goal", "push the soccer ball into the net", "score a goal with the ball"),
    "stick-push-v3": ("push the bottle with the stick", "use the stick to push the bottle to the goal",
                      "pick up the stick and push the bottle"),
    "stick-pull-v3": ("pull the bottle with the stick", "use the stick to pull the bottle to the goal",
                      "pick up the stick and pull the bottle"),
    "push-v3": ("push the puck to the goal", "slide the puck to the target", "move the puck along the table to the goal"),
    "push-wall-v3": ("push the puck to the goal around the wall", "slide the puck past the wall to the target",
                     "move the puck around the wall to the goal"),
    "push-back-v3": ("push the puck back to the goal", "slide the puck backwards to the target",
                     "pull the puck back to the goal"),
    "reach-v3": ("reach the goal", "move the gripper to the target", "put the hand at the goal position"),
    "reach-wall-v3": ("reach the goal behind the wall", "move the gripper over the wall to the target",
                      "put the hand at the goal past the wall"),
    "shelf-place-v3": ("put the block on the shelf", "place the cube on the shelf", "lift the block onto the shelf"),
    "sweep-into-v3": ("sweep the puck into the hole", "push the puck into the hole", "slide the puck into the hole"),
    "sweep-v3": ("sweep the puck off the table", "push the puck off the edge of the table", "sweep the block away"),
    "window-open-v3": ("open the window", "slide the window open", "push the window open sideways"),
    "window-close-v3": ("close the window", "slide the window shut", "push the window closed sideways"),
}


def _import_metaworld():
    """Import MuJoCo and MetaWorld, or a MissingSystemPackage that says how to install them."""
    try:
        import metaworld  # noqa: F401
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as err:
        raise MissingSystemPackage(f"MetaWorld/MuJoCo cannot be imported ({err}); run `make setup` (installs "
                                   f"metaworld==3.1.1 from requirements-data.txt)") from None
    return mujoco, ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE, ENV_POLICY_MAP


def check_available(size: int = 16) -> None:
    """Fail early, with the make target to run, if MetaWorld or offscreen EGL rendering is missing."""
    mujoco, _, _ = _import_metaworld()
    try:
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, size, size)
        renderer.update_scene(mujoco.MjData(model))
        renderer.render()
        renderer.close()
    except Exception as err:  # EGL/OpenGL errors come in several exception types
        raise MissingSystemPackage(
            f"MuJoCo cannot render offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({type(err).__name__}: "
            f"{err}); run `make data-deps` (installs libegl1/libgl1) and keep MUJOCO_GL=egl") from None


def valid_tasks() -> list[str]:
    """The MT50 task names of the installed MetaWorld that have a scripted expert, sorted."""
    _, envs, policies = _import_metaworld()
    return sorted(name.removesuffix("-goal-observable") for name in envs
                  if name.removesuffix("-goal-observable") in policies)


def check_task(task: str) -> str:
    """``task`` if MetaWorld has it (with an expert), else a ValueError listing the valid names."""
    tasks = valid_tasks()
    if task not in tasks:
        raise ValueError(f"unknown MetaWorld task {task!r}; valid tasks: {', '.join(tasks)}")
    return task


def instructions(task: str) -> list[str]:
    """Canonical instruction first, then paraphrases."""
    if task not in TASK_INSTRUCTIONS:
        raise ValueError(f"no instruction for MetaWorld task {task!r}; tasks with instructions: "
                         f"{', '.join(sorted(TASK_INSTRUCTIONS))}")
    return list(TASK_INSTRUCTIONS[task])


def make_env(task: str, seed: int):
    """A goal-observable environment for ``task``, reset, whose object/goal placement depends only on ``seed``."""
    _, envs, _ = _import_metaworld()
    check_task(task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium's passive checker complains about float64 observations
        env = envs[f"{task}-goal-observable"](seed=int(seed))
    return env


def expert_policy(task: str):
    """MetaWorld's scripted expert for ``task`` (``get_action(obs) -> action [4]``), deterministic."""
    _, _, policies = _import_metaworld()
    return policies[check_task(task)]()


class FrameRenderer:
    """Fast offscreen RGB frames of one environment's scene (close it, or use it as a context manager)."""

    def __init__(self, env, size: int = 64, camera: str = DEFAULT_CAMERA):
        mujoco, _, _ = _import_metaworld()
        if camera not in CORNER_CAMERAS + OTHER_CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; MetaWorld cameras: {list(CORNER_CAMERAS + OTHER_CAMERAS)}")
        if not 8 <= size <= 480:
            raise ValueError(f"frame size must be between 8 and 480 pixels, got {size}")
        self.camera, self.size = camera, size
        env.model.vis.quality.offsamples = 0  # no multisampling: the main cost at small sizes
        self._renderer = mujoco.Renderer(env.model, size, size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            self._renderer.scene.flags[flag] = False
        self._data = env.data

    def render(self) -> np.ndarray:
        """uint8 [size, size, 3] of the current simulation state, right way up."""
        self._renderer.update_scene(self._data, camera=self.camera)
        frame = self._renderer.render()
        if self.camera in CORNER_CAMERAS:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Episode:
    """One expert rollout; row t holds what was seen at step t and the action taken from it.

    Shapes: frames [T, S, S, 3] uint8, proprio [T, PROPRIO_DIM] float32, actions [T, ACTION_DIM]
    float32, success [T] bool (whether the task was solved after action t).
    """

    task: str
    seed: int
    frames: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    success: np.ndarray

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())


def rollout(task: str, seed: int, *, size: int = 64, max_steps: int = 150, camera: str = DEFAULT_CAMERA,
            stop_on_success: bool = True, render: bool = True) -> Episode:
    """Run the scripted expert on ``task`` placed by ``seed``.

    Args:
        size: frame side in pixels.
        max_steps: episode length limit (MetaWorld's own limit is 500).
        camera: MetaWorld camera name; corner cameras are turned the right way up.
        stop_on_success: end the episode at the first step that solves the task (that step is kept).
        render: False skips the frames (``frames`` is then empty, [0, size, size, 3]); for statistics only.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    env = make_env(task, seed)
    policy = expert_policy(task)
    renderer = FrameRenderer(env, size, camera) if render else None
    frames, proprio, actions, success = [], [], [], []
    try:
        obs, _ = env.reset()
        for _ in range(max_steps):
            if renderer is not None:
                frames.append(renderer.render())
            proprio.append(obs[:PROPRIO_DIM])
            with warnings.catch_warnings():
                # experts warn that their gains may exceed [-1, 1] (we clip), gymnasium about float64 observations
                warnings.simplefilter("ignore")
                action = np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)
                obs, _, _, truncated, info = env.step(action)
            actions.append(action)
            success.append(bool(info["success"]))
            if (stop_on_success and success[-1]) or truncated:
                break
    finally:
        if renderer is not None:
            renderer.close()
        env.close()
    frames_arr = np.stack(frames) if frames else np.zeros((0, size, size, 3), dtype=np.uint8)
    return Episode(task=task, seed=int(seed), frames=frames_arr, proprio=np.asarray(proprio, dtype=np.float32),
                   actions=np.asarray(actions, dtype=np.float32), success=np.asarray(success, dtype=bool))


def _timed_rollout(job: tuple[str, int], **kwargs) -> tuple[Episode, float]:
    t0 = time.time()
    episode = rollout(*job, **kwargs)
    return episode, time.time() - t0


def rollouts(jobs: list[tuple[str, int]], workers: int = 1, **kwargs) -> Iterator[tuple[Episode, float]]:
    """``rollout(task, seed, **kwargs)`` for each ``(task, seed)`` job, in job order, from ``workers`` processes.

    Yields ``(episode, seconds it took)``. An episode is fixed by its task and seed, so what comes out does not
    depend on ``workers``. Workers are spawned, not forked: an EGL context does not survive a fork.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    run = functools.partial(_timed_rollout, **kwargs)
    if workers == 1:
        yield from map(run, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(run, jobs)
