// End-to-end tests: real llmd-worker processes on loopback ports.
//
//   node e2e.mjs /path/to/llmd-worker
//
// Prints one "ok"/"not ok" line per check and closes with
// "e2e: N passed, M failed"; exits non-zero on any failure.

import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WORKER = process.argv[2];
const HERE = path.dirname(fileURLToPath(import.meta.url));
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
let passed = 0, failed = 0;
const workers = [];

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

// ---------------------------------------------------------------------------
// workers

async function startWorker(args) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = 18000 + Math.floor(Math.random() * 1000);
    const proc = spawn(WORKER, ['--listen', `127.0.0.1:${port}`, ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const ready = await new Promise((resolve) => {
      proc.stderr.on('data', (d) => {
        log += d;
        if (log.includes('listening on')) resolve(true);
      });
      proc.on('exit', () => resolve(false));
      setTimeout(() => resolve(false), 10000);
    });
    if (ready) {
      const w = { proc, port, base: `http://127.0.0.1:${port}`, log: () => log };
      workers.push(w);
      return w;
    }
    proc.kill('SIGKILL');
    if (!log.includes('cannot listen')) throw new Error(`worker did not start: ${log}`);
  }
  throw new Error('no free port in 18000-18999');
}

async function stopWorker(w) {
  if (w.proc.exitCode !== null) return w.proc.exitCode;
  const done = new Promise((r) => w.proc.on('exit', (code, sig) => r(code ?? sig)));
  w.proc.kill('SIGTERM');
  return done;
}

// ---------------------------------------------------------------------------
// HTTP

function request(base, method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined
      : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const req = http.request(`${base}${urlPath}`, {
      method, agent, headers: { 'Content-Type': 'application/json', ...headers },
    }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString();
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

const post = (w, p, body, headers) => request(w.base, 'POST', p, body, headers);
const get = (w, p) => request(w.base, 'GET', p);

// A streaming request.  onEvent(event, parsed, req) may return 'abort' to
// hang up; resolves with every event once the stream ends or is dropped.
function stream(w, urlPath, body, { onEvent, headers = {}, newSocket = false } = {}) {
  return new Promise((resolve, reject) => {
    const events = [];
    let buf = '', status = 0, ctype = '';
    const req = http.request(`${w.base}${urlPath}`, {
      method: 'POST', agent: newSocket ? false : agent,
      headers: { 'Content-Type': 'application/json', ...headers },
    }, (res) => {
      status = res.statusCode;
      ctype = res.headers['content-type'] || '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let parsed = null;
          if (ev.startsWith('data: ') && ev !== 'data: [DONE]') {
            try { parsed = JSON.parse(ev.slice(6)); } catch { parsed = undefined; }
          }
          events.push({ raw: ev, json: parsed });
          if (onEvent && onEvent(ev, parsed) === 'abort') {
            req.destroy();
            resolve({ status, ctype, events, aborted: true, rest: buf });
            return;
          }
        }
      });
      res.on('end', () => resolve({ status, ctype, events, aborted: false, rest: buf }));
      res.on('error', () => resolve({ status, ctype, events, aborted: true, rest: buf }));
    });
    req.on('error', (e) => (events.length ? resolve({ status, ctype, events, aborted: true }) : reject(e)));
    req.end(JSON.stringify(body));
  });
}

// Text, finish reason and usage out of a stream's events.
function summarise(s, kind) {
  let text = '', finish = null, usage = null, role = null, textChunks = 0, bad = 0;
  for (const e of s.events) {
    if (e.raw === 'data: [DONE]') continue;
    if (!e.json) { bad++; continue; }
    if (e.json.usage) usage = e.json.usage;
    for (const c of e.json.choices) {
      const piece = kind === 'chat' ? c.delta.content : c.text;
      if (kind === 'chat' && c.delta.role) role = c.delta.role;
      if (piece) { text += piece; textChunks++; }
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  const done = s.events.length > 0 && s.events[s.events.length - 1].raw === 'data: [DONE]';
  return { text, finish, usage, role, textChunks, bad, done };
}

// ---------------------------------------------------------------------------
// metrics

async function metrics(w) {
  const r = await get(w, '/metrics');
  const m = new Map();
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  m.raw = r.text;
  return m;
}

function metric(m, name, extra = '') {
  for (const [k, v] of m) {
    if (k === name || (k.startsWith(name + '{') && k.includes(extra))) return v;
  }
  return undefined;
}

async function waitFor(w, pred, ms = 3000) {
  const until = Date.now() + ms;
  let m;
  do {
    m = await metrics(w);
    if (pred(m)) return { ok: true, m };
    await sleep(20);
  } while (Date.now() < until);
  return { ok: false, m };
}

// ---------------------------------------------------------------------------

function testFlags() {
  const run = (...args) => spawnSync(WORKER, args, { encoding: 'utf8', timeout: 5000 });
  const help = run('--help');
  check('--help exits 0 and lists the flags', help.status === 0
    && ['--listen', '--backend', '--kv-blocks', '--sim-profile', '--speed'].every((f) => help.stdout.includes(f)));
  for (const [args, what] of [
    [['--bogus'], 'unknown flag'],
    [['--kv-blocks', '-3'], 'bad number'],
    [['--speed', 'fast'], 'bad speed'],
    [['--listen', 'localhost'], 'listen without port'],
    [['--role', 'boss'], 'bad role'],
    [['--backend', 'cuda'], 'backend not built yet'],
    [['--sim-profile', '/nonexistent.profile'], 'missing profile'],
    [['--max-batch', '512', '--max-batch-tokens', '256'], 'budget below batch'],
  ]) {
    const r = run(...args);
    const lines = r.stderr.trim().split('\n');
    check(`${what}: exit 2 with one line`, r.status === 2 && lines.length === 1 && lines[0].length > 10,
      `status ${r.status}: ${r.stderr}`);
  }
}

function isOpenAIError(r, status, param) {
  const e = r.json && r.json.error;
  return r.status === status && e && typeof e.message === 'string' && e.type === 'invalid_request_error'
    && 'param' in e && 'code' in e && (param === undefined || e.param === param);
}

async function testApi(w) {
  const h = await get(w, '/health');
  check('GET /health is 200', h.status === 200);
  const models = await get(w, '/v1/models');
  check('GET /v1/models lists the served model', models.status === 200
    && models.json.data[0].id === 'test-model' && models.json.data[0].max_model_len === 512, models.text);

  const prompt = 'Hello, llmd!';
  const body = { model: 'test-model', prompt, max_tokens: 24, seed: 11 };
  const a = await post(w, '/v1/completions', body);
  const c0 = a.json && a.json.choices[0];
  check('completion: 200, text_completion object', a.status === 200 && a.json.object === 'text_completion'
    && a.headers['content-type'] === 'application/json', a.text);
  check('completion: usage counts bytes', a.json.usage.prompt_tokens === prompt.length
    && a.json.usage.completion_tokens === 24 && a.json.usage.total_tokens === prompt.length + 24,
    JSON.stringify(a.json.usage));
  check('completion: max_tokens reached gives finish_reason length', c0.finish_reason === 'length'
    && c0.text.length === 24, JSON.stringify(c0));
  const again = await post(w, '/v1/completions', body);
  check('completion: same prompt and seed, same text', again.json.choices[0].text === c0.text);
  const other = await post(w, '/v1/completions', { ...body, seed: 12 });
  check('completion: another seed, other text', other.json.choices[0].text !== c0.text);
  const dflt = await post(w, '/v1/completions', { prompt });
  check('completion: max_tokens defaults to 16', dflt.json.usage.completion_tokens === 16, dflt.text);

  const st = await post(w, '/v1/completions', { prompt, max_tokens: 60, seed: 11, stop: [' ', 'zzz'] });
  const sc = st.json.choices[0];
  check('stop string: finish_reason stop, stop string excluded', sc.finish_reason === 'stop'
    && !sc.text.includes(' ') && sc.text.length > 0
    && st.json.usage.completion_tokens === sc.text.length + 1, JSON.stringify(st.json));
  check('stop string: text is the prefix of the unstopped text', c0.text.startsWith(sc.text));

  const chat = await post(w, '/v1/chat/completions', {
    messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, temperature: 0.7, top_p: 0.9, user: 'e2e',
  });
  check('chat: assistant message and usage', chat.status === 200 && chat.json.object === 'chat.completion'
    && chat.json.choices[0].message.role === 'assistant' && chat.json.choices[0].message.content.length === 5
    && chat.json.usage.prompt_tokens === 'hi'.length + 'user'.length + 2, chat.text);

  // streaming: same text as the non-stream answer, one chunk per token
  const s = await stream(w, '/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } });
  const ss = summarise(s, 'completion');
  check('stream: 200 text/event-stream', s.status === 200 && s.ctype.startsWith('text/event-stream'), s.ctype);
  check('stream: every event is JSON, ends with [DONE]', ss.bad === 0 && ss.done, JSON.stringify(s.events.slice(-2)));
  check('stream: text equals the non-stream text', ss.text === c0.text, `${ss.text} vs ${c0.text}`);
  check('stream: one chunk per token', ss.textChunks === 24, String(ss.textChunks));
  check('stream: finish_reason length', ss.finish === 'length');
  const last = s.events[s.events.length - 2].json;
  check('stream: include_usage puts usage in the last chunk', last && last.choices.length === 0
    && last.usage.completion_tokens === 24 && last.usage.prompt_tokens === prompt.length, JSON.stringify(last));
  const noUsage = summarise(await stream(w, '/v1/completions', { ...body, stream: true }), 'completion');
  check('stream: no usage chunk unless asked', noUsage.usage === null && noUsage.done);

  const cs = await stream(w, '/v1/chat/completions', {
    messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 7, stream: true,
  });
  const css = summarise(cs, 'chat');
  check('chat stream: role chunk first, chunk objects, finish', cs.events[0].json.choices[0].delta.role === 'assistant'
    && cs.events[0].json.object === 'chat.completion.chunk' && css.text.length === 7 && css.finish === 'length'
    && css.done, JSON.stringify(cs.events[0]));

  // errors
  check('bad JSON: 400 in OpenAI format', isOpenAIError(await post(w, '/v1/completions', '{"prompt": '), 400));
  check('unknown model: 404', isOpenAIError(await post(w, '/v1/completions', { model: 'nope', prompt }), 404, 'model'));
  const long = await post(w, '/v1/completions', { prompt: 'x'.repeat(600) });
  check('prompt over the context: 400 naming the limit', isOpenAIError(long, 400, 'prompt')
    && long.json.error.message.includes('512') && long.json.error.code === 'context_length_exceeded', long.text);
  const over = await post(w, '/v1/completions', { prompt, max_tokens: 600 });
  check('prompt + max_tokens over the context: 400', isOpenAIError(over, 400, 'max_tokens')
    && over.json.error.message.includes('512'), over.text);
  const big = await post(w, '/v1/completions', JSON.stringify({ prompt: 'y'.repeat(70000) }));
  check('body too large: 413 in OpenAI format', big.status === 413 && big.json && big.json.error
    && big.json.error.message.includes('65536'), `${big.status} ${big.text.slice(0, 200)}`);
  check('n=2: 400', isOpenAIError(await post(w, '/v1/completions', { prompt, n: 2 }), 400, 'n'));
  check('missing messages: 400', isOpenAIError(await post(w, '/v1/chat/completions', { model: 'test-model' }), 400, 'messages'));
  check('bad X-LLMD-Priority: 400', isOpenAIError(await post(w, '/v1/completions', { prompt },
    { 'X-LLMD-Priority': 'urgent' }), 400, 'X-LLMD-Priority'));
  const wrongMethod = await get(w, '/v1/completions');
  check('GET on a POST route: 405', wrongMethod.status === 405 && wrongMethod.json.error);
  const noRoute = await get(w, '/v2/nothing');
  check('unknown route: 404', noRoute.status === 404 && noRoute.json.error);
  // keep-alive: a second request rides the first one's connection
  const one = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const reused = [];
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve, reject) => {
      const req = http.request(`${w.base}/v1/completions`, { method: 'POST', agent: one,
        headers: { 'Content-Type': 'application/json' } }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end(JSON.stringify({ prompt, max_tokens: 3, stream: i === 1 }));
      reused.push(req.reusedSocket);
    });
  }
  one.destroy();
  check('HTTP/1.1 keep-alive: later requests reuse the connection', reused.join() === 'false,true,true',
    reused.join());
  const healthAfter = await get(w, '/health');
  check('worker still healthy after the errors', healthAfter.status === 200);
}

async function testManyClients(w) {
  const before = await metrics(w);
  const N = 200, tokens = 32;
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: N }, (_, i) => stream(w, '/v1/completions',
    { prompt: `client ${i} says hello`, max_tokens: tokens, stream: true }, { newSocket: true })
    .then((s) => summarise(s, 'completion'), (e) => ({ error: String(e) }))));
  const ok = results.filter((r) => r.done && r.textChunks === tokens && r.text.length === tokens && r.bad === 0);
  check(`${N} concurrent streaming clients all finish`, ok.length === N,
    `${ok.length} ok; first bad: ${JSON.stringify(results.find((r) => !ok.includes(r)))}`);
  const after = await metrics(w);
  const length = (m) => metric(m, 'vllm:request_success_total', 'finished_reason="length"');
  check('success counter counts every client', length(after) - length(before) === N,
    `${length(after) - length(before)}`);
  console.log(`# ${N} streaming clients x ${tokens} tokens in ${Date.now() - t0} ms`);
}

function testPromtool(w, text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (r.error) {
    check('promtool check metrics', false, `promtool not runnable: ${r.error.message}`);
    return;
  }
  // rc 3 is lint only; vLLM's names contain ':' by design, which promtool
  // always flags.  Anything else (rc 1 = parse error, other lint) fails.
  const complaints = (r.stdout + r.stderr).split('\n').filter((l) => l.trim()
    && !/metric names should not contain ':'/.test(l));
  check('promtool check metrics accepts /metrics', (r.status === 0 || r.status === 3) && complaints.length === 0,
    `rc ${r.status}: ${complaints.join(' | ')}`);
  const broken = spawnSync('promtool', ['check', 'metrics'], { input: text.replace('# TYPE vllm:num_requests_running gauge\n', '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="x"\n'), encoding: 'utf8' });
  check('promtool rejects broken output (the check can fail)', broken.status === 1, `rc ${broken.status}`);
}

async function testMetricsMove(w) {
  const m0 = await metrics(w);
  const N = 4, tokens = 120;
  const prompts = Array.from({ length: N }, (_, i) => `metrics request number ${i}`);
  const running = Promise.all(prompts.map((p) => stream(w, '/v1/completions',
    { prompt: p, max_tokens: tokens, stream: true })));
  const mid = await waitFor(w, (m) => metric(m, 'vllm:num_requests_running') === N
    && metric(m, 'vllm:generation_tokens_total') > metric(m0, 'vllm:generation_tokens_total'), 3000);
  check('metrics mid-run: requests running, tokens counted', mid.ok,
    `running ${metric(mid.m, 'vllm:num_requests_running')}`);
  check('metrics mid-run: KV cache in use', metric(mid.m, 'vllm:kv_cache_usage_perc') > 0);
  await running;
  const m1 = await metrics(w);
  const d = (name, extra) => metric(m1, name, extra) - metric(m0, name, extra);
  check('metrics after: nothing running or waiting, KV free', metric(m1, 'vllm:num_requests_running') === 0
    && metric(m1, 'vllm:num_requests_waiting') === 0 && metric(m1, 'vllm:kv_cache_usage_perc') === 0);
  check('metrics after: generation tokens', d('vllm:generation_tokens_total') === N * tokens,
    String(d('vllm:generation_tokens_total')));
  check('metrics after: prompt tokens', d('vllm:prompt_tokens_total') === prompts.reduce((n, p) => n + p.length, 0),
    String(d('vllm:prompt_tokens_total')));
  check('metrics after: TTFT and e2e histograms', d('vllm:time_to_first_token_seconds_count') === N
    && d('vllm:e2e_request_latency_seconds_count') === N);
  check('metrics after: one inter-token latency per later token',
    d('vllm:inter_token_latency_seconds_count') === N * (tokens - 1), String(d('vllm:inter_token_latency_seconds_count')));
  const itlSum = d('vllm:inter_token_latency_seconds_sum') / (N * (tokens - 1));
  check('metrics after: inter-token latency follows the profile (~7 ms)', itlSum > 0.005 && itlSum < 0.05, String(itlSum));
}

async function testPrefixCache(w) {
  const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(5).slice(0, 200);
  const m0 = await metrics(w);
  await post(w, '/v1/completions', { prompt, max_tokens: 1 });
  const m1 = await metrics(w);
  await post(w, '/v1/completions', { prompt, max_tokens: 1 });
  const m2 = await metrics(w);
  const hits = (m) => metric(m, 'vllm:prefix_cache_hits_total');
  const queries = (m) => metric(m, 'vllm:prefix_cache_queries_total');
  check('prefix cache: first request misses', hits(m1) - hits(m0) === 0 && queries(m1) - queries(m0) === 200);
  check('prefix cache: repeat hits every full block before the last token',
    hits(m2) - hits(m1) === 192, String(hits(m2) - hits(m1)));
}

async function testCancel(w) {
  const m0 = await metrics(w);
  const abort0 = metric(m0, 'vllm:request_success_total', 'finished_reason="abort"');
  let seen = 0, midKv = 0;
  const s = await stream(w, '/v1/completions', { prompt: 'a long story please', max_tokens: 3000, stream: true }, {
    newSocket: true,
    onEvent: () => (++seen >= 10 ? 'abort' : undefined),
  });
  midKv = metric(await metrics(w), 'vllm:kv_cache_usage_perc');
  const t0 = Date.now();
  const freed = await waitFor(w, (m) => metric(m, 'vllm:kv_cache_usage_perc') === 0
    && metric(m, 'vllm:num_requests_running') === 0, 3000);
  check('stream cancelled by the client: KV blocks back to baseline', s.aborted && freed.ok,
    `kv ${metric(freed.m, 'vllm:kv_cache_usage_perc')} (was ${midKv})`);
  check('stream cancelled: freed quickly', Date.now() - t0 < 1000, `${Date.now() - t0} ms`);
  check('stream cancelled: counted as abort',
    metric(freed.m, 'vllm:request_success_total', 'finished_reason="abort"') === abort0 + 1);

  // a non-streaming request has nothing to write until it ends: the worker
  // must notice the hang-up itself
  const req = http.request(`${w.base}/v1/completions`, { method: 'POST', agent: false,
    headers: { 'Content-Type': 'application/json' } });
  req.on('error', () => {});
  req.end(JSON.stringify({ prompt: 'another long one', max_tokens: 3000 }));
  const busy = await waitFor(w, (m) => metric(m, 'vllm:num_requests_running') === 1, 2000);
  req.destroy();
  const freed2 = await waitFor(w, (m) => metric(m, 'vllm:kv_cache_usage_perc') === 0
    && metric(m, 'vllm:num_requests_running') === 0, 3000);
  check('non-stream request cancelled by the client: KV freed', busy.ok && freed2.ok);
}

async function testPriority(w) {
  // one request at a time; a low and a high priority request queue behind
  // a running one, the high one (sent later) must finish first
  const order = [];
  const send = (name, prio, tokens) => post(w, '/v1/completions', { prompt: name, max_tokens: tokens },
    prio === undefined ? {} : { 'X-LLMD-Priority': String(prio) }).then((r) => order.push(name));
  const first = send('first', undefined, 150);   // about a second
  await waitFor(w, (m) => metric(m, 'vllm:num_requests_running') === 1, 2000);
  const low = send('low', -5, 5);
  await waitFor(w, (m) => metric(m, 'vllm:num_requests_waiting') === 1, 2000);
  const high = send('high', 5, 5);
  const queued = await waitFor(w, (m) => metric(m, 'vllm:num_requests_waiting') === 2, 2000);
  await Promise.all([first, low, high]);
  check('priority: both queued, the high one is served first', queued.ok && order.join(',') === 'first,high,low',
    order.join(','));
}

async function testPreemption(w, reference) {
  // 12 blocks of 16 tokens for 6 requests that each grow to 9 blocks
  const bodies = Array.from({ length: 6 }, (_, i) => ({
    prompt: `preempt me ${i} `.repeat(3).slice(0, 40), max_tokens: 100, seed: i,
  }));
  const results = await Promise.all(bodies.map((b) => post(w, '/v1/completions', b)));
  const m = await metrics(w);
  check('preemption: every request finishes with its tokens', results.every((r) => r.status === 200
    && r.json.usage.completion_tokens === 100), results.map((r) => r.status).join(','));
  check('preemption happened', metric(m, 'vllm:num_preemptions_total') > 0);
  check('preemption: KV fully released', metric(m, 'vllm:kv_cache_usage_perc') === 0);
  const alone = await Promise.all(bodies.map((b) => post(reference, '/v1/completions', b)));
  check('preemption does not change the text', alone.every((r, i) => r.json.choices[0].text
    === results[i].json.choices[0].text));
}

function testOpenAIClient(w) {
  const r = spawnSync(process.execPath, [path.join(HERE, '../openai/client_test.mjs'), w.base, 'llmd-sim'],
    { encoding: 'utf8', timeout: 60000 });
  const lines = (r.stdout || '').split('\n').filter((l) => /^(not )?ok - /.test(l));
  for (const l of lines) {
    const good = l.startsWith('ok - ');
    check(l.replace(/^(not )?ok - /, ''), good);
  }
  check('openai client script ran cleanly', r.status === 0 && lines.length >= 10,
    `status ${r.status}: ${(r.stderr || '').slice(0, 500)}`);
}

async function main() {
  testFlags();

  const fast = await startWorker(['--speed', '0', '--max-model-len', '512', '--max-body-bytes', '65536',
    '--model-name', 'test-model']);
  await testApi(fast);
  await testManyClients(fast);
  testPromtool(fast, (await metrics(fast)).raw);

  const timed = await startWorker(['--sim-profile', 'llama3-8b-h100', '--speed', '1']);
  await testMetricsMove(timed);
  await testPrefixCache(timed);
  await testCancel(timed);
  testOpenAIClient(timed);

  const single = await startWorker(['--max-batch', '1', '--speed', '1']);
  await testPriority(single);

  const small = await startWorker(['--kv-blocks', '12', '--block-tokens', '16', '--speed', '0',
    '--max-model-len', '192']);
  await testPreemption(small, fast);

  for (const w of workers) {
    const code = await stopWorker(w);
    const log = w.log();
    check(`worker on port ${w.port} exits cleanly on SIGTERM`, code === 0
      && !/Sanitizer|runtime error/.test(log), `exit ${code}; log: ${log.slice(-2000)}`);
  }
}

main().catch((e) => {
  failed++;
  console.log(`not ok - unexpected error: ${e && e.stack || e}`);
}).finally(() => {
  for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL');
  console.log(`e2e: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
});
