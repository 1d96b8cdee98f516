"""Build MetaWorld expert demonstrations: ``python data/build_robot.py --out runs/data/robot --num 50 --seed 0``.

``--num`` counts *episodes* (attempted), split 90/5/5 into train/val/test by episode, so no
episode has steps in two splits. Episode i of a split runs task ``tasks[(first + i) % len(tasks)]``
(tasks take turns) placed by seed ``default_rng([split seed, i])``, which is stored in the sample
json: any episode can be replayed with `omnidiff.data.sources.metaworld.rollout(task, seed)`.
Episodes end at the first successful step or after ``--max-steps``; failed episodes are dropped
unless ``--keep-failed``.

One sample per step (format in `omnidiff.data`): ``png`` observation (``--size`` px, camera
``--camera``), ``actions.npy`` float32 [H, 4] the actions of steps t..t+H-1 (past the episode's
end the last action is repeated), ``proprio.npy`` float32 [4] (hand xyz, gripper opening), ``json``
``{"instruction", "paraphrases", "task", "episode", "step", "success", "seed", "episode_steps"}``.

``manifest.json`` adds to the usual counts: episodes attempted and kept per split and per task,
the success rate, rendered steps per second, and the per-dimension statistics of the train
split's actions and proprio states (what `tokenizers/fit_action_bins.py` fits).
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from omnidiff.data.builder import parse_args, run_builder, write_split  # noqa: E402

DEFAULT_TASKS = "reach-v3,push-v3,drawer-open-v3,door-open-v3,button-press-topdown-v3"


def add_args(parser) -> None:
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated MetaWorld task names")
    parser.add_argument("--size", type=int, default=64, help="observation side in pixels")
    parser.add_argument("--horizon", type=int, default=8, help="steps per action chunk (H)")
    parser.add_argument("--max-steps", type=int, default=150, help="episode length limit")
    parser.add_argument("--camera", default="corner4", help="MetaWorld camera (corner cameras are turned upright)")
    parser.add_argument("--keep-failed", action="store_true", help="also write episodes the expert did not solve")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that run and render episodes (the output does not depend on it)")


def action_chunks(actions_TD: np.ndarray, horizon: int) -> np.ndarray:
    """[T, D] -> [T, H, D]: row t holds actions t..t+H-1, the last action repeated past the end."""
    num_steps = actions_TD.shape[0]
    index = np.minimum(np.arange(num_steps)[:, None] + np.arange(horizon)[None, :], num_steps - 1)
    return actions_TD[index]


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def png_bytes(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def episode_samples(split: str, index: int, episode, horizon: int) -> list[dict]:
    """The webdataset samples of one episode, one per step."""
    from omnidiff.data.sources import metaworld as mw

    texts = mw.instructions(episode.task)
    chunks = action_chunks(episode.actions, horizon)
    samples = []
    for step in range(episode.num_steps):
        meta = {"instruction": texts[0], "paraphrases": texts[1:], "task": episode.task, "episode": index,
                "step": step, "success": episode.succeeded, "seed": episode.seed,
                "episode_steps": episode.num_steps}
        samples.append({"__key__": f"{split}-{index:06d}-{step:04d}", "png": png_bytes(episode.frames[step]),
                        "actions.npy": npy_bytes(chunks[step]), "proprio.npy": npy_bytes(episode.proprio[step]),
                        "json": meta})
    return samples


def column_stats(rows: list[np.ndarray]) -> dict | None:
    """Per-dimension mean/std/min/max/1st/99th percentile of stacked rows (None when empty)."""
    if not rows:
        return None
    x = np.concatenate(rows).astype(np.float64)
    return {"count": int(x.shape[0]), "mean": x.mean(0).round(5).tolist(), "std": x.std(0).round(5).tolist(),
            "min": x.min(0).round(5).tolist(), "max": x.max(0).round(5).tolist(),
            "p01": np.percentile(x, 1, axis=0).round(5).tolist(), "p99": np.percentile(x, 99, axis=0).round(5).tolist()}


def main() -> dict:
    args = parse_args(__doc__.splitlines()[0], add_args, default_num=50)
    from omnidiff.data.sources import metaworld as mw  # after the argument checks: they need no simulator

    extra = args.extra
    size, horizon, max_steps, camera = extra["size"], extra["horizon"], extra["max_steps"], extra["camera"]
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}")
    if horizon < 1:
        raise ValueError(f"--horizon must be at least 1 step, got {horizon}")
    if max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {max_steps}")
    if extra["workers"] < 1:
        raise ValueError(f"--workers must be at least 1, got {extra['workers']}")
    if camera not in mw.CORNER_CAMERAS + mw.OTHER_CAMERAS:
        raise ValueError(f"unknown --camera {camera!r}; MetaWorld cameras: {list(mw.CORNER_CAMERAS + mw.OTHER_CAMERAS)}")
    mw.check_available()  # before any work: a missing MetaWorld or EGL is named with its make target
    tasks = [t.strip() for t in extra["tasks"].split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks is empty; give comma-separated MetaWorld task names such as reach-v3,push-v3")
    for task in tasks:
        mw.check_task(task)
        mw.instructions(task)

    from tqdm import tqdm

    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    per_task = {t: {"attempted": 0, "succeeded": 0, "kept_steps": 0} for t in tasks}
    train_actions: list[np.ndarray] = []
    train_proprio: list[np.ndarray] = []
    sim = {"steps": 0, "seconds": 0.0}
    manifest = {"dataset": "robot", "seed": args.seed, "sources": ["metaworld==3.1.1 scripted experts"],
                "tasks": tasks, "size": size, "horizon": horizon, "max_steps": max_steps, "camera": camera,
                "keep_failed": extra["keep_failed"], "action_dim": mw.ACTION_DIM, "proprio_dim": mw.PROPRIO_DIM,
                "splits": {}}
    first_episode = 0
    for split_index, (split, num_episodes) in enumerate(args.split_counts().items()):
        if num_episodes == 0:
            continue
        split_seed = args.seed * 1000 + split_index
        counts = {"attempted": 0, "kept": 0, "succeeded": 0}

        def samples(split=split, num_episodes=num_episodes, split_seed=split_seed, counts=counts,
                    first=first_episode):
            jobs = [(tasks[(first + i) % len(tasks)], int(np.random.default_rng([split_seed, i]).integers(2**31 - 1)))
                    for i in range(num_episodes)]
            episodes = mw.rollouts(jobs, extra["workers"], size=size, max_steps=max_steps, camera=camera)
            bar = tqdm(episodes, total=num_episodes, desc=f"robot/{split}", unit="episode")
            for i, (episode, seconds) in enumerate(bar):
                task = episode.task
                sim["seconds"] += seconds
                sim["steps"] += episode.num_steps
                counts["attempted"] += 1
                per_task[task]["attempted"] += 1
                counts["succeeded"] += int(episode.succeeded)
                per_task[task]["succeeded"] += int(episode.succeeded)
                bar.set_postfix(success=f"{counts['succeeded']}/{counts['attempted']}")
                if not (episode.succeeded or extra["keep_failed"]):
                    continue
                counts["kept"] += 1
                per_task[task]["kept_steps"] += episode.num_steps
                if split == "train":
                    train_actions.append(episode.actions)
                    train_proprio.append(episode.proprio)
                yield from episode_samples(split, i, episode, horizon)

        written = write_split(args.out, split, samples(), args.shard_size)
        manifest["splits"][split] = {**written, "episodes_attempted": counts["attempted"],
                                     "episodes_kept": counts["kept"], "episodes_succeeded": counts["succeeded"]}
        first_episode += num_episodes
    attempted = sum(v["attempted"] for v in per_task.values())
    manifest["per_task"] = per_task
    manifest["success_rate"] = round(sum(v["succeeded"] for v in per_task.values()) / max(attempted, 1), 4)
    # per worker: the seconds are each episode's own, summed over processes
    manifest["rendered_steps_per_second"] = round(sim["steps"] / max(sim["seconds"], 1e-9), 1)
    manifest["workers"] = extra["workers"]
    manifest["train_action_stats"] = column_stats(train_actions)
    manifest["train_proprio_stats"] = column_stats(train_proprio)
    manifest["build_seconds"] = round(time.time() - start, 2)
    manifest["bytes"] = sum(v["bytes"] for v in manifest["splits"].values())
    tmp = args.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(args.out / "manifest.json")
    print(f"success rate {manifest['success_rate']}, {manifest['rendered_steps_per_second']} rendered steps/s, "
          f"{manifest['bytes'] / 1e6:.1f} MB")
    return manifest


if __name__ == "__main__":
    run_builder(main)
