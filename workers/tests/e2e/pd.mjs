// End-to-end checks of disaggregated prefill/decode between real workers:
// KV pages pushed over TCP from a prefill worker into a decode worker,
// byte-identical pages (sim, --sim-check-kv), token-identical greedy output
// (cpu backend), decode-side prefix hits not re-sent, and the failures:
// prefill killed mid-transfer (recompute, or a clean error), decode killed
// or frozen (the prefill worker's pages come back), mismatched layout
// (handshake refused), deadline passed.
//
//   node pd.mjs /path/to/llmd-worker
//
// Prints "ok"/"not ok" lines and "pd: N passed, M failed"; exits non-zero
// on any failure.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [WORKER] = process.argv.slice(2);
let passed = 0, failed = 0;
const procs = [];
const logs = [];

function check(name, cond, detail = '') {
  if (cond) passed++; else failed++;
  console.log(`${cond ? 'ok' : 'not ok'} - ${name}${cond || !detail ? '' : ': ' + detail}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startWorker(args) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 5000);
    const proc = spawn(WORKER, ['--listen', `127.0.0.1:${port}`, ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const ready = await new Promise((resolve) => {
      proc.stderr.on('data', (d) => { log += d; if (log.includes('listening on')) resolve(true); });
      proc.on('exit', () => resolve(false));
      setTimeout(() => resolve(false), 20000);
    });
    if (ready) {
      procs.push(proc);
      logs.push(() => log);
      const kv = /KV transfer listener on (\S+)/.exec(log)?.[1];
      return { proc, base: `http://127.0.0.1:${port}`, kv, log: () => log };
    }
    proc.kill('SIGKILL');
    if (!log.includes('cannot listen')) throw new Error(`worker did not start: ${log}`);
  }
  throw new Error('no free port');
}

async function complete(w, body, headers = {}) {
  const res = await fetch(w.base + '/v1/completions', { method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* SSE */ }
  return { status: res.status, json, text };
}

async function metrics(w) {
  const text = await (await fetch(w.base + '/metrics')).text();
  const get = (re) => Number((new RegExp(re).exec(text) || [])[1] ?? NaN);
  return {
    landed: get('llmd:kv_transfers_total\\{[^}]*outcome="landed"\\} (\\S+)'),
    recomputed: get('llmd:kv_transfers_total\\{[^}]*outcome="recomputed"\\} (\\S+)'),
    failed: get('llmd:kv_transfers_total\\{[^}]*outcome="failed"\\} (\\S+)'),
    served: get('llmd:kv_transfers_served_total\\{[^}]*outcome="done"\\} (\\S+)'),
    servedFailed: get('llmd:kv_transfers_served_total\\{[^}]*outcome="failed"\\} (\\S+)'),
    received: get('llmd:kv_transfer_bytes_total\\{[^}]*direction="received"\\} (\\S+)'),
    sent: get('llmd:kv_transfer_bytes_total\\{[^}]*direction="sent"\\} (\\S+)'),
    early: get('llmd:kv_transfer_early_bytes_total\\{[^}]*\\} (\\S+)'),
    usage: get('vllm:kv_cache_usage_perc\\{[^}]*\\} (\\S+)'),
    checked: get('\\nllmd:sim_kv_checked_tokens_total (\\S+)'),
    mismatched: get('\\nllmd:sim_kv_mismatched_tokens_total (\\S+)'),
    running: get('vllm:num_requests_running\\{[^}]*\\} (\\S+)'),
    queued: get('llmd:num_prefill_tokens_queued\\{[^}]*\\} (\\S+)'),
  };
}

async function waitFor(fn, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return true;
    await sleep(50);
  }
  return false;
}

let nextId = 1;
const remote = (p) => ({ 'X-LLMD-Prefill-Peer': p.kv, 'X-LLMD-Transfer-Id': (nextId++).toString(16) });
const words = (n, seed) => Array.from({ length: n }, (_, i) => `w${(i * 7919 + seed) % 1000}`).join(' ');

// sim: 2 layers x K,V x 2 heads x 4 dims x 1 byte = 32 bytes per token
const SIM_TOKEN_BYTES = 32;
const BT = 16;

async function simPair() {
  const sim = ['--backend', 'sim', '--speed', '0', '--sim-check-kv'];
  const p = await startWorker([...sim, '--role', 'prefill', '--kv-listen', '127.0.0.1:0']);
  const d = await startWorker([...sim, '--role', 'decode']);
  return { p, d };
}

async function testSimPages() {
  const { p, d } = await simPair();
  const colo = await startWorker(['--backend', 'sim', '--speed', '0']);
  check('prefill worker advertises its KV listener', /^127\.0\.0\.1:\d+$/.test(p.kv ?? ''), p.log());

  const prompt = words(600, 1);
  const body = { prompt, max_tokens: 24, temperature: 0 };
  const want = await complete(colo, body);
  const got = await complete(d, body, remote(p));
  check('remote prefill: 200', got.status === 200, got.text);
  check('remote prefill: same text as a colocated worker',
    got.json?.choices?.[0]?.text === want.json?.choices?.[0]?.text,
    `${got.json?.choices?.[0]?.text} vs ${want.json?.choices?.[0]?.text}`);
  const n = got.json?.usage?.prompt_tokens;
  let m = await metrics(d);
  check('decode: one transfer landed', m.landed === 1 && m.recomputed === 0, JSON.stringify(m));
  check('decode: received the KV of every prompt token but the last',
    m.received === (n - 1) * SIM_TOKEN_BYTES, `${m.received} vs ${(n - 1) * SIM_TOKEN_BYTES}`);
  check('decode: every KV row it read holds the right bytes (--sim-check-kv)',
    m.checked >= n - 1 && m.mismatched === 0, JSON.stringify(m));
  const pm = await metrics(p);
  check('prefill: sent what decode received', pm.sent === m.received && pm.served === 1,
    JSON.stringify(pm));
  check('prefill: pages released after the transfer',
    await waitFor(async () => (await metrics(p)).usage === 0, 3000));

  // a second prompt sharing the first 400 words: the decode worker's cached
  // blocks are not sent again
  const prompt2 = prompt.split(' ').slice(0, 400).join(' ') + ' ' + words(200, 7);
  const before = m.received;
  const got2 = await complete(d, { prompt: prompt2, max_tokens: 8, temperature: 0 }, remote(p));
  m = await metrics(d);
  const n2 = got2.json?.usage?.prompt_tokens;
  let common = 0;
  while (common < prompt.length && prompt[common] === prompt2[common]) common++;
  const cachedBlocks = Math.floor(common / BT);
  const expect = (n2 - 1 - cachedBlocks * BT) * SIM_TOKEN_BYTES;
  check('shared prefix: only the blocks the decode worker lacks are sent',
    got2.status === 200 && m.received - before === expect,
    `${m.received - before} vs ${expect} (prompt ${n2}, ${cachedBlocks} blocks cached)`);
  check('shared prefix: pages still right', m.mismatched === 0);

  // the same prompt again: everything but the last token is cached here, so
  // nothing is transferred
  const landed = m.landed;
  const again = await complete(d, body, remote(p));
  m = await metrics(d);
  check('fully cached prompt: no transfer', again.status === 200 && m.landed === landed
    && again.json?.choices?.[0]?.text === want.json?.choices?.[0]?.text, JSON.stringify(m));

  // streamed, through the same pair connection
  const sres = await complete(d, { prompt: words(300, 3), max_tokens: 10, temperature: 0, stream: true }, remote(p));
  check('streamed remote prefill ends with [DONE]', sres.status === 200 && sres.text.includes('data: [DONE]'));
  check('one pair connection for all transfers',
    (d.log().match(/paired with prefill worker/g) || []).length === 1, d.log());

  // concurrent transfers on one connection
  const many = await Promise.all(Array.from({ length: 8 }, (_, i) =>
    complete(d, { prompt: words(500, 100 + i), max_tokens: 6, temperature: 0 }, remote(p))));
  m = await metrics(d);
  check('8 concurrent transfers all land', many.every((r) => r.status === 200) && m.mismatched === 0
    && m.landed === landed + 1 + 8, JSON.stringify(m));

  const bad = await complete(d, body, { 'X-LLMD-Prefill-Peer': 'nonsense', 'X-LLMD-Transfer-Id': '1' });
  check('malformed X-LLMD-Prefill-Peer: 400', bad.status === 400 && bad.json?.error?.param === 'X-LLMD-Prefill-Peer',
    bad.text);
  for (const w of [p, d, colo]) w.proc.kill('SIGTERM');
}

async function testCpuIdentical(tmp) {
  const model = path.join(tmp, 'pd-tiny.gguf');
  const mk = spawnSync(WORKER, ['mkmodel', '--out', model, '--seed', '5', '--context', '4096'], { encoding: 'utf8' });
  check('mkmodel', mk.status === 0, mk.stderr);
  const cpu = ['--backend', 'cpu', '--model', model, '--threads', '1', '--kv-blocks', '512',
    '--chat-template', 'plain'];
  const p = await startWorker([...cpu, '--role', 'prefill', '--kv-listen', '127.0.0.1:0']);
  const d = await startWorker([...cpu, '--role', 'decode']);
  const colo = await startWorker(cpu);
  for (const [i, len] of [[0, 40], [1, 200], [2, 333]]) {
    const body = { prompt: words(len, 11 + i), max_tokens: 24, temperature: 0, logprobs: 1 };
    const want = await complete(colo, body);
    const got = await complete(d, body, remote(p));
    const toks = (r) => JSON.stringify(r.json?.choices?.[0]?.logprobs?.tokens);
    check(`cpu model, ${len}-word prompt: greedy output token-identical to one worker`,
      got.status === 200 && toks(got) === toks(want) && got.json.choices[0].text === want.json.choices[0].text,
      `${toks(got)} vs ${toks(want)}`);
  }
  const m = await metrics(d);
  check('cpu model: every request was prefilled remotely', m.landed === 3 && m.recomputed === 0,
    JSON.stringify(m));
  // f32 pages: layers x 2 x kv_dim x 4 bytes per token
  check('cpu model: pages moved', m.received > 0 && m.early >= 0, JSON.stringify(m));
  for (const w of [p, d, colo]) w.proc.kill('SIGTERM');
}

// A slow prefill: the 8B profile at --speed 4 takes about a second for
// 6000 tokens, long enough to kill or freeze a worker in the middle.
const SLOW = ['--backend', 'sim', '--sim-profile', 'llama3-8b-h100', '--speed', '4',
  '--max-batch-tokens', '512'];

async function testKillPrefill(policy) {
  const p = await startWorker([...SLOW, '--role', 'prefill', '--kv-listen', '127.0.0.1:0']);
  const d = await startWorker(['--backend', 'sim', '--speed', '0', '--role', 'decode',
    '--pd-failure', policy, '--sim-check-kv']);
  const body = { prompt: words(1200, 21), max_tokens: 12, temperature: 0 };
  const pending = complete(d, body, remote(p));
  await sleep(400);
  const mid = await metrics(d);
  const pmid = await metrics(p);
  p.proc.kill('SIGKILL');
  const t0 = Date.now();
  const res = await pending;
  const m = await metrics(d);
  if (policy === 'recompute') {
    check('prefill killed mid-transfer, recompute: the request completes',
      res.status === 200 && res.json?.usage?.completion_tokens === 12, res.text);
    check('recompute: counted, and the pages it read are right', m.recomputed === 1 && m.mismatched === 0,
      JSON.stringify(m));
  } else {
    check('prefill killed mid-transfer, fail: a clean 502 error body',
      res.status === 502 && res.json?.error?.code === 'kv_transfer_failed', res.text);
    check('fail: counted', m.failed === 1, JSON.stringify(m));
  }
  check(`${policy}: the request was still waiting for its KV when the prefill died`,
    mid.landed === 0 && mid.running === 1, JSON.stringify(mid));
  check(`${policy}: the prefill backlog gauge counts it on the prefill worker, not the decode worker`,
    pmid.queued > 0 && mid.queued === 0, `prefill ${pmid.queued}, decode ${mid.queued}`);
  check(`${policy}: the loss is noticed at once`, Date.now() - t0 < 3000, `${Date.now() - t0} ms`);
  check(`${policy}: the decode log names the lost connection`,
    /connection to prefill worker \S+ lost/.test(d.log()), d.log());
  check(`${policy}: the decode worker's pages are free again`,
    await waitFor(async () => (await metrics(d)).usage === 0, 3000));
  d.proc.kill('SIGTERM');
}

async function testDecodeGone(how) {
  const p = await startWorker([...SLOW, '--role', 'prefill', '--kv-listen', '127.0.0.1:0',
    '--pd-lease-ms', '800']);
  const d = await startWorker(['--backend', 'sim', '--speed', '0', '--role', 'decode',
    '--sim-check-kv']);
  const body = { prompt: words(1200, 31), max_tokens: 4, temperature: 0 };
  const pending = complete(d, body, remote(p)).catch(() => null);
  const busy = await waitFor(async () => (await metrics(p)).usage > 0, 2000);
  check(`decode ${how}: the prefill worker holds pages for it`, busy);
  d.proc.kill(how === 'killed' ? 'SIGKILL' : 'SIGSTOP');
  const t0 = Date.now();
  const freed = await waitFor(async () => (await metrics(p)).usage === 0, 4000);
  check(`decode ${how}: the prefill worker's pages are freed (${how === 'killed' ? 'connection closed' : 'lease of 800 ms'})`,
    freed, `after ${Date.now() - t0} ms`);
  check(`decode ${how}: counted as a failed transfer`,
    await waitFor(async () => (await metrics(p)).servedFailed === 1, 2000));
  if (how === 'frozen') {
    check('frozen: the prefill log says the lease ended', /lease ended before the prefill did/.test(p.log()),
      p.log());
    d.proc.kill('SIGCONT');
    const res = await pending;
    check('frozen decode resumes: its request still completes (recomputed)', res?.status === 200, res?.text);
  }
  for (const w of [p, d]) w.proc.kill('SIGKILL');
}

async function testLayoutMismatch() {
  const p = await startWorker(['--backend', 'sim', '--speed', '0', '--role', 'prefill',
    '--kv-listen', '127.0.0.1:0', '--block-tokens', '32']);
  const d = await startWorker(['--backend', 'sim', '--speed', '0', '--role', 'decode']);
  const res = await complete(d, { prompt: words(300, 41), max_tokens: 5, temperature: 0 }, remote(p));
  const m = await metrics(d);
  check('layout mismatch: the request completes by recomputing', res.status === 200 && m.recomputed === 1,
    res.text + JSON.stringify(m));
  check('layout mismatch: the prefill worker logs why it refused',
    /refusing decode worker .*KV layout mismatch: prefill has .*block_tokens=32, decode has .*block_tokens=16/
      .test(p.log()), p.log());
  check('layout mismatch: the decode worker logs the refusal',
    /prefill worker \S+ refused the handshake: KV layout mismatch/.test(d.log()), d.log());
  for (const w of [p, d]) w.proc.kill('SIGTERM');
}

async function testDeadline() {
  const p = await startWorker([...SLOW, '--role', 'prefill', '--kv-listen', '127.0.0.1:0']);
  const d = await startWorker(['--backend', 'sim', '--speed', '0', '--role', 'decode',
    '--pd-timeout-ms', '300']);
  const t0 = Date.now();
  const res = await complete(d, { prompt: words(1200, 51), max_tokens: 5, temperature: 0 }, remote(p));
  const m = await metrics(d);
  check('deadline: the request completes by recomputing once it passes',
    res.status === 200 && m.recomputed === 1 && Date.now() - t0 < 3000, `${res.status} ${Date.now() - t0} ms`);
  check('deadline: logged', /no DONE within 300 ms/.test(d.log()), d.log());
  check('deadline: the prefill worker drops the aborted prefill and frees its pages',
    await waitFor(async () => (await metrics(p)).usage === 0, 4000));
  const unreachable = await complete(d, { prompt: words(200, 52), max_tokens: 3, temperature: 0 },
    { 'X-LLMD-Prefill-Peer': '127.0.0.1:1', 'X-LLMD-Transfer-Id': 'ff' });
  check('unreachable prefill peer: recomputed locally', unreachable.status === 200
    && /cannot pair with prefill worker 127.0.0.1:1/.test(d.log()), unreachable.text);
  for (const w of [p, d]) w.proc.kill('SIGTERM');
}

// The prefill worker advertises the gateway keys of what it prefilled for a
// decode worker, so gateways can send the next prompt with that prefix to
// it (prefill affinity).
async function testPrefillAdvertises(tmp) {
  const FLEET = path.join(path.dirname(WORKER), 'llmd-fleet');
  const sock = path.join(tmp, 'redis.sock');
  const redis = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '',
    '--appendonly', 'no', '--dir', tmp], { stdio: 'ignore' });
  procs.push(redis);
  if (!(await waitFor(() => fs.existsSync(sock), 5000))) {
    check('redis-server started', false);
    return;
  }
  const url = 'unix://' + sock;
  const common = ['--backend', 'sim', '--speed', '0', '--redis', url, '--heartbeat-ms', '50'];
  const p = await startWorker([...common, '--role', 'prefill', '--kv-listen', '127.0.0.1:0',
    '--worker-id', 'pf-1']);
  const d = await startWorker([...common, '--role', 'decode', '--worker-id', 'dc-1']);
  const fleet = (...a) => spawnSync(FLEET, ['--redis', url, ...a], { encoding: 'utf8' }).stdout;
  const hb = await waitFor(() => /"id":"pf-1"/.test(fleet('workers')), 3000);
  check('prefill worker heartbeat carries its KV address', hb && fleet('workers').includes(`"kv":"${p.kv}"`),
    fleet('workers'));
  const body = { prompt: words(700, 61), max_tokens: 4, temperature: 0 };
  const res = await complete(d, body, remote(p));
  const want = JSON.parse(spawnSync(FLEET, ['keys'], { input: JSON.stringify(body), encoding: 'utf8' }).stdout).keys;
  const storedBy = (id) => fleet('events', '200').split('\n').filter((l) => l.includes(`"id":"${id}"`)
    && l.includes('"type":"stored"')).flatMap((l) => JSON.parse(l).keys);
  const ok = await waitFor(() => storedBy('pf-1').length > 0, 3000);
  const got = storedBy('pf-1');
  check('prefill worker advertises the keys of the prompt it prefilled for a decode worker',
    res.status === 200 && ok && got.length >= want.length - 1 && got.every((k) => want.includes(k)),
    `${got.length} of ${want.length}: ${fleet('events', '20')}`);
  check('decode worker advertises them too', storedBy('dc-1').length >= want.length - 1,
    fleet('events', '20'));
  for (const w of [p, d]) w.proc.kill('SIGTERM');
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmd-pd-'));
try {
  await testSimPages();
  await testPrefillAdvertises(tmp);
  await testCpuIdentical(tmp);
  await testKillPrefill('recompute');
  await testKillPrefill('fail');
  await testDecodeGone('killed');
  await testDecodeGone('frozen');
  await testLayoutMismatch();
  await testDeadline();
} catch (e) {
  check('suite ran to the end', false, e.stack);
} finally {
  for (const p of procs) { try { p.kill('SIGCONT'); p.kill('SIGTERM'); } catch { /* gone */ } }
  await sleep(1500);
  for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
  const reports = logs.map((l) => l()).filter((l) => /AddressSanitizer|LeakSanitizer|runtime error:/.test(l));
  check('no sanitizer report from any worker', reports.length === 0, reports.join('\n---\n').slice(0, 4000));
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(`pd: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
