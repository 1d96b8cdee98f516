"""SmolLM2-135M-Instruct (``make smollm2``) in our `Transformer` with causal attention = HF's LlamaForCausalLM.

Slow (two 135M models on CPU, ~30 s). The held-out text is the start of the ``test`` split of the
offline corpus (``runs/data/text_long``, else ``runs/data/text``, as data/build_text.py writes it),
or, without a built corpus, the English paragraph below. Both models run in fp32 on the same
512 tokens; the weights are the dequantised Q4_1 GGUF weights (docs/adaptation.md). Run with
``pytest -q -s -m slow tests/models/test_smollm2_parity.py`` to see the numbers.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / "runs" / "pretrained" / "smollm2-135m"
CORPORA = [ROOT / "runs" / "data" / "text_long", ROOT / "runs" / "data" / "text"]
NUM_TOKENS = 512

PARAGRAPH = (
    "The ferry left the harbour a little after six, while the town was still grey and quiet. From the upper deck "
    "the passengers could watch the houses shrink into a line of white walls and red roofs, and then into nothing "
    "at all but a low smudge between the water and the sky. Most of them went below to find coffee and a seat out "
    "of the wind. A few stayed at the rail: an old man with a canvas bag at his feet, two students sharing a map "
    "that refused to fold the way it had been folded in the shop, and a woman who had been making this crossing "
    "every week for eleven years and still liked to see the island come up out of the morning haze. She knew the "
    "order in which things appeared. First the lighthouse, a pale needle that seemed to float above the sea; then "
    "the dark shoulder of the hill behind the village; and last the harbour wall, with its row of fishing boats "
    "painted blue and yellow and green. The students asked her whether the island had a bakery, and she laughed "
    "and told them it had two, and that the people who bought their bread at one would never be seen at the "
    "other. The old man said nothing, but he smiled, and when the ferry turned into the harbour he was the first "
    "to pick up his bag. Later that day the wind rose, the last boat back was cancelled, and the students learned "
    "that the small hotel above the post office had only one room left, a narrow one under the roof with a window "
    "that looked straight out over the water. They took it gladly. In the evening they walked along the shore, "
    "counting the lights of the mainland as they came on one by one, and agreed that being stranded was not the "
    "worst thing that could happen to two people who had nowhere in particular to be on Monday morning."
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").is_file(),
                       reason=f"{SMOLLM2.relative_to(ROOT)} is absent: run `make smollm2` to convert SmolLM2-135M"),
]


def held_out_text() -> tuple[str, str]:
    """(text, where it came from): the built corpus's test split, or the paragraph above."""
    from omnidiff.data.shards import ShardStream, split_shards

    for folder in CORPORA:
        if (folder / "manifest.json").is_file():
            pieces = []
            for sample in ShardStream(split_shards(folder, "test"), shuffle=False):
                if sample["__epoch__"] > 0 or sum(len(p) for p in pieces) > 6 * NUM_TOKENS:
                    break
                pieces.append(sample["txt"])
            return "\n".join(pieces), f"{folder.relative_to(ROOT)} (test split)"
    return PARAGRAPH, "the fixed paragraph in this test"


def perplexity(logits_LV: torch.Tensor, ids_L: torch.Tensor) -> float:
    return math.exp(float(F.cross_entropy(logits_LV[:-1].double(), ids_L[1:])))


def test_our_transformer_gives_hf_logits_and_perplexity():
    from transformers import AutoTokenizer, LlamaForCausalLM

    from omnidiff.models.from_causal_lm import load_causal_lm

    text, source = held_out_text()
    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM2), local_files_only=True)
    ids = torch.tensor(tokenizer(text).input_ids[:NUM_TOKENS])
    assert ids.numel() >= 300, f"need a few hundred tokens of held-out text, got {ids.numel()} from {source}"
    hf = LlamaForCausalLM.from_pretrained(str(SMOLLM2), dtype=torch.float32, local_files_only=True).eval()
    ours = load_causal_lm(SMOLLM2).eval()
    assert (ours.cfg.num_layers, ours.cfg.dim, ours.cfg.num_heads, ours.cfg.num_kv_heads) == (30, 576, 9, 3)
    assert ours.cfg.vocab_size == 49152 and ours.cfg.tie_embeddings and ours.cfg.rope_theta == 100000.0
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
        got = ours(ids[None], attention="causal")[0]
    max_diff = float((got - ref).abs().max())
    ppl_hf, ppl_ours = perplexity(ref, ids), perplexity(got, ids)
    rel = abs(ppl_ours - ppl_hf) / ppl_hf
    print(json.dumps({"text": source, "tokens": ids.numel(), "max_abs_logit_diff": max_diff,
                      "max_abs_logit": float(ref.abs().max()), "perplexity_hf": round(ppl_hf, 6),
                      "perplexity_ours": round(ppl_ours, 6), "perplexity_rel_diff": rel}))
    assert max_diff <= 1e-4
    assert rel < 1e-4
