"""The README's Python snippets run as written.

Every ```python block of README.md is executed, top to bottom, in one namespace (as a reader who
pastes them in order would: the sampling snippet decodes with the model of "the model in five
lines"). The working directory is a temporary folder holding what the snippets expect on disk: an
exported model at ``runs/demo/model``, here an untrained `debug` model with tiny real tokenizers.
Tracebacks point at README.md lines.
"""

import re
from pathlib import Path

import pytest

from tests.fixtures import build_multimodal_model

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of every ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_extracts_python_blocks_with_their_line_numbers():
    text = "intro\n```python\nx = 1\n```\n```bash\nmake\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = x\n")]


def test_readme_python_snippets_run_as_written(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 3, "README.md lost its Python snippets (or the ```python fences changed)"
    build_multimodal_model(tmp_path / "runs" / "demo", proprio_dim=4)  # the demo's robot state has 4 numbers
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for line, source in blocks:
        # Blank lines in front keep the README's line numbers in a traceback.
        code = compile("\n" * (line - 1) + source, str(README), "exec")
        try:
            exec(code, namespace)
        except Exception as e:
            pytest.fail(f"the README snippet at line {line} fails: {type(e).__name__}: {e}")
