"""Task evaluators: run a pipeline on held-out samples and score what it produced.

Each evaluator takes a pipeline and a list of decoded shard samples and returns ``(metrics,
records)``: a dict of numbers and one record per sample (inputs, reference, output) for a person
to read. Scores use what the builders know exactly: the scene attributes of a shapes image, the
digit label, the transcript, the recorded action chunk.

- caption: exact match with one of the references; for shape scenes the precision of the
  (colour, shape) pairs the caption names and the recall of the scene's shapes; for digits the
  accuracy of the digit word.
  Beside them, teacher-forced probes of the picture's colours, shapes and digit (`omnidiff.eval.probe`):
  the caption's own words of one attribute masked, filled by one forward, scored against the truth.
- vqa: exact-match accuracy (answers are single words).
- t2i: the fraction of scene objects whose colour and shape are read back from the generated image
  (`omnidiff.eval.image`), and of images with every object right.
- asr: word error rate against the transcript.
- tts: word error rate of Whisper tiny.en on the generated speech (and on the original recording,
  the ceiling).
- vla: mean absolute error of the predicted action chunk, in robot units and in bins, and the share
  of chunks whose mean error is under one bin.
"""

from __future__ import annotations

import re

import numpy as np

SHAPE_WORDS = ("circle", "square", "triangle", "diamond")
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_PAIR = re.compile(r"\b(" + "|".join(COLOUR_WORDS) + r")\s+(?:(?:small|large)\s+)?(" + "|".join(SHAPE_WORDS) + r")s?\b")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def caption_scores(caption: str, sample: dict) -> dict:
    """Scores of one caption against its sample's references and scene."""
    meta = sample.get("json") or {}
    refs = [_norm(c) for c in meta.get("captions", [])] or [_norm(sample.get("txt", ""))]
    out = {"exact": float(_norm(caption) in refs)}
    scene = meta.get("scene")
    if scene:
        truth = {(o["colour"], o["shape"]) for o in scene["objects"]}
        named = _PAIR.findall(_norm(caption))
        if named:
            out["pair_precision"] = sum(p in truth for p in named) / len(named)
        out["pair_recall"] = sum(p in set(named) for p in truth) / len(truth)
        shapes = {o["shape"] for o in scene["objects"]}
        words = set(_norm(caption).split())
        out["shape_recall"] = sum(s in words or s + "s" in words for s in shapes) / len(shapes)
    if "label" in meta:
        out["digit_correct"] = float(DIGIT_WORDS[int(meta["label"])] in _norm(caption).split())
    return out


def evaluate_caption(pipe, samples: list[dict], **kwargs) -> tuple[dict, list[dict]]:
    captions = pipe([s["png"] for s in samples], **kwargs)
    records, scores = [], []
    for s, c in zip(samples, captions, strict=True):
        sc = caption_scores(c, s)
        scores.append(sc)
        records.append({"key": s["__key__"], "caption": c, "reference": s.get("txt"), **sc})
    metrics = {k: _mean([sc[k] for sc in scores if k in sc]) for k in ("exact", "pair_precision", "pair_recall",
                                                                       "shape_recall", "digit_correct")}
    metrics |= caption_probes(pipe, samples, kwargs.get("answer_len") or 32)
    return {k: v for k, v in metrics.items() if v is not None} | {"n": len(samples)}, records


def caption_probes(pipe, samples: list[dict], answer_len: int) -> dict:
    """Teacher-forced reading of the picture (`omnidiff.eval.probe`): colour and shape words of the shape
    scenes, the digit word of the digit images (for a pipeline with a model); each also with every caption
    shown another sample's picture (``*_other_picture``): the gap between the two is what the model reads
    from the image rather than from the caption's grammar. ``colour_probe_one_object``: the colour probe on
    the one-object scenes alone, where seeing the colour is enough (no left-to-right binding)."""
    from omnidiff.eval.probe import attribute_probe

    if not hasattr(pipe, "model"):  # a plain callable that only captions: nothing to probe
        return {}
    scenes = [s for s in samples if (s.get("json") or {}).get("scene")]
    digits = [s for s in samples if "label" in (s.get("json") or {})]
    out = {}
    for name, group, words in (("colour_probe", scenes, COLOUR_WORDS), ("shape_probe", scenes, SHAPE_WORDS),
                               ("digit_probe", digits, DIGIT_WORDS)):
        if group:
            out[name] = attribute_probe(pipe, group, words, answer_len)["accuracy"]
            out[f"{name}_other_picture"] = attribute_probe(pipe, group, words, answer_len, other_picture=True)["accuracy"]
    single = [s for s in scenes if len(s["json"]["scene"].get("objects") or ()) == 1]
    if single:  # one object: its colour needs no binding to a place in the picture, only seeing it
        out["colour_probe_one_object"] = attribute_probe(pipe, single, COLOUR_WORDS, answer_len)["accuracy"]
    return out


def evaluate_vqa(pipe, samples: list[dict], **kwargs) -> tuple[dict, list[dict]]:
    pairs = []
    for s in samples:
        qa = (s.get("json") or {}).get("qa") or []
        if qa:
            rng = np.random.default_rng(len(pairs))
            pairs.append((s, *qa[int(rng.integers(len(qa)))]))
    if not pairs:
        raise ValueError("no samples with question/answer pairs (json['qa']) to evaluate VQA on")
    answers = pipe([p[0]["png"] for p in pairs], [p[1] for p in pairs], **kwargs)
    records = [{"key": s["__key__"], "question": q, "reference": a, "answer": got, "correct": _norm(got) == _norm(a)}
               for (s, q, a), got in zip(pairs, answers, strict=True)]
    return {"accuracy": _mean([float(r["correct"]) for r in records]), "n": len(records)}, records


def evaluate_t2i(pipe, samples: list[dict], **kwargs) -> tuple[dict, list[dict], list]:
    """Also returns the generated images (for a grid)."""
    from omnidiff.eval.image import pair_match, read_objects, score_scene

    scenes = [s for s in samples if (s.get("json") or {}).get("scene")]
    if not scenes:
        raise ValueError("text-to-image is scored on shape scenes (json['scene']); none in these samples")
    captions = [s["txt"] for s in scenes]
    images = pipe(captions, **kwargs)
    records, objects, whole, counts = [], [], [], np.zeros(3)
    for s, cap, im in zip(scenes, captions, images, strict=True):
        scene = s["json"]["scene"]
        ok = [bool(o.kept) for o in score_scene(im, scene)]
        objects += ok
        found = read_objects(im)
        match = pair_match(found, [(o["colour"], o["shape"]) for o in scene["objects"]])
        counts += match
        whole.append(match[0] == match[1] == match[2])
        records.append({"key": s["__key__"], "caption": cap, "drawn": [" ".join(p) for p in found],
                        "objects_correct": match[0], "objects": match[2], "at_reference_position": sum(ok)})
    # The caption says what to draw, not where: objects count wherever they are drawn (read_objects).
    # objects_at_reference_positions reads them where the reference scene had them (score_scene).
    metrics = {"objects_correct": float(counts[0] / max(1, counts[2])),
               "objects_precision": float(counts[0] / max(1, counts[1])),
               "images_all_correct": _mean([float(w) for w in whole]),
               "objects_at_reference_positions": _mean([float(o) for o in objects]), "n": len(scenes)}
    return metrics, records, images


def evaluate_asr(pipe, samples: list[dict], **kwargs) -> tuple[dict, list[dict]]:
    from omnidiff.eval.speech import word_error_rate

    hyps = pipe([s["wav"] for s in samples], **kwargs)
    refs = [s["txt"] for s in samples]
    records = [{"key": s["__key__"], "reference": r, "transcript": h, "wer": round(word_error_rate(r, h), 4)}
               for s, r, h in zip(samples, refs, hyps, strict=True)]
    return {"wer": round(word_error_rate(refs, hyps), 4), "n": len(samples)}, records


def codec_round_trip(tok, wav: dict, levels: int | None) -> tuple[np.ndarray, int]:
    """``wav`` encoded by the audio tokenizer, cut to its first ``levels`` residual levels and decoded:
    the best recording a model that speaks those levels can produce for it."""
    codes = tok.encode((np.asarray(wav["array"], np.float32), int(wav["sample_rate"])))
    return tok.decode(codes[:, :levels])


def evaluate_tts(pipe, samples: list[dict], transcriber=None, **kwargs) -> tuple[dict, list[dict], list[dict]]:
    """Also returns the generated audio."""
    from omnidiff.eval.speech import Transcriber, word_error_rate

    transcriber = transcriber or Transcriber()
    texts = [s["txt"] for s in samples]
    waves = pipe(texts, **kwargs)
    heard = [transcriber.transcribe(w["array"], w["sample_rate"]) if len(w["array"]) else "" for w in waves]
    original = [transcriber.transcribe(np.asarray(s["wav"]["array"], np.float32), s["wav"]["sample_rate"]) for s in samples]
    # the ceiling of the task: the original through the codec and back, on the levels the model speaks
    coded = [transcriber.transcribe(*codec_round_trip(pipe.tokenizers.audio, s["wav"], pipe.task_impl.audio_levels))
             for s in samples]
    records = [{"key": s["__key__"], "text": t, "whisper_on_generated": h, "whisper_on_original": o,
                "whisper_on_codec": c, "seconds": round(len(w["array"]) / w["sample_rate"], 2)}
               for s, t, h, o, c, w in zip(samples, texts, heard, original, coded, waves, strict=True)]
    metrics = {"wer_generated": round(word_error_rate(texts, heard), 4),
               "wer_original": round(word_error_rate(texts, original), 4),
               "wer_codec": round(word_error_rate(texts, coded), 4), "n": len(samples)}
    return metrics, records, waves


def evaluate_vla(policy, samples: list[dict], **kwargs) -> tuple[dict, list[dict]]:
    tok = policy.tokenizers.action
    width = np.asarray(tok.bin_width, dtype=np.float32)
    errors, in_bins, records = [], [], []
    for s in samples:
        meta = s.get("json") or {}
        proprio = s.get("proprio.npy") if policy.task_impl.use_proprio else None
        chunk = policy.predict_action(s["png"], meta.get("instruction", ""), proprio, **kwargs)
        truth = np.asarray(s["actions.npy"], dtype=np.float32)
        err = np.abs(chunk - truth)
        errors.append(float(err.mean()))
        in_bins.append(float((err / width).mean()))
        records.append({"key": s["__key__"], "task": meta.get("task"), "mae": round(errors[-1], 4),
                        "first_action": [round(float(v), 3) for v in chunk[0]],
                        "true_first_action": [round(float(v), 3) for v in truth[0]]})
    return {"action_mae": _mean(errors), "action_mae_bins": _mean(in_bins),
            "within_one_bin": _mean([float(e < 1.0) for e in in_bins]), "n": len(samples)}, records


def evaluate_text(pipe, samples: list[dict], answer_len: int, **kwargs) -> tuple[dict, list[dict]]:
    """Continue each sample's own prompt (the split `TextTask` trains on) and compare with its text.

    ``token_accuracy`` is the share of answer columns (the reference's ``<eos>`` padding included)
    the decoder got right; ``exact`` the share of continuations right in every column.
    """
    from omnidiff.tasks import get_task

    task, toks, vocab = get_task("text"), pipe.tokenizers, pipe.vocab
    pairs = [task.format(s, toks, vocab, answer_len) for s in samples]
    answers, _ = pipe.decode([p for p, _ in pairs], answer_len, **kwargs)
    records, accuracy, exact = [], [], []
    for s, (prefix, ref), got in zip(samples, pairs, answers, strict=True):
        same = (got.cpu() == ref).float()
        accuracy.append(float(same.mean()))
        exact.append(float(same.all()))
        records.append({"key": s["__key__"], "prompt": pipe.text_of(prefix[1:]), "reference": pipe.text_of(ref),
                        "continuation": pipe.text_of(got), "token_accuracy": round(accuracy[-1], 4)})
    return {"token_accuracy": _mean(accuracy), "exact": _mean(exact), "n": len(samples)}, records
