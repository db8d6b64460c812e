// A stand-in gateway for llmd-bench's tests: answers chat requests with an
// X-LLMD-Upstream header cycling w-a, w-b, w-c, streams two tokens per SSE
// chunk (three chunks, usage says 6 tokens), and for w-c cuts the stream
// before [DONE].  Usage: node stub_server.js PORT
'use strict';
const http = require('http');
let n = 0;
http.createServer((req, res) => {
  if (req.url === '/health') { res.end('ok'); return; }
  req.resume();
  req.on('end', () => {
    const up = ['w-a', 'w-b', 'w-c'][n++ % 3];
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'X-LLMD-Upstream': up });
    const chunk = (text) => 'data: ' + JSON.stringify({
      choices: [{ index: 0, delta: { content: text }, finish_reason: null }] }) + '\n\n';
    let i = 0;
    const tick = () => {
      if (i < 3) { res.write(chunk(['ab', 'c"', '\\u'][i])); i++; setTimeout(tick, 2); return; }
      if (up === 'w-c') { res.socket.destroy(); return; }
      res.write('data: ' + JSON.stringify({ choices: [],
        usage: { prompt_tokens: 100, completion_tokens: 6, total_tokens: 106 } }) + '\n\n');
      res.end('data: [DONE]\n\n');
    };
    tick();
  });
}).listen(Number(process.argv[2]), '127.0.0.1');
