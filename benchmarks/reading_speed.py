"""How fast does the captioner learn to *read* a picture? A learning-speed probe on fresh shape scenes.

    python benchmarks/reading_speed.py [--init runs/encoder --freeze] [--codes dummy|vq] [--backbone oracle]
        [--steps 300] [--eval_every 100] [--json PATH]

The real `Transformer` (preset ``--preset``, its image encoder) and the real diffusion loss
(complementary copies sharing one prefix, prefix attention, flat weighting) train on captions of
shape scenes drawn fresh every step (no scene is seen twice), written in whole words (``a red circle
, a blue square and ...``) so that no tokenizer stands between the picture and the answer. The
prompt is ``<bos><caption><image> 64 codes </image>``: with ``--codes dummy`` every code is the same
id, so the picture reaches the model only through the image encoder; with ``--codes vq`` they are
the image tokenizer's codes (``--vq-tokenizer``), as in the recipes. ``--backbone oracle`` replaces
the pixels with the scene's exact per-pixel attributes (one-hot colour, shape, size, object), pooled
to the grid: how fast the transformer alone learns to route what is in the picture to the words.
``--init DIR`` starts the backbone from a pretrained ``backbone.safetensors``
(`omnidiff.training.dense_pretrain`), ``--freeze`` keeps it fixed.

Every ``--eval_every`` steps, on 200 held-out scenes: teacher-forced colour and shape accuracy (the
caption with only those words masked, one forward; also on one-object scenes alone), and a decode
of the whole caption one word per forward by confidence: exact match and (colour, shape) pair
precision and recall. One JSON line per evaluation; ``--json`` writes them all.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from omnidiff.data.sources import shapes
from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss
from omnidiff.models.image_encoder import ImageEncoderConfig, ImageInputs
from omnidiff.models.presets import PRESETS
from omnidiff.models.transformer import Transformer, TransformerConfig

p = argparse.ArgumentParser()
p.add_argument("--preset", default="tiny")
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--steps", type=int, default=600)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--backbone", default="resnet10t")
p.add_argument("--grid", type=int, default=8)
p.add_argument("--eval_every", type=int, default=100)
p.add_argument("--wd", type=float, default=0.1)
p.add_argument("--weighting", default="flat")
p.add_argument("--answer_len", type=int, default=24)
p.add_argument("--max_objects", type=int, default=3)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--data", default="", help="a shape-scene dataset folder (data/build_shapes.py): train on its "
               "stored train split (pictures and scenes as the recipes read them) and evaluate on its val split")
p.add_argument("--nscenes", type=int, default=0, help="0: fresh scenes; N: a fixed pool of N training scenes")
p.add_argument("--init_std", type=float, default=0.02)
p.add_argument("--json", dest="out", default="")
p.add_argument("--vq-tokenizer", default="runs/tokenizers/image")
p.add_argument("--clip", type=float, default=1.0)
p.add_argument("--beta2", type=float, default=0.95)
p.add_argument("--adam_eps", type=float, default=1e-8)
p.add_argument("--head_lr", type=float, default=1.0, help="learning-rate multiplier of the LM head")
p.add_argument("--head_bias", action="store_true")
p.add_argument("--softcap", type=float, default=0.0)
p.add_argument("--prior_bias", action="store_true",
               help="the LM head gets a bias that starts at the log unigram prior of training answers (unseen ids ~ -17)")
p.add_argument("--head_zero", action="store_true", help="the LM head starts at zero")
p.add_argument("--restrict", action="store_true", help="training logits only over the caption words and <eos>")
p.add_argument("--restrict_batch", action="store_true", help="training logits only over the ids the batch's answers hold")
p.add_argument("--pad_vocab", type=int, default=0, help="extra unused ids before the codes (a larger vocabulary)")
p.add_argument("--bpe", default="", help="a text tokenizer folder: captions in its tokens instead of whole words")
p.add_argument("--codes", default="dummy")
p.add_argument("--dtype", default="fp32")
p.add_argument("--minutes", type=float, default=0)
p.add_argument("--init", default="")
p.add_argument("--freeze", action="store_true")
p.add_argument("--enc_lr", type=float, default=1.0)
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(2)
WORDS = ["a", ",", "and"] + list(shapes.COLOURS) + list(shapes.SHAPES)
SPEC = ["<pad>", "<mask>", "<eos>", "<bos>", "<caption>", "<image>", "</image>"]
W0 = len(SPEC)
C0 = W0 + len(WORDS)
NCODE = 1024 if a.codes == "vq" else 16
if a.codes == "vq":
    from omnidiff.tokenization.image import ImageTokenizer
    VQ = ImageTokenizer.load(a.vq_tokenizer)
if a.bpe:
    from omnidiff.tokenization.text import TextTokenizer
    BPE = TextTokenizer.load(a.bpe)
    C0 = W0 + BPE.vocab_size
C0 += a.pad_vocab
V = C0 + NCODE
wid = {w: W0 + i for i, w in enumerate(WORDS)}
if a.bpe:
    wid = {w: W0 + int(BPE.encode(" " + w)[0]) for w in WORDS if len(BPE.encode(" " + w)) == 1}
COL = [wid[c] for c in shapes.COLOURS if c in wid]
SHP = [wid[s] for s in shapes.SHAPES if s in wid]
cfg_s = shapes.ShapesConfig(size=64, min_objects=1, max_objects=a.max_objects)
N = a.grid * a.grid

def caption_ids(scene):
    cap = shapes.captions(scene, np.random.default_rng(0))[0]
    if a.bpe:
        return (BPE.encode(cap) + W0).tolist()
    toks = cap.replace(",", " ,").split()
    return [wid[t] for t in toks]

def oracle_map(scene):
    """[14, 64, 64]: per pixel one-hot colour (8) + shape (4) + size (1) + is-object (1)."""
    f = np.zeros((14, 64, 64), dtype=np.float32)
    cols, shps = list(shapes.COLOURS), list(shapes.SHAPES)
    for o in scene["objects"]:
        m = shapes.shape_mask(o["shape"], o["x"], o["y"], o["radius"], 64)
        f[cols.index(o["colour"]), m] = 1
        f[8 + shps.index(o["shape"]), m] = 1
        f[12, m] = float(o["size"] == "large")
        f[13, m] = 1
    return f

def example(rng):
    scene = shapes.random_scene(rng, cfg_s)
    if a.backbone == "oracle":
        ex = example_img(scene, torch.from_numpy(oracle_map(scene)))
        return ex
    img = np.asarray(shapes.render_scene(scene, cfg_s), dtype=np.float32) / 127.5 - 1.0
    return example_img(scene, torch.from_numpy(img).permute(2, 0, 1))

def example_img(scene, img_t):
    ids = caption_ids(scene)
    img = img_t
    ans = ids + [2] * (a.answer_len - len(ids))
    if a.codes == "dummy":
        codes = [C0] * N
    else:
        from PIL import Image
        pil = Image.fromarray(((img_t.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype("uint8"))
        codes = (VQ.encode(pil).flatten() + C0).tolist()
    prefix = [3, 4, 5] + codes + [6]
    return prefix, ans, img, scene

def batch_of(exs):
    P = len(exs[0][0])
    tokens = torch.tensor([e[0] + e[1] for e in exs])
    pad = torch.ones_like(tokens, dtype=torch.bool)
    ans = torch.zeros_like(pad)
    ans[:, P:] = True
    imgs = ImageInputs(torch.stack([e[2] for e in exs]), torch.arange(len(exs)), torch.full((len(exs),), 3))
    return {"tokens": tokens, "padding_mask": pad, "answer_mask": ans, "images": imgs}

preset = dict(PRESETS[a.preset])
model = Transformer(TransformerConfig(vocab_size=V, **preset, init_std=a.init_std,
                    image_encoder=ImageEncoderConfig(backbone="resnet10t" if a.backbone == "oracle" else a.backbone,
                                                     out_index=2, grid=a.grid, image_size=64,
                                                     freeze_backbone=a.freeze and a.backbone != "oracle")))
if a.backbone == "oracle":
    import types
    enc = model.image_encoder
    enc.norm = torch.nn.LayerNorm(14)
    enc.proj = torch.nn.Linear(14, preset["dim"])
    torch.nn.init.normal_(enc.proj.weight, std=a.init_std)
    torch.nn.init.zeros_(enc.proj.bias)
    del enc.backbone
    def fwd(self, pix):
        fmap = torch.nn.functional.adaptive_avg_pool2d(pix, self.cfg.grid)
        return self.proj(self.norm(fmap.flatten(2).transpose(1, 2)))
    enc.forward = types.MethodType(fwd, enc)
lcfg = DiffusionLossConfig(mask_id=1, eos_id=2, complementary=True, share_prefix=True, attention="prefix",
                           weighting=a.weighting)
if a.head_bias or a.prior_bias:
    old = model.lm_head
    model.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    model.lm_head.weight.data.copy_(old.weight.data)
    torch.nn.init.zeros_(model.lm_head.bias)
if a.prior_bias:
    _prng = np.random.default_rng(a.seed + 99)
    _counts = torch.bincount(torch.tensor([t for _ in range(500) for t in example(_prng)[1]]), minlength=V).double()
    model.lm_head.bias.data.copy_(torch.log((_counts + 1e-3) / _counts.sum()).float())
class HeadWith(torch.nn.Module):
    """The LM head followed by ``change(logits)`` (soft-capping, restricting the softmax)."""

    def __init__(self, head, change):
        super().__init__()
        self.head, self.change = head, change

    def forward(self, x):
        return self.change(self.head(x))


if a.head_zero:
    torch.nn.init.zeros_(model.lm_head.weight)
if a.softcap:
    model.lm_head = HeadWith(model.lm_head, lambda z: a.softcap * torch.tanh(z / a.softcap))
BATCH_KEEP = {"ids": None}
if a.restrict_batch:  # during training only: evaluate() clears the ids
    model.lm_head = HeadWith(model.lm_head, lambda z: z if BATCH_KEEP["ids"] is None
                             else z.masked_fill(~BATCH_KEEP["ids"].to(z.device), -1e4))
if a.restrict:
    keep = torch.zeros(V, dtype=torch.bool)
    keep[2] = True
    for _w in wid.values():
        keep[_w] = True
    if a.bpe:
        keep[W0:W0 + BPE.vocab_size] = True
    model.lm_head = HeadWith(model.lm_head, lambda z: z.masked_fill(~keep.to(z.device), -1e4))
if a.init:
    from omnidiff.training.clip import load_backbone
    load_backbone(model.image_encoder, a.init)
decay, no_decay, enc = [], [], []
for n, q in model.named_parameters():
    if not q.requires_grad:
        continue
    if "image_encoder.backbone" in n or (n == "lm_head.weight" and a.head_lr != 1.0):
        enc.append(q)
        continue
    (decay if q.ndim >= 2 and "embed" not in n else no_decay).append(q)
groups = [{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}]
if enc:
    groups.append({"params": enc, "weight_decay": a.wd, "lr": a.lr * (a.head_lr if a.head_lr != 1.0 else a.enc_lr)})
opt = torch.optim.AdamW(groups,
                        lr=a.lr, betas=(0.9, a.beta2), eps=a.adam_eps, fused=True)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))

vrng = np.random.default_rng(12345)
val = [example(vrng) for _ in range(200)]
pool = None


def stored_examples(split: str, limit: int | None = None) -> list:
    """Examples of a stored split: its PNGs and scene layouts, in stored order."""
    from omnidiff.data.shards import ShardStream, split_shards

    out = []
    for sample in ShardStream(split_shards(a.data, split), shuffle=False):
        if sample["__epoch__"] > 0 or (limit and len(out) == limit):
            break
        img = np.asarray(sample["png"].convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        out.append(example_img(sample["json"]["scene"], torch.from_numpy(img).permute(2, 0, 1)))
    return out


if a.data:
    val, pool = stored_examples("val", 200), stored_examples("train")
elif a.nscenes:
    prng = np.random.default_rng(a.seed + 1)
    pool = [example(prng) for _ in range(a.nscenes)]

@torch.no_grad()
def evaluate():
    BATCH_KEEP["ids"] = None
    model.eval()
    res = {}
    b = batch_of(val)
    x0 = b["tokens"]
    P = x0.shape[1] - a.answer_len
    from omnidiff.models.layers import AttentionSpec
    att = AttentionSpec("prefix", prefix_lengths=torch.full((len(val),), P), padding_mask=b["padding_mask"])
    for name, group in (("colour", COL), ("shape", SHP)):
        isg = torch.isin(x0, torch.tensor(group)) & b["answer_mask"]
        xt = torch.where(isg, torch.ones_like(x0), x0)
        logits = model(xt, attention=att, images=b["images"])
        pred = logits[..., group].argmax(-1)
        truth = torch.tensor(group)[pred]
        ok = (truth == x0)[isg]
        one = torch.tensor([len(e[3]["objects"]) == 1 for e in val]).view(-1, 1).expand_as(isg)[isg]
        res[name] = float(ok.float().mean())
        res[name + "_1obj"] = float(ok[one].float().mean())
    # greedy decode, one token per step by confidence
    xt = x0.clone()
    xt[:, P:] = 1
    for _ in range(a.answer_len):
        logits = model(xt, attention=att, images=b["images"]).float()
        logits[..., C0:] = -1e9
        logits[..., :2] = -1e9
        prob, tok = logits.softmax(-1).max(-1)
        masked = xt == 1
        prob = torch.where(masked, prob, torch.full_like(prob, -1.0))
        j = prob.argmax(1)
        rows = torch.arange(len(val))
        upd = masked[rows, j]
        xt[rows[upd], j[upd]] = tok[rows[upd], j[upd]]
    exact = (xt[:, P:] == x0[:, P:]).all(1).float().mean()
    # pair precision/recall
    tp = fp = fn = 0
    for i, e in enumerate(val):
        ids = [t for t in xt[i, P:].tolist() if W0 <= t < C0]
        words = (BPE.decode(torch.tensor(ids) - W0).replace(",", " ").split() if a.bpe
                 else [WORDS[t - W0] for t in ids])
        pairs = {(words[k], words[k + 1]) for k in range(len(words) - 1) if words[k] in shapes.COLOURS and words[k + 1] in shapes.SHAPES}
        truth = {(o["colour"], o["shape"]) for o in e[3]["objects"]}
        tp += len(pairs & truth)
        fp += len(pairs - truth)
        fn += len(truth - pairs)
    res["exact"] = float(exact)
    res["pairP"] = tp / max(1, tp + fp)
    res["pairR"] = tp / max(1, tp + fn)
    model.train()
    return res

rng = np.random.default_rng(a.seed)
log = []
t0 = time.time()
train_time = 0.0
ctx = torch.autocast("cpu", dtype=torch.bfloat16) if a.dtype == "bf16" else torch.autocast("cpu", enabled=False)
for step in range(1, a.steps + 1):
    ts = time.time()
    exs = [pool[int(rng.integers(len(pool)))] for _ in range(a.batch)] if pool else [example(rng) for _ in range(a.batch)]
    b = batch_of(exs)
    if a.restrict_batch:
        kb = torch.zeros(V, dtype=torch.bool)
        kb[b["tokens"][b["answer_mask"]].unique()] = True
        BATCH_KEEP["ids"] = kb
    with ctx:
        out = diffusion_loss(model, b, lcfg, step=step)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip if a.clip > 0 else float('inf'))
    opt.step()
    sched.step()
    train_time += time.time() - ts
    if step % a.eval_every == 0 or step == a.steps:
        r = evaluate()
        r.update(step=step, min=round(train_time / 60, 2), loss=round(out.metrics["diffusion_loss"], 4), grad_norm=round(float(gn), 3))
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        log.append(r)
    if a.minutes and train_time / 60 > a.minutes:
        r = evaluate()
        r.update(step=step, min=round(train_time / 60, 2))
        print(json.dumps(r), flush=True)
        log.append(r)
        break
if a.out:
    json.dump({"args": vars(a), "log": log}, open(a.out, "w"))
