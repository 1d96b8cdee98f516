import numpy as np
import pytest

from omnidiff.pipelines.chunk_execution import ChunkQueue, TemporalEnsemble


def counting_decoder(horizon: int, dim: int = 2):
    """A decoder whose chunk decoded at call c predicts c * 100 + i for its step i."""
    calls = []

    def decode():
        c = len(calls)
        calls.append(c)
        return np.stack([np.full(dim, c * 100 + i, np.float32) for i in range(horizon)])

    return decode, calls


def test_chunk_queue_replays_the_first_actions_then_decodes_again():
    decode, calls = counting_decoder(4)
    queue = ChunkQueue(4, execute=2)
    got = [queue.next(decode)[0] for _ in range(5)]
    assert got == [0, 1, 100, 101, 200] and len(calls) == 3
    queue.reset()
    assert queue.next(decode)[0] == 300  # a reset drops what was left of the chunk


def test_chunk_queue_refuses_an_execute_count_outside_the_chunk():
    for bad in (0, 5, -1):
        with pytest.raises(ValueError, match="execute_steps must be in"):
            ChunkQueue(4, execute=bad)
    assert ChunkQueue(4).execute == 4


def test_temporal_ensemble_weights_every_chunk_that_reaches_the_step():
    decode, calls = counting_decoder(3)
    ens = TemporalEnsemble(3, decay=0.5)
    a0, a1, a2, a3 = (ens.next(decode) for _ in range(4))
    assert len(calls) == 4  # one chunk per step
    assert a0[0] == pytest.approx(0)
    w = np.exp(-0.5 * np.arange(3))
    assert a1[0] == pytest.approx((w[0] * 1 + w[1] * 100) / w[:2].sum(), rel=1e-6)  # step 1 of chunk 0, step 0 of chunk 1
    assert a2[0] == pytest.approx((w[0] * 2 + w[1] * 101 + w[2] * 200) / w.sum(), rel=1e-6)
    # at step 3 chunk 0 (3 actions) no longer reaches: chunks 1, 2, 3 are the oldest-first ensemble
    assert a3[0] == pytest.approx((w[0] * 102 + w[1] * 201 + w[2] * 300) / w.sum(), rel=1e-6)
    assert a3.dtype == np.float32 and a3.shape == (2,)


def test_temporal_ensemble_with_no_decay_is_the_plain_mean_and_refuses_bad_decays():
    decode, _ = counting_decoder(2)
    ens = TemporalEnsemble(2, decay=0)
    ens.next(decode)
    assert ens.next(decode)[1] == pytest.approx((1 + 100) / 2)
    for bad in (-0.1, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match="decay"):
            TemporalEnsemble(2, decay=bad)
