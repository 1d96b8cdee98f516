"""Several noised copies of one answer against ONE encoding of their shared prefix.

Under ``prefix`` attention the prefix never sees the answer, so its hidden states are the same for
every noised copy of that answer. Complementary masking trains two copies per sample; written as
two rows, the prefix (600+ audio codes for ASR, 64+ image codes for a caption) is encoded twice.
Packed, each row holds the prefix once and the copies' answers side by side:

    [ pad.. prefix | answer copy 0 | answer copy 1 | ... ]        (C copies, A answer columns each)

with an attention pattern that keeps every copy exactly as it was in its own row:

- prefix queries see the prefix only (the prefix-DLM rule);
- a query of copy c sees the prefix and copy c, never another copy;
- copy c's column i has the rotary position it had in its own row (prefix length + i).

So the logits of every copy equal those of the unpacked rows (tested), the loss and its gradient
are the same, and the prefix costs one encoding instead of C. Answers are right-aligned by the
collator; rows whose answer is shorter than the batch's longest leave the unused answer slots as
padding (no query attends them, no loss reads them).

Shape legend: B batch, L tokens of a row, A answer columns, C copies, P = L + (C - 1) * A packed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedCopies:
    tokens: torch.Tensor  # [B, P]
    positions: torch.Tensor  # [B, P] rotary positions
    padding_mask: torch.Tensor  # [B, P] True = real token
    allowed: torch.Tensor  # [B, P, P] True = may attend
    masked: torch.Tensor  # [B, P] True where a copy's token was masked (the loss reads these)
    width: int  # A: answer columns per extra copy


def answer_width(answer_BL: torch.Tensor) -> int:
    """A: the answer columns every row's (right-aligned) answer fits in."""
    return int(answer_BL.sum(1).max())


def pack_copies(pad_BL: torch.Tensor, answer_BL: torch.Tensor, copies_t: list[torch.Tensor],
                copies_masked: list[torch.Tensor]) -> PackedCopies:
    """Pack C noised copies ``copies_t[c]`` [B, L] (masked where ``copies_masked[c]``) of one batch.

    The copies differ only on answer positions; the prefix is read from copy 0.
    """
    B, L = pad_BL.shape
    C, A = len(copies_t), answer_width(answer_BL)
    if C < 1 or any(x.shape != (B, L) for x in copies_t + copies_masked):
        raise ValueError(f"need at least one copy, each [B, L] = {(B, L)}")
    if not bool(answer_BL[:, L - A:].sum() == answer_BL.sum()):
        raise ValueError("answers must be right-aligned (the collator's layout) to share their prefix")
    ans_tail = answer_BL[:, L - A:]  # [B, A] which of the last A columns are answer in each row
    tokens = torch.cat([copies_t[0]] + [x[:, L - A:] for x in copies_t[1:]], 1)
    masked = torch.cat([copies_masked[0]] + [m[:, L - A:] & ans_tail for m in copies_masked[1:]], 1)
    pad = torch.cat([pad_BL] + [ans_tail] * (C - 1), 1)
    base_pos = (pad_BL.long().cumsum(1) - 1).clamp_min(0)
    positions = torch.cat([base_pos] + [base_pos[:, L - A:]] * (C - 1), 1)

    # copy id of each packed column: -1 on the row's prefix side, c on copy c's answer columns;
    # in the first L columns the prefix/answer split differs per row, so it is per row.
    copy_BP = torch.cat([torch.where(answer_BL, 0, -1)] +
                        [torch.where(ans_tail, c, -1) for c in range(1, C)], 1)
    is_prefix_BP = (copy_BP == -1)
    q_copy, k_copy = copy_BP.unsqueeze(2), copy_BP.unsqueeze(1)
    allowed = k_copy.eq(-1) | (q_copy.eq(k_copy) & ~q_copy.eq(-1))
    # prefix queries see only the prefix; the -1 columns beyond L are unused answer slots (padding)
    allowed &= ~(is_prefix_BP.unsqueeze(2) & ~is_prefix_BP.unsqueeze(1))
    return PackedCopies(tokens=tokens, positions=positions, padding_mask=pad, allowed=allowed, masked=masked,
                        width=A)


def packed_values(values_CB: torch.Tensor, L: int, width: int) -> torch.Tensor:
    """A per-(copy, row) value [C, B] spread over the packed columns [B, L + (C - 1) * width]."""
    C, B = values_CB.shape
    return torch.cat([values_CB[0].view(B, 1).expand(B, L)] +
                     [values_CB[c].view(B, 1).expand(B, width) for c in range(1, C)], 1)
