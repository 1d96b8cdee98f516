"""benchmarks/adaptation.py on a tiny random Llama and its one-step adaptation: exact AR NLL, a full report."""

import importlib.util
import json
import math
from pathlib import Path

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


def test_adaptation_benchmark_end_to_end(tmp_path):
    data, tok = build_text_dataset(tmp_path), build_text_tokenizer(tmp_path)
    torch.manual_seed(0)
    size = TokenizerSet.load({"text": tok}).text.vocab_size
    hf = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=size, tie_word_embeddings=True))
    hf.save_pretrained(tmp_path / "llama")
    cfg = load_config(None, [
        f"model.init_from={tmp_path / 'llama'}", f"tokenizers.text={tok}", f"train.out={tmp_path / 'run'}",
        "train.tensorboard=false", "data.batch_size=2", f"data.tasks=[{{task: text, path: {data}, answer_len: 24}}]",
        "optim.warmup_steps=0", "train.eval_every=0", "train.steps=1", "objective.attention=prefix",
        "objective.shift=true", "objective.anneal_steps=2", "objective.complementary=true"])
    model_dir = train(cfg)["model"]

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
                       "--span", "3", "--tail", "4", "--doc", str(tmp_path / "adaptation.md"), "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["AR (HF causal LM)", "adapted"]
    assert all(r["perplexity"] > 1 and 0 <= r["fim"]["token_accuracy"] <= 1 for r in rows)
    assert rows[1]["bound"] and "| adapted |" in (tmp_path / "adaptation.md").read_text()
    assert bench.main(["--ar", str(tmp_path / "missing"), "--model", f"adapted={model_dir}"]) == 2
