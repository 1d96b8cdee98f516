"""Tasks: one file per task, all in one explicit dict (sequence formats: docs/design.md, "Task sequences").

Keys are the task names used in configs, batches (``tasks``) and ``infer.py`` commands; the long
names (``captioning``, ``text_to_image``) are accepted by `get_task` as aliases.
"""

from omnidiff.tasks.asr import ASRTask
from omnidiff.tasks.base import Task, pad_answer
from omnidiff.tasks.captioning import CaptioningTask
from omnidiff.tasks.text import TextTask
from omnidiff.tasks.text_to_image import TextToImageTask
from omnidiff.tasks.tts import TTSTask
from omnidiff.tasks.vla import VLATask
from omnidiff.tasks.vqa import VQATask

TASKS: dict[str, Task] = {
    "caption": CaptioningTask(),
    "vqa": VQATask(),
    "t2i": TextToImageTask(),
    "asr": ASRTask(),
    "tts": TTSTask(),
    "vla": VLATask(),
    "text": TextTask(),
}
ALIASES = {"captioning": "caption", "text_to_image": "t2i"}


def get_task(name: str) -> Task:
    name = ALIASES.get(name, name)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["ALIASES", "TASKS", "Task", "get_task", "pad_answer"]
