"""PyTorch reference for `cargo bench --bench train_step`: one CLIP training step of the
same PE-style model, batch and optimizer as the Rust side (bench/train_step.rs), written
from shared/docs/pe-reference.md. Prints one JSON line: parameters, samples/s (median of
the timed steps) and the per-step times.

    python3 bench/train_step.py [--threads 2] [--steps 20] [--warmup 3]
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The fixed configuration; bench/train_step.rs holds the same numbers.
IMAGE, PATCH, WIDTH, DEPTH, HEADS, MLP, OUT, POOL_HEADS = 64, 8, 192, 6, 3, 768, 128, 8
CTX, T_WIDTH, T_DEPTH, T_HEADS, VOCAB = 16, 192, 4, 3, 1000
BATCH, LR, WD = 32, 1e-3, 0.05


def rope_tables(head_dim, rows, cols, cls):
    q = head_dim // 4
    inv = 10000.0 ** (-torch.arange(q, dtype=torch.float64) * 2 / (head_dim / 2))
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    shift = 1 if cls else 0
    x = (xs.flatten() + shift).double()[:, None] * inv
    y = (ys.flatten() + shift).double()[:, None] * inv
    ang = torch.cat([x.repeat_interleave(2, 1), y.repeat_interleave(2, 1)], 1).float()
    if cls:
        ang = torch.cat([torch.zeros(1, head_dim), ang], 0)
    return ang.cos(), ang.sin()


def rotate(t, cos, sin):
    a, b = t[..., 0::2], t[..., 1::2]
    rot = torch.stack([-b, a], -1).flatten(-2)
    return t * cos + rot * sin


class Attn(nn.Module):
    def __init__(self, w, h):
        super().__init__()
        self.h = h
        self.in_proj = nn.Linear(w, 3 * w)
        self.out_proj = nn.Linear(w, w)

    def forward(self, x, rope=None, causal=False):
        n, t, w = x.shape
        q, k, v = self.in_proj(x).split(w, -1)
        q, k, v = (z.view(n, t, self.h, w // self.h).transpose(1, 2) for z in (q, k, v))
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(o.transpose(1, 2).reshape(n, t, w))


class Block(nn.Module):
    def __init__(self, w, h, mlp):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(w), Attn(w, h), nn.LayerNorm(w)
        self.mlp = nn.Sequential(nn.Linear(w, mlp), nn.GELU(), nn.Linear(mlp, w))

    def forward(self, x, rope=None, causal=False):
        x = x + self.attn(self.ln_1(x), rope, causal)
        return x + self.mlp(self.ln_2(x))


class Vision(nn.Module):
    def __init__(self):
        super().__init__()
        g = IMAGE // PATCH
        self.conv1 = nn.Conv2d(3, WIDTH, PATCH, PATCH, bias=False)
        self.cls = nn.Parameter(torch.randn(WIDTH) * WIDTH**-0.5)
        self.pos = nn.Parameter(torch.randn(1 + g * g, WIDTH) * WIDTH**-0.5)
        self.ln_pre, self.ln_post = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.blocks = nn.ModuleList(Block(WIDTH, HEADS, MLP) for _ in range(DEPTH))
        self.probe = nn.Parameter(torch.randn(1, 1, WIDTH) * WIDTH**-0.5)
        self.pool = nn.MultiheadAttention(WIDTH, POOL_HEADS, batch_first=True)
        self.pool_ln = nn.LayerNorm(WIDTH)
        self.pool_mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))
        self.proj = nn.Parameter(torch.randn(WIDTH, OUT) * WIDTH**-0.5)
        self.rope = rope_tables(WIDTH // HEADS, g, g, True)

    def forward(self, img):
        x = self.conv1(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], 1) + self.pos
        x = self.ln_pre(x)
        for b in self.blocks:
            x = b(x, self.rope)
        x = self.ln_post(x)
        a = self.pool(self.probe.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]
        a = a + self.pool_mlp(self.pool_ln(a))
        return a[:, 0] @ self.proj


class Text(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, T_WIDTH)
        self.pos = nn.Parameter(torch.randn(CTX, T_WIDTH) * 0.01)
        self.blocks = nn.ModuleList(Block(T_WIDTH, T_HEADS, 4 * T_WIDTH) for _ in range(T_DEPTH))
        self.ln_final = nn.LayerNorm(T_WIDTH)
        self.proj = nn.Parameter(torch.randn(T_WIDTH, OUT) * T_WIDTH**-0.5)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for b in self.blocks:
            x = b(x, causal=True)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(-1)] @ self.proj


class Clip(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision, self.text = Vision(), Text()
        self.logit_scale = nn.Parameter(torch.tensor([math.log(1 / 0.07)]))

    def forward(self, img, ids):
        i = F.normalize(self.vision(img), dim=-1)
        t = F.normalize(self.text(ids), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100) * i @ t.T
        labels = torch.arange(img.shape[0])
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Clip()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WD}, {"params": other, "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.999), eps=1e-8,
    )
    g = torch.Generator().manual_seed(1)
    img = torch.rand(BATCH, 3, IMAGE, IMAGE, generator=g) * 2 - 1
    ids = torch.randint(1, VOCAB - 2, (BATCH, CTX), generator=g)
    ids[:, 0] = VOCAB - 2
    ids[:, CTX - 1] = VOCAB - 1
    times = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = model(img, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if s >= a.warmup:
            times.append(dt)
    med = statistics.median(times)
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "threads": a.threads,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": BATCH,
        "median_step_s": med,
        "samples_per_s": BATCH / med,
        "loss": float(loss),
    }))


if __name__ == "__main__":
    main()
