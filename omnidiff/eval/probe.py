"""Does a captioner read the picture? A teacher-forced attribute probe, free of decoding.

A caption can fail because the model does not see what is in the image, or because decoding many
tokens in parallel goes wrong. The probe separates the two: it gives the model the sample's own
canonical caption with only the words of one attribute masked (every colour word, or every shape
word) and scores the argmax of one forward at those columns against the truth. What is left of
the caption says which object each mask belongs to ("a <mask> circle, a <mask> square"), so the
only way to fill it is to look at the picture. Chance is one over the number of words of that
attribute (1/8 for colours, 1/4 for shapes); a model that only learnt the caption grammar sits near
it. Words the text tokenizer splits into several tokens are not probed (their first token alone
is not the word), and the number of probed columns is reported beside the score.
"""

from __future__ import annotations

import torch

from omnidiff.data.formatting import fit_answer, text_ids
from omnidiff.sampling.caches import Uncached
from omnidiff.sampling.loop import WithPromptInputs, left_pad


def probe_columns(tokenizer, ids_local: torch.Tensor, words: tuple[str, ...]) -> list[int]:
    """Columns of ``ids_local`` whose token, on its own, is one of ``words`` (leading space ignored)."""
    return [j for j, i in enumerate(ids_local.tolist()) if tokenizer.decode(torch.tensor([i])).strip() in words]


@torch.no_grad()
def attribute_probe(pipe, samples: list[dict], words: tuple[str, ...], answer_len: int,
                    batch_size: int = 16, other_picture: bool = False) -> dict:
    """``{"accuracy": share of probed columns filled right, "columns": how many}`` for ``words``.

    ``pipe``: a captioning pipeline; ``samples``: shard samples with a ``png`` and a canonical
    ``txt`` caption. Samples whose caption has none of ``words``, or does not fit in
    ``answer_len``, are skipped. ``other_picture``: each caption is shown the next probed sample's
    picture (codes and pixels) instead of its own. A model that reads the image falls towards chance;
    one that fills the words from the caption's grammar alone scores the same as with its own picture.
    """
    vocab, toks = pipe.vocab, pipe.tokenizers
    rows = []
    for s in samples:
        caption = s.get("txt") or ""
        answer = text_ids(toks, vocab, caption)
        cols = probe_columns(toks.text, toks.text.from_global(vocab, answer), words)
        if cols and answer.numel() <= answer_len:
            rows.append((s["png"].convert("RGB"), fit_answer(answer, answer_len, vocab.eos_id, "the caption"), cols))
    if other_picture and len(rows) > 1:
        rows = [(rows[(k + 1) % len(rows)][0], answer, cols) for k, (_, answer, cols) in enumerate(rows)]
    right = total = 0
    config = pipe.sampler  # its attention layout; the forward itself is uncached
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        images = [im for im, _, _ in chunk]
        prompts = [pipe.task_impl.prompt(toks, vocab, im) for im in images]
        prefix, pad = left_pad(prompts, vocab.pad_id, device=pipe.device)
        truth = torch.stack([a for _, a, _ in chunk]).to(pipe.device)
        masked = torch.zeros_like(truth, dtype=torch.bool)
        for b, (_, _, cols) in enumerate(chunk):
            masked[b, cols] = True
        inputs = pipe.image_inputs(prompts, images)
        model = pipe.model if inputs is None else WithPromptInputs(pipe.model, inputs.to(pipe.device), None)
        denoiser = Uncached(model, prefix, pad, answer_len, attention=config.attention, block_size=config.block_len,
                            shift=config.shift)
        denoiser.begin()
        logits = denoiser.logits(torch.where(masked, vocab.mask_id, truth), 0, answer_len)
        right += int((logits.argmax(-1) == truth)[masked].sum())
        total += int(masked.sum())
    return {"accuracy": round(right / total, 4) if total else None, "columns": total}
