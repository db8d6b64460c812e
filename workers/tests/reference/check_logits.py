#!/usr/bin/python3
"""Independent numpy reference for the cpu backend.

Generates small models with `llmd-worker mkmodel` (F32, F16, BF16, Q8_0;
llama with GQA, qwen2 with q/k/v biases and NEOX RoPE; tied and untied
heads), runs `llmd-worker logits` on a prompt (prefill, optionally chunked)
plus greedy decode steps, and recomputes every logit row in float64 from
the same GGUF with the plain-numpy model below.  The check: for each row,
max |worker - reference| <= 1e-4 * max |reference|.

    /usr/bin/python3 check_logits.py build/llmd-worker
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

TOLERANCE = 1e-4

# --------------------------------------------------------------------------
# GGUF

SCALAR = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f',
          7: '<?', 10: '<Q', 11: '<q', 12: '<d'}


def read_gguf(path):
    data = open(path, 'rb').read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take('<Q')
        s = data[pos:pos + n].decode('utf-8', 'replace')
        pos += n
        return s

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take('<I'), take('<Q')
            return [value(et) for _ in range(n)]
        return take(SCALAR[t])

    assert data[:4] == b'GGUF'
    pos = 8
    n_tensors, n_kv = take('<Q'), take('<Q')
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take('<I'))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take('<Q') for _ in range(take('<I'))]
        infos.append((name, dims, take('<I'), take('<Q')))
    align = meta.get('general.alignment', 32)
    start = (pos + align - 1) // align * align
    tensors = {}
    for name, dims, ttype, off in infos:
        n = int(np.prod(dims))
        raw = memoryview(data)[start + off:]
        if ttype == 0:
            a = np.frombuffer(raw, np.float32, n).astype(np.float64)
        elif ttype == 1:
            a = np.frombuffer(raw, np.float16, n).astype(np.float64)
        elif ttype == 30:
            a = (np.frombuffer(raw, np.uint16, n).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        elif ttype == 8:
            blocks = np.frombuffer(raw, np.uint8, n // 32 * 34).reshape(-1, 34)
            d = blocks[:, :2].copy().view(np.float16).astype(np.float64)
            q = blocks[:, 2:].copy().view(np.int8).astype(np.float64)
            a = (d * q).reshape(-1)
        else:
            raise ValueError(f'type {ttype}')
        tensors[name] = a.reshape(list(reversed(dims)))   # rows x cols
    return meta, tensors


# --------------------------------------------------------------------------
# the model, written from the architecture description, not from the C code

def rmsnorm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rope(x, pos, theta, neox):
    # x: [T, heads, hd]
    hd = x.shape[-1]
    freqs = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * freqs[None, :]                 # [T, hd/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def forward(meta, t, tokens):
    arch = meta['general.architecture']
    g = lambda k, d=None: meta.get(f'{arch}.{k}', d)
    n_layers, n_heads = g('block_count'), g('attention.head_count')
    n_kv = g('attention.head_count_kv', n_heads)
    eps, theta = g('attention.layer_norm_rms_epsilon'), g('rope.freq_base', 10000.0)
    neox = arch == 'qwen2'
    emb = t['token_embd.weight']
    head = t.get('output.weight', emb)
    T = len(tokens)
    x = emb[tokens]
    hd = x.shape[1] // n_heads
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(n_layers):
        p = lambda n: t.get(f'blk.{l}.{n}')
        h = rmsnorm(x, p('attn_norm.weight'), eps)
        q, k, v = h @ p('attn_q.weight').T, h @ p('attn_k.weight').T, h @ p('attn_v.weight').T
        if p('attn_q.bias') is not None:
            q, k, v = q + p('attn_q.bias'), k + p('attn_k.bias'), v + p('attn_v.bias')
        q = rope(q.reshape(T, n_heads, hd), pos, theta, neox)
        k = rope(k.reshape(T, n_kv, hd), pos, theta, neox)
        v = v.reshape(T, n_kv, hd)
        rep = n_heads // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum('thd,shd->hts', q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum('hts,shd->thd', att, v).reshape(T, n_heads * hd)
        x = x + o @ p('attn_output.weight').T
        h = rmsnorm(x, p('ffn_norm.weight'), eps)
        gate, up = h @ p('ffn_gate.weight').T, h @ p('ffn_up.weight').T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ p('ffn_down.weight').T
    return rmsnorm(x, t['output_norm.weight'], eps) @ head.T


# --------------------------------------------------------------------------

CASES = [
    # name, mkmodel flags, prompt ids, chunk
    ('llama F32 GQA 4/2 untied', ['--type', 'f32'], [1, 300, 301, 302, 303, 304, 305], 0),
    ('llama F32 GQA 8/2 tied, chunked prefill', ['--heads', '8', '--kv-heads', '2', '--tied'],
     [1, 310, 311, 312, 313, 314, 315, 316, 317, 318], 3),
    ('llama F16 GQA 4/2', ['--type', 'f16'], [1, 320, 330, 340, 350], 0),
    ('llama BF16 MHA 4/4', ['--type', 'bf16', '--kv-heads', '4'], [1, 302, 303], 0),
    ('llama Q8_0 GQA 4/1', ['--type', 'q8_0', '--kv-heads', '1'], [1, 305, 306, 307, 308], 0),
    ('qwen2 F32 biases, NEOX RoPE', ['--arch', 'qwen2', '--vocab', 'qwen2'], [300, 301, 302, 303, 304], 2),
    ('qwen2 F16 GQA 4/2', ['--arch', 'qwen2', '--vocab', 'qwen2', '--type', 'f16'], [260, 270, 280], 0),
]


def main():
    worker = sys.argv[1]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags, ids, chunk) in enumerate(CASES):
            path = os.path.join(tmp, f'm{i}.gguf')
            subprocess.run([worker, 'mkmodel', '--out', path, '--seed', str(7 + i),
                            '--dim', '64', '--ffn', '96', '--layers', '2'] + flags, check=True)
            cmd = [worker, 'logits', '--model', path, '--ids', ','.join(map(str, ids)),
                   '--steps', '4', '--threads', '2']
            if chunk:
                cmd += ['--chunk', str(chunk)]
            rows = [json.loads(line) for line in
                    subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()]
            tokens = ids + [r['next'] for r in rows[:-1]]
            meta, tensors = read_gguf(path)
            ref = forward(meta, tensors, np.array(tokens))
            worst = 0.0
            for r in rows:
                want = ref[r['pos']]
                got = np.array(r['logits'])
                worst = max(worst, np.max(np.abs(got - want)) / np.max(np.abs(want)))
            ok = worst <= TOLERANCE and len(rows) == 5
            failed += not ok
            print(f"{'ok' if ok else 'not ok'} - reference logits: {name}: "
                  f"prefill + 4 decode steps, max relative error {worst:.2e}")
    print(f'reference: {len(CASES) - failed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
