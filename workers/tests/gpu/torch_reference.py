#!/usr/bin/env python3
"""PyTorch reference for bench/drivers/cuda.sh: a Llama-shaped decoder with
random bf16 weights, run eagerly with scaled_dot_product_attention on the
same shapes as the cuda backend's benchmark.

  decode   B sequences, each with a contiguous KV cache holding `context`
           tokens, one new token per sequence per step (warm-up first)
  prefill  one prompt of `prompt` tokens in one causal pass

One JSON line per measurement:
  {"impl": "torch", "shape": NAME, "kind": "decode", "batch": B, "tok_s": ...}
  {"impl": "torch", "shape": NAME, "kind": "prefill", "tokens": P, "tok_s": ...}
Prints "SKIP: ..." and exits 0 without PyTorch or without a GPU.
"""

import argparse
import json
import math
import sys
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--dim', type=int, default=2048)
    ap.add_argument('--layers', type=int, default=16)
    ap.add_argument('--heads', type=int, default=32)
    ap.add_argument('--kv-heads', type=int, default=8)
    ap.add_argument('--ffn', type=int, default=8192)
    ap.add_argument('--vocab', type=int, default=128256)
    ap.add_argument('--tied', action='store_true')
    ap.add_argument('--batches', default='1,8,64')
    ap.add_argument('--context', type=int, default=512)
    ap.add_argument('--steps', type=int, default=32)
    ap.add_argument('--prompt', type=int, default=2048)
    ap.add_argument('--name', default='model')
    return ap.parse_args()


class Model:
    def __init__(self, a, torch):
        self.t = torch
        self.a = a
        dev, dt = 'cuda', torch.bfloat16
        hd = a.dim // a.heads
        self.hd, self.q_dim, self.kv_dim = hd, a.heads * hd, a.kv_heads * hd

        def w(rows, cols):
            return torch.randn(rows, cols, device=dev, dtype=dt) / math.sqrt(cols)

        self.embd = torch.randn(a.vocab, a.dim, device=dev, dtype=dt)
        self.head = self.embd if a.tied else w(a.vocab, a.dim)
        self.layers = [dict(qkv=w(self.q_dim + 2 * self.kv_dim, a.dim), o=w(a.dim, self.q_dim),
                            gu=w(2 * a.ffn, a.dim), down=w(a.dim, a.ffn),
                            n1=torch.ones(a.dim, device=dev, dtype=dt),
                            n2=torch.ones(a.dim, device=dev, dtype=dt))
                       for _ in range(a.layers)]
        self.norm = torch.ones(a.dim, device=dev, dtype=dt)
        inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=dev).float() / hd))
        pos = torch.arange(a.context + a.prompt + a.steps + 8, device=dev).float()
        ang = torch.outer(pos, inv)
        self.cos, self.sin = ang.cos().to(dt), ang.sin().to(dt)
        try:        # GQA without copying K/V (torch >= 2.5)
            q = torch.zeros(1, a.heads, 1, hd, device=dev, dtype=dt)
            kv = torch.zeros(1, a.kv_heads, 1, hd, device=dev, dtype=dt)
            torch.nn.functional.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
            self.gqa = True
        except TypeError:
            self.gqa = False

    def rms(self, x, w):
        x32 = x.float()
        return (x32 * self.t.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * w

    def rope(self, x, p0):
        # x [B, H, T, hd]; NEOX halves
        t = x.shape[2]
        c, s = self.cos[p0:p0 + t], self.sin[p0:p0 + t]
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return self.t.cat((x1 * c - x2 * s, x1 * s + x2 * c), -1)

    def step(self, tokens, p0, cache):
        """tokens [B, T] at positions p0.. ; cache: per layer (K, V) [B, kvh, max, hd]"""
        F = self.t.nn.functional
        a = self.a
        b, t = tokens.shape
        h = self.embd[tokens]
        for layer, (ck, cv) in zip(self.layers, cache):
            x = self.rms(h, layer['n1'])
            q, k, v = (x @ layer['qkv'].T).split([self.q_dim, self.kv_dim, self.kv_dim], -1)
            q = self.rope(q.view(b, t, a.heads, self.hd).transpose(1, 2), p0)
            k = self.rope(k.view(b, t, a.kv_heads, self.hd).transpose(1, 2), p0)
            ck[:, :, p0:p0 + t] = k
            cv[:, :, p0:p0 + t] = v.view(b, t, a.kv_heads, self.hd).transpose(1, 2)
            kk, vv = ck[:, :, : p0 + t], cv[:, :, : p0 + t]
            causal = t > 1 and p0 == 0
            if self.gqa:
                o = F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, enable_gqa=True)
            else:
                rep = a.heads // a.kv_heads
                o = F.scaled_dot_product_attention(q, kk.repeat_interleave(rep, 1),
                                                   vv.repeat_interleave(rep, 1), is_causal=causal)
            h = h + o.transpose(1, 2).reshape(b, t, self.q_dim) @ layer['o'].T
            x = self.rms(h, layer['n2'])
            g, u = (x @ layer['gu'].T).chunk(2, -1)
            h = h + (F.silu(g) * u) @ layer['down'].T
        return (self.rms(h[:, -1], self.norm) @ self.head.T).argmax(-1)

    def cache(self, b, length):
        shape = (b, self.a.kv_heads, length, self.hd)
        return [(self.t.zeros(shape, device='cuda', dtype=self.t.bfloat16),
                 self.t.zeros(shape, device='cuda', dtype=self.t.bfloat16))
                for _ in range(self.a.layers)]


def timed(torch, fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    a = parse()
    try:
        import torch
    except ImportError:
        print('SKIP: PyTorch is not installed')
        return 0
    if not torch.cuda.is_available():
        print('SKIP: no CUDA device visible to PyTorch')
        return 0
    torch.manual_seed(1)
    with torch.inference_mode():
        m = Model(a, torch)
        common = dict(impl='torch', shape=a.name, device=torch.cuda.get_device_name(),
                      torch=torch.__version__, gqa_sdpa=m.gqa)

        # prefill: one prompt, causal, after a warm-up pass
        cache = m.cache(1, a.prompt)
        ids = torch.randint(0, a.vocab, (1, a.prompt), device='cuda')
        m.step(ids, 0, cache)
        s = timed(torch, lambda: m.step(ids, 0, cache))
        print(json.dumps(dict(common, kind='prefill', tokens=a.prompt, tok_s=a.prompt / s)),
              flush=True)
        del cache

        for b in (int(x) for x in a.batches.split(',')):
            warm = 3
            cache = m.cache(b, a.context + warm + a.steps + 1)
            ids = torch.randint(0, a.vocab, (b, a.context), device='cuda')
            nxt = m.step(ids, 0, cache)[:, None]

            def decode(first, n):
                tok = nxt
                for i in range(n):
                    tok = m.step(tok, a.context + first + i, cache)[:, None]
            decode(0, warm)
            s = timed(torch, lambda: decode(warm, a.steps))
            print(json.dumps(dict(common, kind='decode', batch=b, context=a.context,
                                  tok_s=b * a.steps / s)), flush=True)
            del cache
    return 0


if __name__ == '__main__':
    sys.exit(main())
