"""Check that a demo run wrote well-formed outputs (not their quality): ``python .ci/check_demo_outputs.py RUN``.

RUN is a run folder evaluated by ``python -m omnidiff.eval`` (``make demo`` / ``make demo SCALE=smoke``).
Checked: ``results.json`` has an entry with numeric metrics for every (task, dataset) of the run's
config; ``results.md`` names each of them; every PNG it refers to opens with PIL; every TTS WAV opens
with soundfile at a positive sample rate. Prints one line per check and exits 1 on the first failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import soundfile as sf
import yaml
from PIL import Image


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main(run: Path) -> None:
    results_dir = run / "results"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    results = json.loads((results_dir / "results.json").read_text())
    report = (results_dir / "results.md").read_text()
    expected = {f"{t['task']}:{Path(t['path']).name}" for t in cfg["data"]["tasks"]}
    for name in sorted(expected):
        if name not in results:
            fail(f"results.json has no entry for {name} (has {sorted(results)})")
        metrics = results[name]["metrics"]
        numbers = [v for v in metrics.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            fail(f"{name} has no numeric metric: {metrics}")
        if name not in report:
            fail(f"results.md does not mention {name}")
        print(f"ok  {name}: {', '.join(f'{k}={v}' for k, v in metrics.items() if k != 'decode')}")
    tasks = {t["task"] for t in cfg["data"]["tasks"]}
    pngs = {"t2i.png"} if "t2i" in tasks else set()
    if "vla" in tasks and any(results[n]["metrics"].get("filmstrips") for n in expected if n.startswith("vla:")):
        pngs.add("vla_rollouts.png")
    for png in sorted(pngs):
        with Image.open(results_dir / png) as im:
            im.load()
            print(f"ok  {png}: {im.size[0]}x{im.size[1]}")
    if "tts" in tasks:
        wavs = sorted((results_dir / "tts").glob("*.wav"))
        if not wavs:
            fail("no TTS WAV files were written")
        for wav in wavs:
            info = sf.info(str(wav))
            if info.samplerate <= 0:
                fail(f"{wav} has sample rate {info.samplerate}")
            print(f"ok  tts/{wav.name}: {info.frames / info.samplerate:.2f} s at {info.samplerate} Hz")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    main(Path(sys.argv[1]))
