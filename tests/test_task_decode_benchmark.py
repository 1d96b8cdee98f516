"""benchmarks/task_decode.py on an untrained run and its AR twin: every row, ratio and the floor."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.fixtures import build_multimodal_model

ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, data: Path, attention: str) -> Path:
    root.mkdir()
    build_multimodal_model(root, attention=attention)
    tasks = [{"task": t, "path": str(data), "answer_len": n} for t, n in (("caption", 12), ("vqa", 4))]
    objective = {"kind": "autoregressive", "attention": "causal", "shift": True} if attention == "causal" else {}
    (root / "config.yaml").write_text(yaml.safe_dump({"data": {"tasks": tasks}, "objective": objective}))
    return root


def run_bench(*args):
    return subprocess.run([sys.executable, "benchmarks/decode_speed.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_per_task_table_against_the_ar_twin(tmp_path):
    data = tmp_path / "shapes"
    subprocess.run([sys.executable, "data/build_shapes.py", "--out", str(data), "--num", "60", "--size", "32"],
                   cwd=ROOT, check=True, capture_output=True)
    run, ar = make_run(tmp_path / "run", data, "prefix"), make_run(tmp_path / "ar", data, "causal")
    doc, out = tmp_path / "table.md", tmp_path / "table.json"
    proc = run_bench("--run", run, "--ar-run", ar, "--task", "caption:shapes,vqa:shapes", "--num", "2", "--repeats",
                     "1", "--steps", "2", "--json", out, "--doc", doc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {r["task"] for r in rows} == {"caption:shapes", "vqa:shapes"}
    for r in rows:
        assert {"task", "method", "batch", "answer_len", "tokens_per_forward", "tokens_per_s", "ratio_to_ar",
                "quality", "ar_quality", "sampler_share"} <= set(r)
        assert r["tokens_per_s"] > 0 and 0 <= r["sampler_share"] <= 1 and r["batch"] in (1, 8)
    twin = [r for r in rows if r["model"] == "ar"]
    assert twin and all(r["ratio_to_ar"] == 1.0 for r in twin)
    assert all(r["tokens_per_forward"] <= 1.0 + 1e-9 for r in twin)  # one token per forward, the prompt's included
    assert len({r["method"] for r in rows if r["model"] == "diffusion"}) == 5
    two = [r for r in rows if r["method"] == "diffusion, confidence order, 2 steps, one block"]
    assert {r["task"] for r in two} == {"caption:shapes", "vqa:shapes"}
    assert all(r["nfe"] <= 2 for r in two)  # two steps (the first encodes the prompt), whatever the answer length
    assert report["bandwidth_bytes_per_s"] > 1e8 and report["ar_floor_ms_per_token"] > 0
    assert "| caption:shapes |" in doc.read_text() and "bandwidth floor" in doc.read_text()


def test_bad_arguments_are_refused(tmp_path):
    data = tmp_path / "shapes"
    data.mkdir()
    run = make_run(tmp_path / "run", data, "prefix")
    proc = run_bench("--run", run, "--task", "asr:speech")
    assert proc.returncode == 1 and "not streams of" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_bench("--run", run, "--steps", "2,x")
    assert proc.returncode == 1 and "whole numbers" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_bench("--run", run, "--ar-run", run)
    assert proc.returncode == 1 and "objective.kind=autoregressive" in proc.stderr
    proc = run_bench("--run", tmp_path / "missing")
    assert proc.returncode == 1 and "not a finished train.py run" in proc.stderr


def load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("task_decode", ROOT / "benchmarks" / "task_decode.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_sampler_share_counts_only_forwards_inside_decodes(monkeypatch):
    """The caption evaluator runs probe forwards outside `decode`; counted, they clipped the share to 0."""
    bench = load_bench()
    clock = [0.0]  # a fake clock: a forward takes 2 s, the sampler's own work in a decode 1 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    def forward():
        clock[0] += 2.0

    class Pipe:
        model = None

        def decode(self):
            start = clock[0]
            self.model()
            clock[0] += 1.0
            return None, {"wall_time_s": clock[0] - start, "nfe": 1, "tokens_per_forward": 1.0, "tokens_per_s": 1.0}

    pipe = Pipe()
    pipe.model = timed = bench.TimedModel(forward)
    log = bench.record_decodes(pipe, timed)
    pipe.decode()
    for _ in range(3):  # a probe: forwards outside any decode
        pipe.model()
    assert [entry["forward_s"] for entry in log] == [2.0]
    assert abs(bench.speed(log)["sampler_share"] - 1.0 / 3.0) < 1e-12


def test_rows_are_labelled_by_the_sampler_they_run():
    import dataclasses

    from omnidiff.sampling import SamplerConfig

    bench = load_bench()

    class Pipe:  # a pipeline whose default is not a threshold sampler, as text-to-image's
        def default_sampler(self):
            return SamplerConfig(strategy="random", steps=16, schedule="cosine", temperature=1.0, attention="prefix",
                                 cache="prefix")

    configs = bench.sampler_configs(Pipe())
    assert list(configs) == ["diffusion, random order, 16 steps, temperature 1, one block",
                             "diffusion, threshold 0.9, one block", "diffusion, threshold 0.7, one block",
                             "diffusion, threshold 0.5, one block", "diffusion, one token per step"]
    assert [c.strategy for c in configs.values()][1:4] == ["threshold"] * 3
    assert [c.threshold for c in configs.values()][1:4] == [0.9, 0.7, 0.5]
    threshold_default = SamplerConfig(strategy="threshold", threshold=0.9, attention="prefix", cache="prefix", block_len=8)
    Pipe.default_sampler = lambda self: threshold_default
    configs = bench.sampler_configs(Pipe())
    assert list(configs)[:3] == [f"diffusion, threshold {t}, blocks of 8" for t in ("0.9", "0.7", "0.5")]
    assert configs["diffusion, threshold 0.7, blocks of 8"] == dataclasses.replace(threshold_default, threshold=0.7)
