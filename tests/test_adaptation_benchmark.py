"""benchmarks/adaptation.py on a tiny random Llama and its one-step adaptation: exact AR NLL, a full report."""

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from omnidiff.config import load_config
from omnidiff.tokenization.registry import TokenizerSet
from omnidiff.training.trainer import train
from tests.fixtures import build_text_dataset, build_text_tokenizer

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("adaptation_benchmark", ROOT / "benchmarks" / "adaptation.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A tiny random HF Llama, its two-step adaptation (shift, prefix attention) and the text data."""
    tmp_path = tmp_path_factory.mktemp("adapt")
    data, tok = build_text_dataset(tmp_path), build_text_tokenizer(tmp_path)
    for shard in data.glob("val-*.tar"):  # decode_speed.py reads the test split's prompts
        shutil.copy(shard, data / shard.name.replace("val-", "test-"))
    torch.manual_seed(0)
    size = TokenizerSet.load({"text": tok}).text.vocab_size
    hf = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=size, tie_word_embeddings=True))
    hf.save_pretrained(tmp_path / "llama")
    cfg = load_config(None, [
        f"model.init_from={tmp_path / 'llama'}", f"tokenizers.text={tok}", f"train.out={tmp_path / 'run'}",
        "train.tensorboard=false", "data.batch_size=2", f"data.tasks=[{{task: text, path: {data}, answer_len: 24}}]",
        "optim.warmup_steps=0", "train.eval_every=1", "train.eval_batches=1", "train.steps=2", "train.log_every=1", "objective.attention=prefix",
        "objective.shift=true", "objective.anneal_steps=2", "objective.complementary=true"])
    model_dir = train(cfg)["model"]
    return tmp_path, data, tok, hf, model_dir


def test_adaptation_benchmark_end_to_end(adapted):
    tmp_path, data, tok, hf, model_dir = adapted
    from omnidiff.pipelines import TextPipeline

    pipe = TextPipeline.from_pretrained(model_dir)
    pairs = bench.held_out(pipe, str(data), 3, 24, split="val")
    nll, count = bench.ar_nll(hf.eval(), pipe.vocab, pairs[:1])
    prompt, answer = (bench.local_text(pipe.vocab, t) for t in pairs[0])
    ids = torch.cat([prompt, answer])[None]
    labels = ids.clone()
    labels[0, : prompt.numel()] = -100  # HF's own loss over the answer tokens only
    with torch.no_grad():
        expected = float(hf(ids, labels=labels).loss) * answer.numel()
    assert count == answer.numel() and math.isclose(nll, expected, rel_tol=1e-5)

    out = tmp_path / "adaptation.json"
    code = bench.main(["--ar", str(tmp_path / "llama"), "--model", f"adapted={model_dir}", "--data", str(data),
                       "--split", "val", "--num", "3", "--answer-len", "24", "--samples", "2", "--span-start", "4",
                       "--span", "3", "--tail", "4", "--doc", str(tmp_path / "adaptation.md"), "--json", str(out),
                       "--run", f"adapted={tmp_path / 'run'}", "--plot", str(tmp_path / "curve.png"),
                       "--show", "2", "--sample-len", "5"])
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [c["step"] for c in report["curves"]["adapted"]] == [1, 2]
    assert all(c["val_elbo"] > 0 and c["minutes"] is not None for c in report["curves"]["adapted"])
    assert report["curves"]["ar_val_nats_per_token"] > 0
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert len(report["samples"]) == 2 and {"prompt", "reference", "AR", "adapted"} <= set(report["samples"][0])
    assert "## Samples" in (tmp_path / "adaptation.md").read_text()
    assert [r["model"] for r in rows] == ["AR (HF causal LM)", "adapted"]
    assert all(r["perplexity"] > 1 and 0 <= r["fim"]["token_accuracy"] <= 1 for r in rows)
    assert rows[1]["bound"] and "| adapted |" in (tmp_path / "adaptation.md").read_text()
    assert bench.main(["--ar", str(tmp_path / "missing"), "--model", f"adapted={model_dir}"]) == 2
    assert bench.main(["--ar", str(tmp_path / "llama"), "--model", f"adapted={model_dir}",
                       "--run", f"x={tmp_path / 'nowhere'}"]) == 2
    assert bench.main(["--ar", str(tmp_path / "llama"), "--model", f"adapted={model_dir}", "--run", "x"]) == 2


def test_decode_speed_against_the_pretrained_ar_model(adapted):
    """`decode_speed.py --ar-model`: (a) is the pretrained HF model itself, shifted decoding, AR-judged quality."""
    tmp_path, data, tok, _, model_dir = adapted
    out = tmp_path / "decode.json"
    base = [sys.executable, "benchmarks/decode_speed.py", "--checkpoint", str(model_dir), "--tokenizer", str(tok),
            "--data", str(data)]
    done = subprocess.run(base + ["--ar-model", str(tmp_path / "llama"), "--quick", "--methods", "b,c,d,e",
                                  "--quality-prompts", "2", "--quality-len", "32", "--json", str(out),
                                  "--doc", str(tmp_path / "decode.md")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    # e (block cache) cannot decode a shifted model and is dropped; the rest decode with shift
    assert [r["method"][:2] for r in rows] == ["a:", "b:", "c:", "d:"]
    details = json.loads(out.with_suffix(".details.json").read_text())
    assert details["bandwidth_bytes_per_s"] > 0 and details["ar_step_bytes"] > 0
    quality = details["quality"]["rows"]
    assert quality[0]["method"] == "a: AR greedy" and quality[0]["agreement_with_ar"] == 1.0
    assert all(r["ar_nll"] > 0 for r in quality if r["tokens_judged"])
    exact = next(r for r in quality if r["method"].startswith("c:"))  # the exact prefix cache = no cache (row b)
    assert exact["agreement_with_first"] == 1.0
    assert "AR bandwidth floor" in (tmp_path / "decode.md").read_text()
    wrong = subprocess.run(base + ["--ar-model", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode != 0 and "does not exist" in wrong.stderr
    bad = subprocess.run(base + ["--ar-model", str(tmp_path / "llama"), "--methods", "e"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "shifted" in bad.stderr
