// Drives a running llmd-worker with the official `openai` npm client:
// completions, chat, streaming and usage.  Prints "ok - ..." / "not ok - ..."
// lines and exits non-zero when any check fails.
//
//   node client_test.mjs http://127.0.0.1:PORT MODEL_NAME

import OpenAI from 'openai';

const [base, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
let failed = 0;

function check(name, cond, detail = '') {
  console.log(`${cond ? 'ok' : 'not ok'} - openai client: ${name}${cond || !detail ? '' : ': ' + detail}`);
  if (!cond) failed++;
}

async function main() {
  const models = await client.models.list();
  check('models.list names the served model', models.data.some((m) => m.id === model),
    JSON.stringify(models.data));

  const prompt = 'Once upon a time';
  const c = await client.completions.create({ model, prompt, max_tokens: 12, seed: 3 });
  check('completions: text of max_tokens bytes', c.choices[0].text.length === 12, c.choices[0].text);
  check('completions: finish_reason length', c.choices[0].finish_reason === 'length');
  check('completions: usage', c.usage.prompt_tokens === prompt.length
    && c.usage.completion_tokens === 12 && c.usage.total_tokens === prompt.length + 12,
    JSON.stringify(c.usage));

  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }];
  const chat = await client.chat.completions.create({ model, messages, max_completion_tokens: 9 });
  const msg = chat.choices[0].message;
  check('chat: assistant message', msg.role === 'assistant' && msg.content.length === 9, JSON.stringify(msg));
  // canonical bytes: content US role RS per message
  const promptBytes = messages.reduce((n, m) => n + m.content.length + m.role.length + 2, 0);
  check('chat: usage counts the canonical prompt bytes', chat.usage.prompt_tokens === promptBytes
    && chat.usage.completion_tokens === 9, JSON.stringify(chat.usage));

  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 9, stream: true, stream_options: { include_usage: true },
  });
  let text = '', role = null, finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      if (ch.delta.role) role = ch.delta.role;
      if (ch.delta.content) text += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  check('chat stream: role, text and finish_reason', role === 'assistant' && finish === 'length'
    && text === msg.content, `${role} ${finish} ${JSON.stringify(text)} vs ${JSON.stringify(msg.content)}`);
  check('chat stream: usage in the last chunk', usage && usage.completion_tokens === 9
    && usage.prompt_tokens === promptBytes, JSON.stringify(usage));

  const cs = await client.completions.create({ model, prompt, max_tokens: 12, seed: 3, stream: true });
  let ctext = '', cfinish = null;
  for await (const chunk of cs) {
    for (const ch of chunk.choices) {
      ctext += ch.text;
      if (ch.finish_reason) cfinish = ch.finish_reason;
    }
  }
  check('completions stream equals the non-stream text', ctext === c.choices[0].text && cfinish === 'length',
    `${JSON.stringify(ctext)} vs ${JSON.stringify(c.choices[0].text)}`);

  const stop = await client.completions.create({ model, prompt, max_tokens: 40, seed: 3, stop: [' '] });
  check('stop sequence ends the text', stop.choices[0].finish_reason === 'stop'
    && !stop.choices[0].text.includes(' '), JSON.stringify(stop.choices[0]));

  try {
    await client.completions.create({ model: 'no-such-model', prompt, max_tokens: 1 });
    check('unknown model raises NotFoundError', false, 'no error');
  } catch (e) {
    check('unknown model raises NotFoundError', e instanceof OpenAI.NotFoundError && e.status === 404
      && e.error && e.error.type === 'invalid_request_error', String(e));
  }
  try {
    await client.completions.create({ model, prompt, max_tokens: 1, n: 2 });
    check('n=2 raises BadRequestError', false, 'no error');
  } catch (e) {
    check('n=2 raises BadRequestError', e instanceof OpenAI.BadRequestError && e.param === 'n', String(e));
  }
}

main().then(() => process.exit(failed ? 1 : 0), (e) => {
  console.log(`not ok - openai client: unexpected error: ${e && e.stack || e}`);
  process.exit(1);
});
