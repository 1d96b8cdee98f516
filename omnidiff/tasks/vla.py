"""Robot action decoding: ``<bos><vla><image> obs </image> instruction [<proprio> state </proprio>] <action> | a_1..a_(H*D) </action> <eos>...``.

The instruction is the sample's ``json["instruction"]`` or one of its ``paraphrases`` (picked by
the sample's RNG, so the policy sees varied wording). The proprioceptive state is included when
``use_proprio`` is set (a sample without ``proprio.npy`` is then an error); it is binned by the action tokenizer's
``encode_proprio`` (the state has its own statistics, not the actions'). Action chunks are never cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from omnidiff.data.formatting import action_ids, fit_answer, need, require, sample_rng, specials, text_ids
from omnidiff.tasks.captioning import image_span_of


def pick_instruction(sample: dict) -> str:
    meta = require(sample, "json")
    options = [meta.get("instruction", "")] + list(meta.get("paraphrases", []))
    options = [o for o in options if isinstance(o, str) and o.strip()]
    if not options:
        raise ValueError(f"robot sample {sample.get('__key__', '?')} has no instruction (json['instruction'])")
    return options[int(sample_rng(sample, "instruction").integers(len(options)))]


@dataclass
class VLATask:
    name: ClassVar[str] = "vla"
    modalities: ClassVar[tuple[str, ...]] = ("image", "text", "action")
    use_proprio: bool = False

    def prompt(self, toks, vocab, image, instruction: str, proprio=None) -> torch.Tensor:
        """The prefix for an observation (PIL image), an instruction and optionally the robot state.

        It ends with ``<action>``, so the answer starts at the first action token (as the image of
        text-to-image starts after ``<image>``) and a fixed layout can be imposed at decoding time.
        """
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("the instruction is empty; say what the robot should do")
        parts = [specials(vocab, "<bos>", "<vla>"), image_span_of(image, toks, vocab), text_ids(toks, vocab, instruction)]
        if self.use_proprio:
            if proprio is None:
                raise ValueError("this policy was trained with use_proprio: pass the robot state (proprio)")
            action_tok = need(toks, "action")
            if not hasattr(action_tok, "encode_proprio"):
                raise ValueError("use_proprio needs an action tokenizer with encode_proprio (fitted state statistics)")
            state = torch.as_tensor(np.asarray(proprio, dtype=np.float32))
            state_ids = action_tok.to_global(vocab, action_tok.encode_proprio(state).reshape(-1))
            parts += [specials(vocab, "<proprio>"), state_ids.long(), specials(vocab, "</proprio>")]
        return torch.cat(parts + [specials(vocab, "<action>")])

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        proprio = sample.get("proprio.npy") if self.use_proprio else None
        if self.use_proprio and proprio is None:
            raise ValueError(f"robot sample {sample.get('__key__', '?')} has no proprio.npy but use_proprio is set")
        prefix = self.prompt(toks, vocab, require(sample, "png", "jpg", "jpeg"), pick_instruction(sample), proprio)
        chunk = require(sample, "actions.npy", "npy")
        answer = torch.cat([action_ids(toks, vocab, chunk), specials(vocab, "</action>")])
        return prefix, fit_answer(answer, answer_len, vocab.eos_id, f"the action chunk of sample {sample.get('__key__')}")

    def needed_answer_len(self, toks, manifest: dict) -> int:
        """One chunk of ``horizon`` steps x the action dims, and ``</action>``.

        The horizon is the dataset's (build_robot.py records it) or else the one the action
        tokenizer was fitted with.
        """
        action_tok = need(toks, "action")
        horizon = int(manifest.get("horizon", action_tok.horizon))
        return horizon * action_tok.action_dim + 1
