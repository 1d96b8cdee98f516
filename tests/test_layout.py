"""Repo-layout hazards: the top-level tokenizers/ folder must not shadow Hugging Face tokenizers."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tokenizers_resolves_to_site_packages_from_repo_root():
    code = "import tokenizers, transformers; from transformers import AutoTokenizer; print(tokenizers.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "site-packages" in out.stdout, out.stdout
    assert not (ROOT / "tokenizers" / "__init__.py").exists()
