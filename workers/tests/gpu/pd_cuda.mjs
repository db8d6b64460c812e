// Disaggregated prefill/decode with the cuda backend: a prefill and a
// decode worker on the same GPU pair over CUDA IPC, and their greedy output
// must equal one colocated cuda worker's.  With two GPUs visible, a second
// pair (prefill on device 0, decode on device 1) goes over NCCL.
//
//   node pd_cuda.mjs /path/to/llmd-worker
//
// Prints SKIP and exits 0 where no CUDA device is visible.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [WORKER] = process.argv.slice(2);
let passed = 0, failed = 0;
const procs = [];

function check(name, cond, detail = '') {
  if (cond) passed++; else failed++;
  console.log(`${cond ? 'ok' : 'not ok'} - ${name}${cond || !detail ? '' : ': ' + detail}`);
}

async function startWorker(args) {
  const port = 21000 + Math.floor(Math.random() * 4000);
  const proc = spawn(WORKER, ['--listen', `127.0.0.1:${port}`, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const ready = await new Promise((resolve) => {
    proc.stderr.on('data', (d) => { log += d; if (log.includes('listening on')) resolve(true); });
    proc.on('exit', () => resolve(false));
    setTimeout(() => resolve(false), 60000);
  });
  if (!ready) throw new Error(`worker did not start: ${log}`);
  procs.push(proc);
  return { proc, base: `http://127.0.0.1:${port}`, kv: /KV transfer listener on (\S+)/.exec(log)?.[1], log: () => log };
}

async function complete(w, body, headers = {}) {
  const res = await fetch(w.base + '/v1/completions', { method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json().catch(() => null) };
}

async function landed(w) {
  const t = await (await fetch(w.base + '/metrics')).text();
  return Number(/llmd:kv_transfers_total\{[^}]*outcome="landed"\} (\S+)/.exec(t)?.[1] ?? NaN);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmd-pd-cuda-'));
const model = path.join(tmp, 'm.gguf');
try {
  spawnSync(WORKER, ['mkmodel', '--out', model, '--type', 'bf16', '--dim', '256', '--heads', '4',
    '--kv-heads', '2', '--layers', '4', '--ffn', '512', '--context', '4096'], { encoding: 'utf8' });
  const dev = spawnSync(WORKER, ['bench', '--backend', 'cuda', '--model', model, '--steps', '1'],
    { encoding: 'utf8' });
  if (dev.status !== 0 || /no CUDA device visible|not available in this build/.test(dev.stderr)) {
    console.log('SKIP: pd_cuda: no CUDA device visible');
    process.exit(0);
  }
  const cuda = (dev) => ['--backend', 'cuda', '--device', String(dev), '--model', model,
    '--kv-blocks', '256', '--chat-template', 'plain'];
  const words = (n, s) => Array.from({ length: n }, (_, i) => `w${(i * 7919 + s) % 1000}`).join(' ');
  let id = 1;

  async function pair(pdev, ddev, transport) {
    const p = await startWorker([...cuda(pdev), '--role', 'prefill', '--kv-listen', '127.0.0.1:0']);
    const d = await startWorker([...cuda(ddev), '--role', 'decode']);
    const colo = await startWorker(cuda(ddev));
    for (const len of [60, 300]) {
      const body = { prompt: words(len, len), max_tokens: 16, temperature: 0, logprobs: 1 };
      const want = await complete(colo, body);
      const got = await complete(d, body, { 'X-LLMD-Prefill-Peer': p.kv, 'X-LLMD-Transfer-Id': (id++).toString(16) });
      const toks = (r) => JSON.stringify(r.json?.choices?.[0]?.logprobs?.tokens);
      check(`${transport}: ${len}-word prompt, greedy output equals a colocated worker's`,
        got.status === 200 && toks(got) === toks(want), `${toks(got)} vs ${toks(want)}`);
    }
    check(`${transport}: transfers landed`, (await landed(d)) === 2);
    check(`${transport}: paired over ${transport}`, d.log().includes(`, ${transport})`), d.log());
    for (const w of [p, d, colo]) w.proc.kill('SIGTERM');
  }

  await pair(0, 0, 'cuda-ipc');
  const count = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' }).stdout?.split('\n').filter(Boolean).length ?? 0;
  if (count >= 2)
    await pair(0, 1, 'nccl');
  else
    console.log('SKIP: nccl pair: one GPU visible');
} catch (e) {
  check('suite ran to the end', false, e.stack);
} finally {
  for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(`pd-cuda: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
