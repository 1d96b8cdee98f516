"""The repository stands alone: no file points at something a fresh clone does not have.

Every text file of the checkout (tracked, or new and not ignored) is scanned for

- markdown links and images ``[text](target)`` (and reference links ``[x]: target``) whose target,
  resolved from the file's folder, does not exist or lies outside the repository, or whose
  ``#anchor`` names no heading of the linked page (http(s) and mailto links are not checked);
- relative paths starting with ``../`` that climb out of the repository;
- absolute paths, except the few prefixes in `ALLOWED_ABSOLUTE` (system files the data builders
  read, scratch folders a shown command creates, placeholders); in ``tests/`` a made-up path that
  does not exist on the machine is an input, not a reference, and passes too, unless it lies under
  one of the `PROJECT_ROOTS`;
- names of upper-case documents (``SOMETHING.md``) that exist nowhere in the repository, and, outside
  Python files (where such a path is often a page a script writes), paths of markdown pages
  (``docs/x.md``) that do not exist;
- references to an issue tracker by number (``issue 3``), which a clone does not carry.

The checks are plain functions of one file's text, so the tests at the bottom can feed them
strings that must fail.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()
SKIP_DIRS = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", "build"}

# prefix -> why a path under it may appear in the repository
ALLOWED_ABSOLUTE = {
    "/usr/share/": "system data the builders read, installed by `make data-deps` (data/apt-packages.txt)",
    "/usr/bin/": "system programs",
    "/dev/null": "the null device",
    "/tmp/": "scratch folders created by the command shown next to them",
    "/scratch/": "an example of a user's data disk",
    "/path/": "a placeholder for a path the user picks",
}
# Where other projects and people keep their files: never acceptable, not even as a test input.
PROJECT_ROOTS = ("/work/", "/home/", "/root/", "/Users/", "/mnt/")

MD_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MD_REF = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")
# An absolute path: a slash after a boundary (start, space, quote, bracket, '=' or ','), at least two segments.
ABSOLUTE = re.compile(r"""(?:^|(?<=[\s"'`(\[=,]))(/[A-Za-z0-9_.+~-]+(?:/[A-Za-z0-9_.+~-]*)+)""")
HOME = re.compile(r"""(?:^|(?<=[\s"'`(\[=,]))(~/[^\s"'`)\]]*)""")
CLIMB = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.-]*)")
UPPER_DOC = re.compile(r"(?<![\w/.-])([A-Z][A-Z0-9_-]*\.md)\b")
DOC_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)+[\w.-]+\.md)\b")
ISSUE_REF = re.compile(r"\bissues?\s+#?\d+\b", re.IGNORECASE)


def repo_files() -> list[Path]:
    """Tracked files plus new, not ignored ones; a walk of the tree when git is not available."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        names = sorted({n for n in out.split("\0") if n})
        return [ROOT / n for n in names if (ROOT / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        found = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            found += [Path(folder) / f for f in files]
        return sorted(found)


def read_text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_files() -> list[tuple[Path, str]]:
    out = []
    for path in repo_files():
        if path.resolve() == THIS_FILE:
            continue  # its docstring and tests spell out the patterns it rejects
        text = read_text(path)
        if text is not None:
            out.append((path, text))
    return out


def heading_anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:
            title = m.group(1).lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def without_code_blocks(markdown: str) -> str:
    """``markdown`` with the lines of fenced code blocks blanked (line numbers kept): code is not a link."""
    out, in_code = [], False
    for line in markdown.split("\n"):
        fence = line.lstrip().startswith(("```", "~~~"))
        out.append("" if in_code or fence else line)
        if fence:
            in_code = not in_code
    return "\n".join(out)


def link_problems(path: Path, text: str, root: Path = ROOT) -> list[str]:
    """Markdown links of ``text`` (the content of markdown file ``path``) that do not resolve in the repo."""
    problems = []
    text = without_code_blocks(text)
    targets = [(m.group(1), m.start()) for rx in (MD_LINK, MD_REF, HTML_LINK) for m in rx.finditer(text)]
    for target, pos in targets:
        where = f"{path.relative_to(root)}:{_line(text, pos)}"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            if not target.lower().startswith(("http://", "https://", "mailto:")):
                problems.append(f"{where}: link {target!r} uses a scheme other than http(s)/mailto")
            continue
        file_part, _, anchor = target.partition("#")
        if target.startswith("/"):
            problems.append(f"{where}: link {target!r} is absolute; link relative to the page")
            continue
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not inside(dest, root):
            problems.append(f"{where}: link {target!r} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where}: link {target!r} points at a missing file")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text()):
            problems.append(f"{where}: link {target!r}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def path_problems(path: Path, text: str, root: Path = ROOT, doc_names: set[str] | None = None) -> list[str]:
    """Paths and names in ``text`` (any text file) that leave the repository or name nothing in it."""
    if doc_names is None:
        doc_names = {p.name for p in repo_files()}
    rel = path.relative_to(root)
    problems = []
    in_tests = rel.parts[:1] == ("tests",)
    for m in ABSOLUTE.finditer(text):
        p = m.group(1)
        allowed = any(p.startswith(prefix) for prefix in ALLOWED_ABSOLUTE)
        made_up_input = in_tests and not Path(p).exists()  # such as /no/such/model
        if p.startswith(PROJECT_ROOTS) or not (allowed or made_up_input):
            problems.append(f"{rel}:{_line(text, m.start())}: absolute path {p!r} outside the repository")
    for m in HOME.finditer(text):
        problems.append(f"{rel}:{_line(text, m.start())}: home-folder path {m.group(1)!r}")
    for m in CLIMB.finditer(text):
        if not inside(path.parent / m.group(1), root):
            problems.append(f"{rel}:{_line(text, m.start())}: {m.group(1)!r} climbs out of the repository")
    for m in UPPER_DOC.finditer(text):
        if m.group(1) not in doc_names:
            problems.append(f"{rel}:{_line(text, m.start())}: {m.group(1)} is not a file of this repository")
    for m in DOC_PATH.finditer(text if path.suffix != ".py" else ""):
        name = m.group(1)
        if name.startswith(("runs/", "../")) or "/runs/" in name:
            continue  # run outputs are written by the commands; climbing is checked above
        if not ((root / name).exists() or (path.parent / name).exists()):
            problems.append(f"{rel}:{_line(text, m.start())}: {name} does not exist in the repository")
    for m in ISSUE_REF.finditer(text):
        problems.append(f"{rel}:{_line(text, m.start())}: {m.group(0)!r} refers to an issue tracker a clone "
                        f"does not carry; say the fact or point at a doc")
    return problems


# --------------------------------------------------------------------------------------- the repository
def test_markdown_links_resolve_inside_the_repository():
    problems = []
    for path, text in text_files():
        if path.suffix == ".md":
            problems += link_problems(path, text)
    assert not problems, "markdown links that do not resolve inside the repository:\n" + "\n".join(problems)


def test_no_path_or_reference_leaves_the_repository():
    names = {p.name for p in repo_files()}
    problems = []
    for path, text in text_files():
        problems += path_problems(path, text, doc_names=names)
    assert not problems, "references that leave the repository:\n" + "\n".join(problems)


def test_the_scan_sees_the_files_that_matter():
    scanned = {p.relative_to(ROOT).as_posix() for p, _ in text_files()}
    for name in ("README.md", "Makefile", "requirements.txt", "docs/design.md", "configs/text.yaml",
                 "omnidiff/models/layers.py"):
        assert name in scanned


# --------------------------------------------------------------------------------------- the checks themselves
# (this file is not scanned; the rejected names are still spelled in pieces so no line of it names a
# place outside the repository)
OUT = "../" + "shared"
DESIGN, ENV, STYLE = "DES" + "IGN.md", "ENVIRON" + "MENT.md", "STY" + "LE.md"


@pytest.mark.parametrize("text", [
    f"Design: [the design]({OUT}/{DESIGN}).",
    "see [setup](docs/no_such_page.md)",
    "an image ![grid](/etc/grid.png)",
    "[design](docs/design.md#no-such-heading)",
    "[ref]: ../../elsewhere.md",
])
def test_bad_markdown_links_are_caught(text):
    assert link_problems(ROOT / "README.md", text)


@pytest.mark.parametrize("text", [
    "[design](docs/design.md)",
    "[vocabulary](docs/design.md#the-vocabulary)",
    "[web](https://example.org/x.md) and [mail](mailto:someone@example.org)",
    "[grid](docs/benchmarks/image_tokenizer_grid.png)",
])
def test_good_markdown_links_pass(text):
    assert link_problems(ROOT / "README.md", text) == []


@pytest.mark.parametrize("text", [
    f"# Pinned dependency set measured to work together (see {OUT}/{ENV}).",
    f"built from offline sources (`/work/{OUT[3:]}/{ENV}`) by",
    f"The layout rules of {DESIGN} section 3 live here.",
    f"wrapped from outside ({STYLE} 1).",
    "# The text recipe (issue 3): the tiny preset",
    'weights = "/home/someone/model.safetensors"',
    "cache in ~/.cache/omnidiff",
    "see docs/no_such_page.md",
])
def test_references_outside_are_caught(text):
    assert path_problems(ROOT / "README.md", text, doc_names={"README.md"})


@pytest.mark.parametrize("text", [
    "WORDNET_DIR = Path(\"/usr/share/wordnet\")",
    "python data/build_speech.py --out /tmp/speech --num 1000",
    "see docs/design.md and README.md; runs/demo/results/results.md is written by the demo",
    "x = a / b; y = (c + 1) / 2; tags </image> <pad>; $(VENV)/bin/python",
    "model_dir/../tokenizers",
])
def test_references_inside_pass(text):
    assert path_problems(ROOT / "README.md", text, doc_names={"README.md"}) == []


def test_tests_may_feed_made_up_absolute_paths_but_not_project_folders():
    test_file = ROOT / "tests" / "test_config.py"
    assert path_problems(test_file, '["--model", "/no/such/model"]', doc_names=set()) == []
    assert path_problems(test_file, f'open("/work/{OUT[3:]}/fixture.json")', doc_names=set())
    assert path_problems(ROOT / "README.md", '["--model", "/no/such/model"]', doc_names=set())
