// Fleet-state tests: llmd-worker --redis against a real redis-server.
//
//   node redis.mjs /path/to/llmd-worker /path/to/llmd-fleet
//
// Starts its own redis-server on a unix socket (and kills it at the end),
// reads what the worker publishes back through llmd-fleet, and prints one
// "ok"/"not ok" line per check, closing with "redis: N passed, M failed".

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const [WORKER, FLEET] = process.argv.slice(2);
const DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'llmd-r-'));
const SOCK = path.join(DIR, 'redis.sock');
const URL = `unix://${SOCK}`;
const WORKER_ID = 'w-test';
let passed = 0, failed = 0;
const children = [];

function check(name, cond, detail = '') {
  if (cond) {
    passed++;
    console.log(`ok - ${name}`);
  } else {
    failed++;
    console.log(`not ok - ${name}${detail ? ': ' + detail : ''}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(fn, ms = 3000, every = 50) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > end) return v;
    await sleep(every);
  }
}

// ---------------------------------------------------------------------------
// processes

async function startRedis() {
  const proc = spawn('redis-server', ['--port', '0', '--unixsocket', SOCK,
    '--unixsocketperm', '777', '--save', '', '--appendonly', 'no'],
  { stdio: 'ignore' });
  children.push(proc);
  const up = await until(() => fs.existsSync(SOCK), 5000, 20);
  if (!up) throw new Error('redis-server did not start');
  return proc;
}

function kill(proc, sig = 'SIGKILL') {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  const done = new Promise((r) => proc.on('exit', () => r()));
  proc.kill(sig);
  return done;
}

async function startWorker(args) {
  const proc = spawn(WORKER, ['--listen', '127.0.0.1:0', ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(proc);
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const port = await until(() => {
    const m = log.match(/listening on 127\.0\.0\.1:(\d+)/);
    return m ? Number(m[1]) : 0;
  }, 10000, 20);
  if (!port) throw new Error(`worker did not start: ${log}`);
  return { proc, port, base: `http://127.0.0.1:${port}`, log: () => log };
}

function fleet(...args) {
  const r = spawnSync(FLEET, ['--redis', URL, ...args], { encoding: 'utf8' });
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function gatewayKeys(body) {
  const r = spawnSync(FLEET, ['keys'], { input: JSON.stringify(body), encoding: 'utf8' });
  return JSON.parse(r.stdout).keys;
}

const heartbeat = () => fleet('workers').find((h) => h.id === WORKER_ID);
const events = () => fleet('events', '1000').filter((e) => e.id === WORKER_ID);

// ---------------------------------------------------------------------------
// HTTP

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

function post(w, urlPath, body) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    let headersAt = 0, firstDataAt = 0;
    const req = http.request(`${w.base}${urlPath}`, {
      method: 'POST', agent, headers: { 'Content-Type': 'application/json' },
    }, (res) => {
      headersAt = Date.now() - t0;
      const parts = [];
      res.on('data', (d) => {
        if (!firstDataAt) firstDataAt = Date.now() - t0;
        parts.push(d);
      });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        text: Buffer.concat(parts).toString(), headersAt, firstDataAt }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const text = (n, seed) => Array.from({ length: n }, (_, i) =>
  String.fromCharCode(97 + ((i * 7 + seed * 13) % 26))).join('');

// ---------------------------------------------------------------------------

async function badUrls() {
  for (const url of ['http://h:1', 'redis://h:0', 'redis://h:1/x', 'unix://rel.sock',
    'redis://user@h:1', 'unix:///s?pass=x']) {
    const r = spawnSync(WORKER, ['--redis', url], { encoding: 'utf8' });
    check(`--redis ${url} exits 2 with one line`, r.status === 2
      && r.stderr.trim().split('\n').length === 1 && r.stderr.includes('--redis'),
    `status ${r.status}: ${r.stderr}`);
  }
  const r = spawnSync(WORKER, ['--prefix-block', '7'], { encoding: 'utf8' });
  check('--prefix-block 7 exits 2', r.status === 2, r.stderr);
}

async function main() {
  await badUrls();
  let redis = await startRedis();
  const w = await startWorker(['--redis', URL, '--worker-id', WORKER_ID,
    '--heartbeat-ms', '50', '--kv-blocks', '64', '--max-batch', '8']);

  // heartbeat
  const hb = await until(heartbeat, 3000);
  check('heartbeat appears and decodes', !!hb);
  check('heartbeat fields are sane', hb && hb.addr === `127.0.0.1:${w.port}`
    && hb.pool === 'default' && hb.role === 'both' && hb.model === 'llmd-sim'
    && hb.kv_total === 64 && hb.block_tokens === 16 && hb.interval_ms === 50
    && hb.ttl_ms === 500 && hb.events === 1 && hb.running === 0
    && hb.age_ms < 1000, JSON.stringify(hb));
  await sleep(200);
  const hb2 = heartbeat();
  check('seq increases', hb2 && hb2.seq >= hb.seq + 2, `${hb.seq} -> ${hb2 && hb2.seq}`);
  check('log says connected once', (w.log().match(/redis connected/g) || []).length === 1, w.log());
  const first = events();
  check('startup publishes CLEARED', first.length >= 1 && first[0].type === 'cleared'
    && first[0].addr === `127.0.0.1:${w.port}`, JSON.stringify(first[0]));

  // a request's prefixes
  const body = { prompt: text(600, 1), max_tokens: 4 };
  const r = await post(w, '/v1/completions', body);
  check('completion served', r.status === 200, r.text);
  check('non-streaming response has X-LLMD-TTFT-Ms',
    Number(r.headers['x-llmd-ttft-ms']) > 0, JSON.stringify(r.headers));
  const want = gatewayKeys(body);
  const stored = await until(() => events().find((e) => e.type === 'stored'
    && e.keys.join() === want.join()), 2000);
  check('STORED keys equal the gateway keys of the body', !!stored && want.length === 2,
    `want ${want}, events ${JSON.stringify(events())}`);
  check('event carries block size and address', stored && stored.bs === 256
    && stored.addr === `127.0.0.1:${w.port}` && Math.abs(Date.now() - stored.ts_ms) < 5000);

  const again = events().length;
  await post(w, '/v1/completions', body);
  await sleep(150);
  check('a prefix already advertised is not stored again', events().length === again,
    JSON.stringify(events().slice(again)));

  const chat = { messages: [{ role: 'system', content: text(300, 2) },
    { role: 'user', content: text(400, 3) }], max_tokens: 3 };
  await post(w, '/v1/chat/completions', chat);
  const chatKeys = gatewayKeys(chat);
  check('chat STORED keys equal the gateway keys', !!await until(() => events().find(
    (e) => e.type === 'stored' && e.keys.join() === chatKeys.join()), 2000), chatKeys.join());

  // streaming: headers come with the first token
  const s = await post(w, '/v1/completions', { prompt: text(700, 4), max_tokens: 20, stream: true });
  check('SSE headers carry X-LLMD-TTFT-Ms', Number(s.headers['x-llmd-ttft-ms']) > 0,
    JSON.stringify(s.headers));
  check('SSE headers arrive with the first token', s.firstDataAt - s.headersAt < 30
    && s.headersAt >= Number(s.headers['x-llmd-ttft-ms']) - 5,
  `headers ${s.headersAt} ms, first data ${s.firstDataAt} ms, ttft ${s.headers['x-llmd-ttft-ms']}`);

  // eviction: 64 blocks hold about 1000 tokens, so new prompts push the first out
  for (let i = 0; i < 3; i++) await post(w, '/v1/completions', { prompt: text(600, 10 + i), max_tokens: 2 });
  const removed = await until(() => events().find((e) => e.type === 'removed'
    && e.keys.includes(want[0])), 2000);
  check('eviction publishes REMOVED with the chain', !!removed
    && removed.keys.includes(want[1]), JSON.stringify(events().map((e) => [e.type, e.nkeys])));

  // load: running and waiting move, and the estimators fill in
  let maxRunning = 0, maxWaiting = 0, maxQueued = 0, polling = true;
  const poll = (async () => {
    while (polling) {
      const h = heartbeat();
      if (h) {
        maxRunning = Math.max(maxRunning, h.running);
        maxWaiting = Math.max(maxWaiting, h.waiting);
        maxQueued = Math.max(maxQueued, h.queued_prefill_tokens);
      }
      await sleep(40);
    }
  })();
  await Promise.all(Array.from({ length: 24 }, (_, i) =>
    post(w, '/v1/completions', { prompt: text(100, 100 + i), max_tokens: 30 })));
  polling = false;
  await poll;
  check('running and waiting move under load', maxRunning > 0 && maxWaiting > 0
    && maxQueued > 0, `running ${maxRunning}, waiting ${maxWaiting}, queued ${maxQueued}`);
  await sleep(150);
  const hb3 = heartbeat();
  check('estimators and counters fill in', hb3 && hb3.running === 0 && hb3.waiting === 0
    && hb3.prefill_tps > 0 && hb3.decode_ms_base > 0 && hb3.ttft_ms > 0
    && hb3.requests_total >= 30 && hb3.prompt_tokens_total > 5000
    && hb3.generation_tokens_total > 700, JSON.stringify(hb3));

  // Redis goes away: serving goes on, the log says so once
  await kill(redis);
  fs.rmSync(SOCK, { force: true });
  const during = await Promise.all([1, 2, 3].map((i) =>
    post(w, '/v1/completions', { prompt: text(200, 200 + i), max_tokens: 5 })));
  await sleep(1500);
  const during2 = await post(w, '/v1/completions', { prompt: text(600, 300), max_tokens: 3 });
  check('requests are served while Redis is down',
    during.every((x) => x.status === 200) && during2.status === 200);
  check('the log shows the transition once',
    (w.log().match(/redis unreachable/g) || []).length === 1, w.log());

  // ... and comes back: heartbeats resume, the state is sent again
  redis = await startRedis();
  const back = await until(heartbeat, 7000, 100);
  check('heartbeats resume after Redis restarts', !!back, w.log());
  check('the log shows the reconnection once',
    (w.log().match(/redis connected/g) || []).length === 2, w.log());
  const snap = await until(() => fleet('snapshot', WORKER_ID)[0], 2000);
  const afterKeys = gatewayKeys({ prompt: text(600, 300), max_tokens: 3 });
  check('snapshot rewritten with what is held', snap && snap.type === 'snapshot'
    && afterKeys.every((k) => snap.keys.includes(k)), JSON.stringify(snap));
  const ev = events();
  check('resync: CLEARED then STORED of everything held', ev.length >= 2
    && ev[0].type === 'cleared' && ev[1].type === 'stored'
    && afterKeys.every((k) => ev[1].keys.includes(k)), JSON.stringify(ev.map((e) => e.type)));

  // graceful stop leaves the fleet
  const code = await new Promise((res) => { w.proc.on('exit', (c) => res(c)); w.proc.kill('SIGTERM'); });
  check('SIGTERM exits 0', code === 0, String(code));
  check('SIGTERM removes the heartbeat', !heartbeat());
  await kill(redis);
}

try {
  await main();
} catch (e) {
  check('suite ran to the end', false, e.stack);
} finally {
  for (const c of children) await kill(c);
  fs.rmSync(DIR, { recursive: true, force: true });
  agent.destroy();
}
console.log(`redis: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
