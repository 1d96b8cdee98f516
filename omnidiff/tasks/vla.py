"""Robot action decoding: ``<bos><vla><image> obs </image> instruction [<proprio> state </proprio>] | <action> a_1..a_(H*D) </action> <eos>...``.

The instruction is the sample's ``json["instruction"]`` or one of its ``paraphrases`` (picked by
the sample's RNG, so the policy sees varied wording). The proprioceptive state is included when
``use_proprio`` is set and the sample has ``proprio.npy``; it is binned by the action tokenizer's
``encode_proprio`` (the state has its own statistics, not the actions'). Action chunks are never cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from omnidiff.data.formatting import action_ids, fit_answer, need, require, sample_rng, specials, text_ids
from omnidiff.tasks.captioning import image_span


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

    def format(self, sample: dict, toks, vocab, answer_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [specials(vocab, "<bos>", "<vla>"), image_span(sample, toks, vocab),
                 text_ids(toks, vocab, pick_instruction(sample))]
        if self.use_proprio and "proprio.npy" in sample:
            action_tok = need(toks, "action")
            if not hasattr(action_tok, "encode_proprio"):
                raise ValueError("use_proprio needs an action tokenizer with encode_proprio (fitted state statistics)")
            state = torch.as_tensor(np.asarray(sample["proprio.npy"], dtype=np.float32))
            state_ids = vocab.to_global("action", action_tok.encode_proprio(state).reshape(-1))
            parts += [specials(vocab, "<proprio>"), state_ids.long(), specials(vocab, "</proprio>")]
        chunk = require(sample, "actions.npy", "npy")
        answer = torch.cat([specials(vocab, "<action>"), action_ids(toks, vocab, chunk), specials(vocab, "</action>")])
        return torch.cat(parts), fit_answer(answer, answer_len, vocab.eos_id,
                                            f"the action chunk of sample {sample.get('__key__')}")
