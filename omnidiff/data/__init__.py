"""Data: offline sources -> webdataset shards -> task sequences -> mixed, collated batches.

Files: ``builder.py`` (builder CLI and shard writing), ``sources/`` (pure functions over offline
corpora, wheels and synthesisers), ``shards.py`` (resumable shard reading, corrupt-member
handling), ``formatting.py`` (shared pieces of task formatting, and `collate`), ``mixing.py``
(weighted multi-task loader with an exact, checkpointable position).

Sample formats written by the builders in ``data/`` (webdataset members; ``shards.py`` decodes
``png`` to an RGB PIL image, ``wav`` to ``{"array": float32 [T], "sample_rate": int}``, ``npy`` to
a numpy array, ``json`` to a dict, ``txt`` to a str):

- text (``build_text.py``): ``txt`` document, ``json`` ``{"source": corpus}``.
- shapes (``build_shapes.py``): ``png`` scene, ``txt`` first caption, ``json``
  ``{"scene": {...attributes...}, "captions": [str, ...], "qa": [[question, answer], ...]}``.
- digits (``build_digits.py``): ``png`` digit, ``cls`` label, ``txt`` first caption, ``json``
  ``{"label": int, "captions": [str, ...], "qa": [[question, answer], ...], "source_index": int}``.
- emoji (``build_emoji.py``): ``png`` glyph, ``txt`` name, ``json``
  ``{"name": str, "captions": [str, ...], "source": "noto-emoji" | "qtawesome:<font>"}``.
- speech (``build_speech.py``): ``wav`` 16 kHz mono, ``txt`` transcript, ``json``
  ``{"voice": str, "kind": "sentence" | "digits" | "command", "seconds": float}``.
- robot (``build_robot.py``): ``png`` observation, ``actions.npy`` float32 [H, D] action chunk
  starting at this step, ``proprio.npy`` float32 [P] (optional), ``json``
  ``{"instruction": str, "paraphrases": [str, ...], "task": str, "episode": int, "step": int, "success": bool}``.

Readers add ``__key__``, ``__shard__`` and ``__epoch__`` to every sample; tasks use them to pick a
caption, question or paraphrase deterministically (`formatting.sample_rng`).
"""
