// Load generator for `minerva serve`, with the official `openai` package:
// at each concurrency level, that many streaming completions at once (a
// prompt of token ids, a fixed number of generated tokens: ignore_eos), and
// per level the aggregate generation rate (all tokens over the wall time),
// the decode rate as `minerva bench --parallel` counts it (the tokens that
// arrive after the last stream's first token, over the time from then to
// the end: every stream decoding), and the time to first token, p50 and p99.
//
//   node bench/serve_load.mjs --base http://127.0.0.1:8080 [--levels 1,4,10,32]
//        [--prompt-tokens 32] [--max-tokens 64] [--rounds 1] [--key KEY]
//
// OPENAI_DIR names the folder holding node_modules/openai (default: build/npm-openai,
// which `make test` fills).
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const dir = process.env.OPENAI_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'build', 'npm-openai');
const { default: OpenAI } = await import(pathToFileURL(path.join(dir, 'node_modules', 'openai', 'index.mjs')).href);

const base = arg('base', 'http://127.0.0.1:8080');
const levels = arg('levels', '1,4,10,32').split(',').map(Number);
const promptTokens = Number(arg('prompt-tokens', 32));
const maxTokens = Number(arg('max-tokens', 64));
const rounds = Number(arg('rounds', 1));
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: arg('key', 'none'), maxRetries: 0, timeout: 600000 });
const model = (await client.models.list()).data[0].id;

const pct = (a, p) => {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

// Distinct prompts (no prefix sharing between streams): ids 3.. of the vocabulary.
async function one(k) {
  const prompt = [1, ...Array.from({ length: promptTokens - 1 }, (_, i) => 3 + ((k * 7 + i * 13) % 400))];
  const t0 = performance.now();
  let first = 0, n = 0;
  const times = []; // arrival time of each token (a chunk's logprobs list its tokens)
  const s = await client.completions.create({ model, prompt, max_tokens: maxTokens, temperature: 0, stream: true,
    ignore_eos: true, logprobs: 0, stream_options: { include_usage: true } });
  for await (const ch of s) {
    const k = ch.choices.length ? ch.choices[0].logprobs?.tokens?.length ?? 0 : 0;
    if (k) {
      const now = performance.now();
      if (!first) first = now;
      for (let i = 0; i < k; i++) times.push(now);
    }
    if (ch.usage) n = ch.usage.completion_tokens;
  }
  return { t0, first, end: performance.now(), n, times };
}

console.log(`model ${model}, prompt ${promptTokens} tokens, ${maxTokens} generated, ${rounds} round(s) per level`);
console.log('streams  gen tok/s  decode tok/s  TTFT p50 ms  TTFT p99 ms');
let k = 0;
for (const n of levels) {
  const res = [];
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) res.push(...(await Promise.all(Array.from({ length: n }, () => one(k++)))));
  const wall = (performance.now() - t0) / 1000;
  const tokens = res.reduce((a, r) => a + r.n, 0);
  const lastFirst = Math.max(...res.map((r) => r.first)), endAll = Math.max(...res.map((r) => r.end));
  const after = res.reduce((a, r) => a + r.times.filter((t) => t > lastFirst).length, 0);
  const decode = after / ((endAll - lastFirst) / 1000);
  const ttft = res.map((r) => r.first - r.t0);
  console.log(`${String(n).padStart(7)}  ${(tokens / wall).toFixed(1).padStart(9)}  ${decode.toFixed(1).padStart(12)}  ` +
    `${pct(ttft, 50).toFixed(0).padStart(11)}  ${pct(ttft, 99).toFixed(0).padStart(11)}`);
}
