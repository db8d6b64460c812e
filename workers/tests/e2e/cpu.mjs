// End-to-end checks of the cpu backend: real llmd-worker processes serving
// a generated model and, when present, the trained stories260K model.
//
//   node cpu.mjs /path/to/llmd-worker /path/to/repo-root
//
// Prints "ok"/"not ok" lines and "e2e-cpu: N passed, M failed"; exits
// non-zero on any failure.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from '../openai/node_modules/openai/index.mjs';

const [WORKER, ROOT] = process.argv.slice(2);
const STORIES = path.join(ROOT, '..', 'shared', 'models', 'stories260K.gguf');
const STORY = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily\'s mom said, "Lily, let\'s go to the park." Lily was sad and didn\'t know what to do. She said, "I want to play with your ball, but I can\'t find it."\nLily was sad and didn\'t know what to do. She said, "I\'m sorry, Lily. I didn\'t know what to do."\nLily didn\'t want to help her mom, so she';
let passed = 0, failed = 0;
const procs = [];

function check(name, cond, detail = '') {
  if (cond) passed++; else failed++;
  console.log(`${cond ? 'ok' : 'not ok'} - ${name}${cond || !detail ? '' : ': ' + detail}`);
}

async function startWorker(args) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = 19000 + Math.floor(Math.random() * 1000);
    const proc = spawn(WORKER, ['--listen', `127.0.0.1:${port}`, '--backend', 'cpu',
      '--kv-blocks', '256', '--threads', '2', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const ready = await new Promise((resolve) => {
      proc.stderr.on('data', (d) => { log += d; if (log.includes('listening on')) resolve(true); });
      proc.on('exit', () => resolve(false));
      setTimeout(() => resolve(false), 20000);
    });
    if (ready) { procs.push(proc); return { proc, base: `http://127.0.0.1:${port}`, log: () => log }; }
    proc.kill('SIGKILL');
    if (!log.includes('cannot listen')) throw new Error(`worker did not start: ${log}`);
  }
  throw new Error('no free port');
}

async function post(base, route, body) {
  const res = await fetch(base + route, { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

async function streamText(base, body) {
  const res = await fetch(base + '/v1/completions', { method: 'POST',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
  let text = '';
  for (const line of (await res.text()).split('\n')) {
    if (!line.startsWith('data: {')) continue;
    const c = JSON.parse(line.slice(6));
    text += c.choices[0]?.text ?? '';
  }
  return text;
}

async function streamChunks(base, route, body) {
  const res = await fetch(base + route, { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
  return (await res.text()).split('\n').filter((l) => l.startsWith('data: {'))
    .map((l) => JSON.parse(l.slice(6)));
}

// streamed logprobs, concatenated, against the non-streamed response's
async function streamedLogprobs(base, route, body, name) {
  const chat = route.includes('chat');
  const plain = await post(base, route, body);
  const chunks = await streamChunks(base, route, body);
  const usage = chunks.find((c) => c.usage)?.usage;
  const want = plain.json.choices?.[0]?.logprobs;
  const n = plain.json.usage?.completion_tokens;
  const text = (c) => (chat ? c.choices[0].delta?.content : c.choices[0].text) ?? '';
  const got = chat ? { content: [] } : { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let aligned = true, all = '';
  for (const c of chunks) {
    const lp = c.choices?.[0]?.logprobs;
    if (!lp) continue;
    for (const k of Object.keys(got)) got[k].push(...lp[k]);
    const toks = chat ? lp.content.map((t) => t.token) : lp.tokens;
    all += text(c);
    if (!body.stop && toks.join('') !== text(c)) aligned = false;
  }
  const count = chat ? got.content.length : got.tokens.length;
  check(`stories260K: streamed ${name} logprobs equal the non-streamed ones`,
    want && JSON.stringify(got) === JSON.stringify(want), JSON.stringify(got).slice(0, 300));
  check(`stories260K: streamed ${name} logprobs: one per completion token, with its chunk's text`,
    count === n && usage?.completion_tokens === n && aligned
    && all === (chat ? plain.json.choices[0].message.content : plain.json.choices[0].text),
    `${count} entries, ${n} tokens, usage ${JSON.stringify(usage)}, aligned ${aligned}`);
  return chunks;
}

async function stories() {
  if (!fs.existsSync(STORIES)) {
    console.log(`# SKIP stories260K: ${STORIES} is absent`);
    return;
  }
  const w = await startWorker(['--model', STORIES, '--model-name', 'stories260K']);
  const r = await post(w.base, '/v1/completions', { prompt: '', max_tokens: 200, temperature: 0 });
  check('stories260K: 200 greedy tokens from BOS are the known story', r.json.choices?.[0]?.text === STORY,
    JSON.stringify(r.json).slice(0, 300));
  check('stories260K: usage counts BOS and 200 tokens', r.json.usage?.prompt_tokens === 1
    && r.json.usage?.completion_tokens === 200, JSON.stringify(r.json.usage));
  check('stories260K: streamed text is the same story',
    await streamText(w.base, { prompt: '', max_tokens: 200, temperature: 0 }) === STORY);
  const p = await post(w.base, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 40, temperature: 0 });
  check('stories260K: continuation of "Once upon a time"', p.json.choices?.[0]?.text?.startsWith(
    ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw'),
    p.json.choices?.[0]?.text);
  const lp = await post(w.base, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 2,
    temperature: 0, logprobs: 3 });
  const l = lp.json.choices?.[0]?.logprobs;
  check('stories260K: completion logprobs and top_logprobs match the known logits',
    l && l.tokens.join('') === ', there' && l.text_offset.join() === '0,1'
    && Math.abs(l.top_logprobs[0][','] - l.top_logprobs[0][' there'] - (17.7994 - 14.2813)) < 1e-3
    && Math.abs(l.token_logprobs[0] - l.top_logprobs[0][',']) < 1e-6, JSON.stringify(l));
  const sc = await streamedLogprobs(w.base, '/v1/completions', { prompt: 'Once upon a time',
    max_tokens: 40, temperature: 0, logprobs: 3 }, 'completion');
  const first = sc.find((c) => c.choices?.[0]?.logprobs)?.choices[0].logprobs;
  check('stories260K: first streamed chunk\'s top_logprobs match the known logits', first
    && Math.abs(first.top_logprobs[0][','] - first.top_logprobs[0][' there'] - (17.7994 - 14.2813)) < 1e-3,
    JSON.stringify(first));
  await streamedLogprobs(w.base, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 40,
    temperature: 0, logprobs: 2, stop: ['the park'] }, 'completion (stop string)');
  const c = await post(w.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] });
  check('stories260K: chat without a known template is a 400 naming --chat-template',
    c.status === 400 && /--chat-template/.test(c.json.error?.message), JSON.stringify(c.json));
  const ids = await post(w.base, '/v1/completions', { prompt: [1, 403, 407], max_tokens: 3, temperature: 0 });
  check('stories260K: token-id prompts up to the vocabulary size', ids.status === 200
    && ids.json.choices[0].text === ' a time,', JSON.stringify(ids.json));
  const bad = await post(w.base, '/v1/completions', { prompt: [600], max_tokens: 3 });
  check('stories260K: token id beyond the vocabulary is a 400', bad.status === 400);
  const wc = await startWorker(['--model', STORIES, '--model-name', 'stories260K', '--chat-template', 'plain']);
  await streamedLogprobs(wc.base, '/v1/chat/completions', { messages: [{ role: 'user',
    content: 'Once upon a time' }], max_tokens: 30, temperature: 0, logprobs: true, top_logprobs: 2 }, 'chat');
}

async function generated() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llmd-cpu-'));
  const model = path.join(dir, 'tiny.gguf');
  const mk = spawnSync(WORKER, ['mkmodel', '--out', model, '--arch', 'qwen2', '--vocab', 'qwen2',
    '--dim', '64', '--layers', '2', '--type', 'q8_0', '--seed', '3']);
  check('mkmodel writes a qwen2 / ChatML / Q8_0 model', mk.status === 0, String(mk.stderr));
  const w = await startWorker(['--model', model, '--model-name', 'tiny']);
  const client = new OpenAI({ baseURL: `${w.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  const chat = await client.chat.completions.create({ model: 'tiny', max_tokens: 8, temperature: 0,
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hello' }] });
  const msg = chat.choices[0].message;
  check('openai client: chat answer from the model', msg.role === 'assistant'
    && typeof msg.content === 'string' && chat.usage.prompt_tokens > 5, JSON.stringify(chat));
  const withLp = await client.chat.completions.create({ model: 'tiny', max_tokens: 3, temperature: 0,
    logprobs: true, top_logprobs: 2, messages: [{ role: 'user', content: 'hello' }] });
  const content = withLp.choices[0].logprobs?.content ?? [];
  check('openai client: chat logprobs with two alternatives each', content.length === 3
    && content.every((t) => t.top_logprobs.length === 2 && t.logprob <= 0
      && t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob), JSON.stringify(content));
  const again = await client.chat.completions.create({ model: 'tiny', max_tokens: 8, temperature: 0,
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hello' }] });
  check('openai client: greedy answers repeat', again.choices[0].message.content === msg.content);
  const s1 = await client.completions.create({ model: 'tiny', prompt: 'the girl', max_tokens: 10,
    temperature: 0.9, seed: 11 });
  const s2 = await client.completions.create({ model: 'tiny', prompt: 'the girl', max_tokens: 10,
    temperature: 0.9, seed: 11 });
  check('openai client: same seed, same sampled text', s1.choices[0].text === s2.choices[0].text);
  const metrics = await (await fetch(`${w.base}/metrics`)).text();
  const hits = Number(/vllm:prefix_cache_hits_total\{[^}]*\} (\d+)/.exec(metrics)?.[1] ?? 0);
  check('repeated prompts hit the prefix cache', hits > 0, `hits ${hits}`);
  fs.rmSync(dir, { recursive: true, force: true });
}

try {
  await stories();
  await generated();
} catch (e) {
  check('no exception', false, e.stack);
} finally {
  for (const p of procs) p.kill('SIGTERM');
}
console.log(`e2e-cpu: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
