// The official `openai` package against a running `minerva serve`.
//   node openai_test.mjs MODE
// MODE main:    the bundled stories260K on a server started with --api-key,
//               --deterministic, --max-body-kb 64, --cors-origin
// MODE busy:    a server with --parallel 1 --max-queue 0 (503 + Retry-After)
// MODE harmony: a small gpt-oss with the harmony tokenizer, --test-scripted-output
// MODE template: a small Qwen3 with its tokenizer and chat template, --test-scripted-output
// MODE slow:    slow clients, on a server with --timeout 2 --max-body-kb 64
// Environment: OPENAI_DIR (where node_modules/openai is), BASE (http://HOST:PORT),
// KEY (the API key, main only), MODEL (the served model's name).
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const { default: OpenAI } = await import(
  pathToFileURL(path.join(process.env.OPENAI_DIR, 'node_modules', 'openai', 'index.mjs')).href);

const BASE = process.env.BASE;
const KEY = process.env.KEY || 'none';
const MODEL = process.env.MODEL;
const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: KEY, maxRetries: 0, timeout: 120000 });

let pass = 0, fail = 0;
function check(desc, cond, detail) {
  if (cond) pass++;
  else { fail++; console.error(`FAIL: ${desc}${detail !== undefined ? ': ' + JSON.stringify(detail) : ''}`); }
}
async function expectStatus(desc, status, fn) {
  try {
    const r = await fn();
    check(`${desc}: status ${status}`, false, r);
  } catch (e) {
    check(`${desc}: status ${status}`, e.status === status, { status: e.status, message: e.message });
    check(`${desc}: an OpenAI error object`, e.error && typeof e.error.message === 'string' && 'type' in e.error, e.error);
  }
}
const auth = { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' };
async function raw(pathname, body, headers = auth, method = 'POST') {
  const r = await fetch(`${BASE}${pathname}`, { method, headers, body });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}
async function metric(name) {
  const r = await raw('/metrics', undefined, auth, 'GET');
  const m = r.text.match(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}
async function stillServing(desc) {
  const h = await raw('/health', undefined, {}, 'GET');
  const c = await client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 2, temperature: 0 });
  check(`${desc}: still serving`, h.status === 200 && c.choices[0].text.length > 0, h.status);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function streamChat(params) {
  const s = await client.chat.completions.create({ ...params, stream: true });
  let text = '', finish = null, usage = null, role = null;
  for await (const ch of s) {
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, usage, role };
}

async function main() {
  const models = await client.models.list();
  check('models lists the served model', models.data.length === 1 && models.data[0].id === MODEL, models.data);

  // completions: greedy, usage, length
  const c1 = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
  check('completion text', c1.choices[0].text.startsWith(', there was a little girl named Lily'), c1.choices[0].text);
  check('completion finish length', c1.choices[0].finish_reason === 'length');
  const tk = await raw('/tokenize', JSON.stringify({ content: 'Once upon a time', add_special: true }));
  check('usage counts the prompt', c1.usage.prompt_tokens === tk.json.tokens.length, [c1.usage, tk.json]);
  check('usage counts the completion', c1.usage.completion_tokens === 20 && c1.usage.total_tokens === 20 + c1.usage.prompt_tokens);
  const plain = await raw('/tokenize', JSON.stringify({ content: 'Once upon a time' }));
  const dt = await raw('/detokenize', JSON.stringify({ tokens: plain.json.tokens }));
  check('detokenize inverts tokenize', dt.json.content.trim() === 'Once upon a time', dt.json);
  const ci = await client.completions.create({ model: MODEL, prompt: tk.json.tokens, max_tokens: 20, temperature: 0 });
  check('a prompt of token ids', ci.choices[0].text === c1.choices[0].text, ci.choices[0].text);

  // stop strings
  const c2 = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: ['Lily'] });
  check('stop string ends the text before it', c2.choices[0].text === ', there was a little girl named ' && c2.choices[0].finish_reason === 'stop', c2.choices[0]);

  // seeds reproduce; another seed differs
  const sampled = (seed) => client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 30, temperature: 1, seed });
  const [s1, s2, s3] = await Promise.all([sampled(7), sampled(7), sampled(8)]);
  check('the same seed reproduces', s1.choices[0].text === s2.choices[0].text, [s1.choices[0].text, s2.choices[0].text]);
  check('another seed differs', s1.choices[0].text !== s3.choices[0].text);
  const n2 = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 10, temperature: 1, seed: 3, n: 2 });
  check('n = 2 gives two choices', n2.choices.length === 2 && n2.choices[1].index === 1);
  check('n = 2 counts the prompt once', n2.usage.prompt_tokens === c1.usage.prompt_tokens, n2.usage);

  // chat: whole and streamed agree (greedy)
  const msgs = [{ role: 'user', content: 'Once upon a time' }];
  const ch1 = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 24, temperature: 0 });
  const st1 = await streamChat({ model: MODEL, messages: msgs, max_tokens: 24, temperature: 0, stream_options: { include_usage: true } });
  check('chat answer', ch1.choices[0].message.role === 'assistant' && ch1.choices[0].message.content.length > 10, ch1.choices[0]);
  check('streamed chat equals the whole answer', st1.text === ch1.choices[0].message.content, [st1.text, ch1.choices[0].message.content]);
  check('streamed chat: role, finish reason', st1.role === 'assistant' && st1.finish === 'length');
  check('stream_options.include_usage', st1.usage && st1.usage.completion_tokens === 24 && st1.usage.prompt_tokens === ch1.usage.prompt_tokens, st1.usage);
  const st0 = await streamChat({ model: MODEL, messages: msgs, max_tokens: 4, temperature: 0 });
  check('no usage chunk unless asked', st0.usage === null);

  // logprobs
  const lp = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = lp.choices[0].logprobs.content;
  check('logprobs: one entry per token', content.length === 8, content.length);
  check('logprobs: greedy token is the most likely', content.every((t) => t.top_logprobs.length === 3 && t.logprob <= 0 &&
    Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6 && t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob), content[0]);
  // a token's text is its text in the output: SentencePiece's word-leading "\u2581" is a space, never dropped
  const joined = content.map((t) => t.token).join('');
  check('logprobs: the tokens spell the content', joined === lp.choices[0].message.content && / /.test(joined), [joined, lp.choices[0].message.content]);
  check('logprobs: a word-leading token keeps its space', content.slice(1).some((t) => t.token.startsWith(' ') && t.bytes[0] === 32), content.map((t) => t.token));
  check('logprobs: the greedy alternative is the token', content.every((t) => t.top_logprobs[0].token === t.token), content.map((t) => [t.token, t.top_logprobs[0].token]));
  check('logprobs: alternatives as they would stand', content.slice(1).every((t) => t.top_logprobs.every((a) => !/\u2581/.test(a.token))) &&
    content.slice(1).some((t) => t.top_logprobs.some((a) => a.token !== t.token && a.token.startsWith(' '))), content.map((t) => t.top_logprobs.map((a) => a.token)));
  const lps = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 1, stream: true });
  let stext = '', stoks = '';
  for await (const ch of lps) for (const c of ch.choices) { stext += c.delta.content || ''; for (const t of c.logprobs?.content || []) stoks += t.token; }
  check('logprobs streamed: the tokens spell the streamed content', stoks === stext && stext === lp.choices[0].message.content, [stoks, stext]);
  const clp = await client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 4, temperature: 0, logprobs: 2 });
  check('completion logprobs', clp.choices[0].logprobs.token_logprobs.length === 4 && clp.choices[0].logprobs.top_logprobs[0] !== null, clp.choices[0].logprobs);
  check('completion logprobs: the tokens spell the text', clp.choices[0].logprobs.tokens.join('') === clp.choices[0].text &&
    clp.choices[0].text.startsWith(' '), [clp.choices[0].logprobs.tokens, clp.choices[0].text]);

  // response_format: plain text only (no constrained sampling): JSON formats are refused by name
  const rf = await raw('/v1/chat/completions', JSON.stringify({ model: MODEL, messages: msgs, max_tokens: 2, response_format: { type: 'json_object' } }));
  check('response_format json_object: 400 naming the field and value', rf.status === 400 && rf.json?.error?.param === 'response_format' &&
    /json_object/.test(rf.json.error.message), rf.text);
  await expectStatus('response_format json_schema', 400, () => client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 2,
    response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } } }));
  const rft = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 2, temperature: 0, response_format: { type: 'text' } });
  check('response_format text is served', rft.choices[0].message.content.length > 0, rft.choices[0]);
  await expectStatus('responses text.format json_schema', 400, () => client.responses.create({ model: MODEL, input: 'x', max_output_tokens: 2,
    text: { format: { type: 'json_schema', name: 'x', schema: { type: 'object' } } } }));

  // logit_bias forces a token
  const forced = tk.json.tokens[tk.json.tokens.length - 1];
  const lb = await client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 3, temperature: 0, logit_bias: { [forced]: 100 } });
  const lbt = await raw('/detokenize', JSON.stringify({ tokens: [forced, forced, forced] }));
  check('logit_bias +100 forces the token', lb.choices[0].text.trim() === lbt.json.content.trim(), [lb.choices[0].text, lbt.json]);

  // responses (stateless)
  const r1 = await client.responses.create({ model: MODEL, input: 'Once upon a time', instructions: 'Tell a story.', max_output_tokens: 16, temperature: 0 });
  check('responses: output text', r1.object === 'response' && r1.output_text.length > 0, r1);
  check('responses: usage', r1.usage.output_tokens === 16 && r1.status === 'incomplete', r1.usage);
  const rs = await client.responses.create({ model: MODEL, input: [{ role: 'user', content: 'Once upon a time' }], max_output_tokens: 16, temperature: 0, stream: true, instructions: 'Tell a story.' });
  let rtext = '', completed = null;
  const types = new Set();
  for await (const ev of rs) {
    types.add(ev.type);
    if (ev.type === 'response.output_text.delta') rtext += ev.delta;
    if (ev.type === 'response.completed' || ev.type === 'response.incomplete') completed = ev.response;
  }
  check('responses streamed: events', types.has('response.created') && types.has('response.output_item.added') && completed !== null, [...types]);
  check('responses streamed: same text', rtext === r1.output_text && completed.output[0].content[0].text === rtext, [rtext, r1.output_text]);
  await expectStatus('previous_response_id', 400, () => client.responses.create({ model: MODEL, input: 'x', previous_response_id: 'resp_1' }));

  // 32 concurrent greedy streams, each as it is alone
  const prompts = Array.from({ length: 32 }, (_, i) => `Once upon a time ${['Tom', 'Lily', 'Sam', 'Max'][i % 4]} ${i % 8 < 4 ? 'had' : 'saw'} a${i % 3 ? ' big' : ''}`);
  const one = (p) => streamChat({ model: MODEL, messages: [{ role: 'user', content: p }], max_tokens: 24, temperature: 0 });
  const alone = [];
  for (const p of prompts) alone.push(await one(p));
  const together = await Promise.all(prompts.map(one));
  const same = together.filter((t, i) => t.text === alone[i].text && t.finish === alone[i].finish).length;
  check('32 concurrent streams equal their runs alone', same === 32, { same, a: alone[1], t: together[1] });

  // malformed requests: each a 4xx with an error object, and the server still serves
  let r = await raw('/v1/chat/completions', '{"messages": [');
  check('bad JSON: 400', r.status === 400 && r.json?.error?.message, r.text);
  await stillServing('bad JSON');
  await expectStatus('wrong type', 400, () => client.chat.completions.create({ model: MODEL, messages: msgs, temperature: 'hot' }));
  await expectStatus('messages not an array', 400, () => client.chat.completions.create({ model: MODEL, messages: 'hi' }));
  await expectStatus('unknown model', 404, () => client.chat.completions.create({ model: 'no-such-model', messages: msgs }));
  r = await raw('/v1/completions', JSON.stringify({ model: MODEL, prompt: 'x'.repeat(100 * 1024) }));
  check('oversize body: 413', r.status === 413 && r.json?.error?.code === 'request_too_large', r.status);
  r = await raw('/v1/completions', '['.repeat(100) + ']'.repeat(100));
  check('deep JSON: 400', r.status === 400 && r.json?.error, r.status);
  await stillServing('oversize body');
  const noauth = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await expectStatus('wrong API key', 401, () => noauth.models.list());
  r = await raw('/v1/models', undefined, {}, 'GET');
  check('missing API key: 401', r.status === 401 && r.json?.error?.type === 'authentication_error', r.text);
  await expectStatus('prompt longer than the context', 400, () => client.completions.create({ model: MODEL, prompt: 'Once upon a time '.repeat(400), max_tokens: 4 }));
  r = await raw('/v1/nothing', '{}');
  check('unknown endpoint: 404', r.status === 404 && r.json?.error, r.status);
  await stillServing('all malformed requests');

  // CORS only for the configured origin
  r = await raw('/v1/models', undefined, { ...auth, Origin: 'http://app.example' }, 'GET');
  check('CORS for the configured origin', r.headers.get('access-control-allow-origin') === 'http://app.example');
  r = await raw('/v1/models', undefined, { ...auth, Origin: 'http://evil.example' }, 'GET');
  check('no CORS for another origin', r.headers.get('access-control-allow-origin') === null);
  r = await raw('/v1/chat/completions', undefined, { Origin: 'http://app.example', 'Access-Control-Request-Method': 'POST' }, 'OPTIONS');
  check('CORS preflight', r.status === 204 && /POST/.test(r.headers.get('access-control-allow-methods') || ''), r.status);

  // a client that disconnects mid-stream frees its blocks at once
  const ac = new AbortController();
  const long = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 400, temperature: 1, stream: true }, { signal: ac.signal });
  let got = 0;
  try {
    for await (const ch of long) { if (++got === 3) { check('blocks in use while streaming', (await metric('minerva_kv_blocks_used')) > 0); ac.abort(); } }
  } catch { /* aborted */ }
  let freed = false;
  for (let i = 0; i < 40 && !freed; i++) {
    await sleep(50);
    freed = (await metric('minerva_kv_blocks_used')) === 0 && (await metric('minerva_requests_running')) === 0;
  }
  check('a disconnected stream frees its KV blocks', freed);
  check('the cancel is counted', (await metric('minerva_requests_cancelled_total')) >= 1);
  const m = await raw('/metrics', undefined, auth, 'GET');
  check('metrics: Prometheus text', /^minerva_requests_total\{status="200"\} \d+$/m.test(m.text) &&
    /^minerva_time_to_first_token_seconds_bucket\{le="\+Inf"\} \d+$/m.test(m.text) && /^minerva_prefix_cache_hit_tokens_total /m.test(m.text));
}

async function busy() {
  const s = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Once' }], max_tokens: 500, temperature: 1, stream: true });
  const it = s[Symbol.asyncIterator]();
  await it.next(); // the first request is running
  const r = await raw('/v1/completions', JSON.stringify({ model: MODEL, prompt: 'Once', max_tokens: 2 }));
  check('a full queue answers 503', r.status === 503 && r.json?.error, r.status);
  check('503 says Retry-After', r.headers.get('retry-after') !== null);
  s.controller.abort();
  for (let i = 0; i < 40; i++) {
    await sleep(50);
    const h = await raw('/v1/completions', JSON.stringify({ model: MODEL, prompt: 'Once', max_tokens: 2 }));
    if (h.status === 200) { pass++; return; }
  }
  check('serving again once the running request ended', false);
}

async function harmony() {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'What is 2 + 2?' }];
  // reasoning and answer
  const think = '<|channel|>analysis<|message|>Two plus two.<|end|><|start|>assistant<|channel|>final<|message|>It is 4.<|return|>';
  const a = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 64, temperature: 0, reasoning_effort: 'low', x_scripted_output: think });
  const m = a.choices[0].message;
  check('harmony: analysis -> reasoning_content', m.reasoning_content === 'Two plus two.', m);
  check('harmony: final -> content', m.content === 'It is 4.' && a.choices[0].finish_reason === 'stop', a.choices[0]);
  const s = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 64, temperature: 0, stream: true, x_scripted_output: think });
  let reasoning = '', content = '';
  for await (const ch of s) for (const c of ch.choices) { reasoning += c.delta.reasoning_content || ''; content += c.delta.content || ''; }
  check('harmony streamed: reasoning and content apart', reasoning === 'Two plus two.' && content === 'It is 4.', [reasoning, content]);
  // a tool call
  const call = '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>';
  const q = [{ role: 'user', content: 'Weather in Paris?' }];
  const t = await client.chat.completions.create({ model: MODEL, messages: q, tools, max_tokens: 64, temperature: 0, x_scripted_output: call });
  const tc = t.choices[0].message.tool_calls;
  check('harmony: a tool call', t.choices[0].finish_reason === 'tool_calls' && tc?.length === 1 && tc[0].function.name === 'get_weather' &&
    JSON.parse(tc[0].function.arguments).city === 'Paris' && tc[0].id && tc[0].type === 'function', t.choices[0]);
  const ts = await client.chat.completions.create({ model: MODEL, messages: q, tools, max_tokens: 64, temperature: 0, stream: true, x_scripted_output: call });
  let stc = null, sfin = null;
  for await (const ch of ts) for (const c of ch.choices) { if (c.delta.tool_calls) stc = c.delta.tool_calls; if (c.finish_reason) sfin = c.finish_reason; }
  check('harmony streamed: the tool call', stc?.[0]?.function?.name === 'get_weather' && sfin === 'tool_calls', [stc, sfin]);
  // the round trip: the call and its result rendered back
  const back = [...q, { role: 'assistant', content: null, tool_calls: tc }, { role: 'tool', tool_call_id: tc[0].id, content: '{"temp": 21}' }];
  const fin = await client.chat.completions.create({ model: MODEL, messages: back, tools, max_tokens: 16, temperature: 0,
    x_scripted_output: '<|channel|>final<|message|>21 degrees.<|return|>' });
  check('harmony: the tool result turn', fin.choices[0].message.content === '21 degrees.' && fin.usage.prompt_tokens > t.usage.prompt_tokens, fin.choices[0]);
  const tok = await raw('/tokenize', JSON.stringify({ content: 'functions.get_weather' }));
  check('the tool result turn is longer by the call and result', tok.status === 200 && fin.usage.prompt_tokens - t.usage.prompt_tokens > 10);
  // malformed output: text, never a 500
  const bad = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 8, temperature: 0, x_scripted_output: 'I forgot the format entirely.' });
  check('malformed output is returned as text', bad.choices[0].message.content?.includes('I forgot the format'), bad.choices[0]);
  // free sampling on random weights: whatever comes, an answer
  const free = await client.chat.completions.create({ model: MODEL, messages: msgs, tools, max_tokens: 24, temperature: 1, seed: 5 });
  check('random output still answers 200', typeof free.choices[0].finish_reason === 'string');
  // responses: reasoning item, message item, function call
  const r = await client.responses.create({ model: MODEL, input: 'What is 2 + 2?', instructions: 'Be brief.', max_output_tokens: 64, temperature: 0, x_scripted_output: think });
  check('responses: reasoning and message items', r.output.length === 2 && r.output[0].type === 'reasoning' &&
    r.output[0].content[0].text === 'Two plus two.' && r.output_text === 'It is 4.', r.output);
  const rc = await client.responses.create({ model: MODEL, input: 'Weather in Paris?', tools: [{ type: 'function', name: 'get_weather', parameters: tools[0].function.parameters }],
    max_output_tokens: 64, temperature: 0, x_scripted_output: call });
  const fc = rc.output.find((o) => o.type === 'function_call');
  check('responses: a function_call item', fc && fc.name === 'get_weather' && JSON.parse(fc.arguments).city === 'Paris', rc.output);
  const rb = await client.responses.create({ model: MODEL, max_output_tokens: 16, temperature: 0,
    input: [{ role: 'user', content: 'Weather in Paris?' }, fc, { type: 'function_call_output', call_id: fc.call_id, output: '{"temp": 21}' }],
    tools: [{ type: 'function', name: 'get_weather', parameters: tools[0].function.parameters }],
    x_scripted_output: '<|channel|>final<|message|>21 degrees.<|return|>' });
  check('responses: the function result turn', rb.output_text === '21 degrees.', rb.output);
  await expectStatus('bad reasoning_effort', 400, () => client.chat.completions.create({ model: MODEL, messages: msgs, reasoning_effort: 'huge' }));
}

// a Qwen3-style model: its chat template, <think> reasoning and <tool_call> calls
async function template() {
  const msgs = [{ role: 'user', content: 'Hi' }];
  const think = '<think>Let me see.</think>\n\nHello there.<|im_end|>';
  const a = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 30, temperature: 0, x_scripted_output: think });
  check('template: <think> -> reasoning_content', a.choices[0].message.reasoning_content === 'Let me see.' &&
    a.choices[0].message.content === 'Hello there.' && a.choices[0].finish_reason === 'stop', a.choices[0]);
  const s = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 30, temperature: 0, stream: true, x_scripted_output: think });
  let reasoning = '', content = '';
  for await (const ch of s) for (const c of ch.choices) { reasoning += c.delta.reasoning_content || ''; content += c.delta.content || ''; }
  check('template streamed: reasoning and content apart', reasoning === 'Let me see.' && content === 'Hello there.', [reasoning, content]);
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>';
  const q = [{ role: 'user', content: 'Weather in Paris?' }];
  const t = await client.chat.completions.create({ model: MODEL, messages: q, tools, max_tokens: 60, temperature: 0, x_scripted_output: call });
  const tc = t.choices[0].message.tool_calls;
  check('template: a Qwen tool call', t.choices[0].finish_reason === 'tool_calls' && tc?.[0]?.function?.name === 'get_weather' &&
    JSON.parse(tc[0].function.arguments).city === 'Paris', t.choices[0]);
  const ts = await client.chat.completions.create({ model: MODEL, messages: q, tools, max_tokens: 60, temperature: 0, stream: true, x_scripted_output: call });
  let stc = null, text = '';
  for await (const ch of ts) for (const c of ch.choices) { if (c.delta.tool_calls) stc = c.delta.tool_calls; text += c.delta.content || ''; }
  check('template streamed: the tool call, no tag in the text', stc?.[0]?.function?.name === 'get_weather' && !text.includes('<tool_call>'), [stc, text]);
  const back = [...q, { role: 'assistant', content: null, tool_calls: tc }, { role: 'tool', tool_call_id: tc[0].id, content: '21' }];
  const fin = await client.chat.completions.create({ model: MODEL, messages: back, tools, max_tokens: 8, temperature: 0,
    chat_template_kwargs: { enable_thinking: false }, x_scripted_output: 'It is 21.<|im_end|>' });
  check('template: the tool result turn', fin.choices[0].message.content === 'It is 21.' && fin.usage.prompt_tokens > t.usage.prompt_tokens, fin.choices[0]);
  const free = await client.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 16, temperature: 1, seed: 1 });
  check('template: sampled output answers 200', typeof free.choices[0].message.content === 'string');
}

// Slow clients, through raw sockets: none may hold a connection thread (or
// the engine) past the server's --timeout (2 s here).
function rawSocket() {
  const u = new URL(BASE);
  const sock = net.connect(Number(u.port), u.hostname);
  const t0 = Date.now();
  let data = '';
  const closed = new Promise((res) => sock.on('close', () => res(Date.now() - t0)));
  sock.on('data', (d) => { data += d; });
  sock.on('error', () => {});
  return { sock, closed, text: () => data };
}
function head(len, extra = '') {
  return `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${len}\r\n${extra}\r\n`;
}
const within = (p, ms) => Promise.race([p, sleep(ms).then(() => -1)]);

async function slow() {
  // a body that stalls: closed by the idle timeout
  const a = rawSocket();
  a.sock.write(head(1000) + '{"model"');
  const ta = await within(a.closed, 8000);
  check('a stalled body: the connection is closed by the timeout', ta >= 1500 && ta < 8000, ta);
  // a body that trickles a byte every 200 ms (never idle): closed once the timeout has passed
  const b = rawSocket();
  b.sock.write(head(1000));
  const drip = setInterval(() => { if (!b.sock.destroyed) b.sock.write(' '); }, 200);
  const tb = await within(b.closed, 8000);
  clearInterval(drip);
  check('a trickled body: the connection is closed once the timeout has passed', tb >= 1500 && tb < 8000, tb);
  // a declared body over the cap: 413 with an error object at once, before any byte of it
  const c = rawSocket();
  c.sock.write(head(100 * 1024 * 1024));
  const tc = await within(c.closed, 4000);
  const body = c.text().slice(c.text().indexOf('\r\n\r\n') + 4);
  let err = null;
  try { err = JSON.parse(body).error; } catch { /* not JSON */ }
  check('a declared body over the cap: 413 at once', /^HTTP\/1\.1 413/.test(c.text()) && tc >= 0 && tc < 4000, [tc, c.text().slice(0, 40)]);
  check('the 413 is an OpenAI error object', err?.code === 'request_too_large' && typeof err.message === 'string', body);
  // a stream whose reader stalls: the engine serves others meanwhile, and the
  // server closes the connection after the timeout while the reader is still
  // stalled (e2e_serve.sh checks its log line: the request ended in under 7 s,
  // cancelled if it was still generating)
  const d = rawSocket();
  // (16 choices with 20 alternatives per token: megabytes of events, more than the socket buffers hold)
  const req = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Once' }], max_tokens: 480, n: 16, temperature: 1,
    stream: true, ignore_eos: true, logprobs: true, top_logprobs: 20 });
  d.sock.write(head(Buffer.byteLength(req)).replace('/v1/completions', '/v1/chat/completions') + req);
  d.sock.pause();
  await sleep(500);
  const t1 = Date.now();
  const other = await client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 8, temperature: 0 });
  check('a stalled stream reader: others are served meanwhile', other.choices[0].text.length > 0 && Date.now() - t1 < 5000, Date.now() - t1);
  // once the timeout has ended it (how soon e2e_serve.sh checks in the log,
  // where a slow host, or a sanitizer's, is allowed for): nothing left
  // running and no KV blocks held, with the reader still stalled
  const t2 = Date.now();
  let idle = false;
  while (!idle && Date.now() - t2 < 20000) {
    idle = (await metric('minerva_requests_running')) === 0 && (await metric('minerva_kv_blocks_used')) === 0;
    if (!idle) await sleep(250);
  }
  check('a stalled stream reader: nothing left running, no KV blocks held', idle, Date.now() - t2);
  d.sock.destroy();
  await stillServing('slow clients');
}

const mode = process.argv[2];
try {
  await ({ main, busy, harmony, template, slow })[mode]();
} catch (e) {
  fail++;
  console.error(`FAIL: ${mode}: ${e.stack || e}`);
}
console.log(`${mode}: ${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);
