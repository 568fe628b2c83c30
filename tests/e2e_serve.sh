#!/bin/sh
# End-to-end tests of `minerva serve` with the official `openai` npm package
# (installed once into the build directory): the bundled stories260K (every
# endpoint, 32 concurrent streams against each run alone, malformed
# requests, disconnects, a full queue, slow clients, a signal while the model
# loads), then a small random gpt-oss with the
# harmony tokenizer (reasoning, tool calls, responses), when
# ../../shared/tokenizers/gptoss is present. Skipped, with a message, without
# node and npm or in a cross build.
# Run from tests/ with MNV_CLI set.

. ./lib_e2e.sh

case $MNV_CLI in
*/run_minerva_cli)
    echo "SKIP: cross build (the server tests run natively)"
    exit 0 ;;
esac
# the command line: help, usage errors, failures named
expect_rc "serve --help" 0 "$MNV_CLI" serve --help
check "serve --help prints its usage" contains "$TMP/out" "Usage: minerva serve"
expect_fail "serve: two keys" 2 "exclude each other" "$MNV_CLI" serve --api-key a --api-key-file b
expect_fail "serve: a missing model" 1 "no-such-model" "$MNV_CLI" serve --port 0 -m fixtures/models/no-such-model
expect_fail "serve: a bad host" 1 "not a numeric" "$MNV_CLI" serve --host localhost --port 0
expect_fail "serve: a missing key file" 1 "no-such-key" "$MNV_CLI" serve --api-key-file "$TMP/no-such-key"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "SKIP: node and npm are needed for the server tests (apt-get install nodejs npm)"
    exit 0
fi
if "$MNV_CLI" serve --port 0 --bad-option 2>&1 | grep -q "no server"; then
    echo "SKIP: this build has no server (libmicrohttpd-dev missing at configure time)"
    exit 0
fi

# the openai package, once per build directory
NPM_DIR=$(dirname "$MNV_CLI")/npm-openai
OPENAI_VERSION=7.60.0
if [ ! -f "$NPM_DIR/node_modules/openai/package.json" ] ||
    ! grep -q "\"version\": \"$OPENAI_VERSION\"" "$NPM_DIR/node_modules/openai/package.json"; then
    mkdir -p "$NPM_DIR"
    if ! (cd "$NPM_DIR" && npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent "openai@$OPENAI_VERSION" >"$TMP/npm.log" 2>&1); then
        cat "$TMP/npm.log" >&2
        echo "SKIP: npm could not install openai@$OPENAI_VERSION (no registry?)"
        exit 0
    fi
fi
export OPENAI_DIR="$NPM_DIR"

# start_server NAME ARGS...: a server on a free port; sets BASE and PID.
start_server() {
    name=$1
    shift
    "$MNV_CLI" serve --port 0 "$@" 2>"$TMP/$name.log" &
    PID=$!
    i=0
    while [ $i -lt 300 ] && ! grep -qs ": ready$" "$TMP/$name.log"; do
        sleep 0.1
        i=$((i + 1))
    done
    PORT=$(sed -n 's/.* on http:\/\/[^ ]*:\([0-9]*\) (loading the model)$/\1/p' "$TMP/$name.log")
    BASE="http://127.0.0.1:$PORT"
    check "$name: the server starts" [ -n "$PORT" ]
}
# stop_server NAME: SIGTERM; it must exit 0 and have logged every request.
stop_server() {
    kill -TERM "$PID"
    wait "$PID"
    rc=$?
    cat "$TMP/$1.log" >>"$ERRLOG"
    check "$1: a clean exit on SIGTERM" [ "$rc" -eq 0 ]
    check "$1: says it stops" contains "$TMP/$1.log" "SIGTERM: cancelling running requests and stopping"
    check "$1: one log line per request" grep -qE '^127\.0\.0\.1 POST /v1/chat/completions 200 [0-9]+\+[0-9]+ tokens' "$TMP/$1.log"
}

# stories260K: a key, deterministic batching (each stream equals its run alone)
start_server main --api-key test-key --deterministic --parallel 32 --max-body-kb 64 --cors-origin http://app.example
BASE=$BASE KEY=test-key MODEL=stories260K node serve/openai_test.mjs main
check "openai client: stories260K" [ $? -eq 0 ]
stop_server main

# a full queue: 503 with Retry-After
start_server busy --parallel 1 --max-queue 0
BASE=$BASE MODEL=stories260K node serve/openai_test.mjs busy
check "openai client: a full queue" [ $? -eq 0 ]
kill -TERM "$PID"
wait "$PID"
check "busy: a clean exit" [ $? -eq 0 ]
cat "$TMP/busy.log" >>"$ERRLOG"

# slow clients: a stalled or trickled body, a declared body over the cap, a
# stream whose reader stalls
start_server slow --timeout 2 --max-body-kb 64 --parallel 20
BASE=$BASE MODEL=stories260K node serve/openai_test.mjs slow
check "openai client: slow clients" [ $? -eq 0 ]
kill -TERM "$PID"
wait "$PID"
check "slow: a clean exit" [ $? -eq 0 ]
check "slow: the trickled body is logged as 408" grep -q "POST /v1/completions 408" "$TMP/slow.log"
# The stalled stream ends --timeout (2) seconds after its socket buffers
# fill, which takes the engine a second or two, four or more under the
# sanitizers on a small host; the reader keeps its socket open until the
# server reports nothing running and no KV blocks held (at most 20 s more),
# so an end within 7 s is the server's own.
secs=$(awk '/POST \/v1\/chat\/completions/ { print int($(NF - 1)) }' "$TMP/slow.log")
check "slow: the stalled stream ended by the timeout, before the reader let go (in under 7 s, got '$secs')" \
    [ "${secs:-99}" -lt 7 ]
cat "$TMP/slow.log" >>"$ERRLOG"

# a signal while the model loads: the port answers 503 "loading", and SIGINT
# ends the process at once with status 0 and a log line (the load here never
# ends: config.json is a FIFO no one writes)
mkdir "$TMP/loading" && mkfifo "$TMP/loading/config.json"
"$MNV_CLI" serve --port 0 -m "$TMP/loading" 2>"$TMP/loading.log" &
PID=$!
i=0
while [ $i -lt 100 ] && ! grep -qs "(loading the model)$" "$TMP/loading.log"; do
    sleep 0.1
    i=$((i + 1))
done
PORT=$(sed -n 's/.* on http:\/\/[^ ]*:\([0-9]*\) (loading the model)$/\1/p' "$TMP/loading.log")
health=$(node -e "fetch('http://127.0.0.1:$PORT/health').then(async (r) => console.log(r.status, await r.text()))" 2>&1)
check "loading: /health says 503 loading (got '$health')" [ "$health" = '503 {"status":"loading"}' ]
kill -INT "$PID"
# a watchdog: a server still loading after 10 s is killed (status 137)
(i=0
 while [ $i -lt 100 ] && [ ! -e "$TMP/loading.done" ]; do sleep 0.1; i=$((i + 1)); done
 [ -e "$TMP/loading.done" ] || kill -KILL "$PID" 2>/dev/null) &
watchdog=$!
wait "$PID"
rc=$?
: >"$TMP/loading.done"
wait "$watchdog"
cat "$TMP/loading.log" >>"$ERRLOG"
check "SIGINT while loading: exit status 0 at once (got $rc)" [ "$rc" -eq 0 ]
check "SIGINT while loading: a log line" contains "$TMP/loading.log" "SIGINT while loading the model: stopping"

# gpt-oss: Harmony through a scripted model output
if [ -f "$GPTOSS_TOK/tokenizer.json" ]; then
    synth_gptoss "$TMP/gptoss"
    start_server harmony -m "$TMP/gptoss" --ctx 2048 --parallel 2 --test-scripted-output
    BASE=$BASE MODEL=gptoss node serve/openai_test.mjs harmony
    check "openai client: gpt-oss (Harmony)" [ $? -eq 0 ]
    check "malformed model output: a warning in the log" grep -q "^warning: chatcmpl-.*returned as text" "$TMP/harmony.log"
    stop_server harmony
else
    echo "SKIP: $GPTOSS_TOK not present (the gpt-oss server test)"
fi

# Qwen3: its chat template, reasoning and tool calls through a scripted output
QTOK=../../shared/tokenizers/qwen3
if [ -f "$QTOK/tokenizer.json" ]; then
    cat >"$TMP/qcfg.json" <<'CFG'
{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
 "vocab_size": 151936, "max_position_embeddings": 4096, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
 "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151645}
CFG
    mnv synth --config "$TMP/qcfg.json" --out "$TMP/qwen3" --dtype bf16 >/dev/null
    check "synth a small qwen3" [ $? -eq 0 ]
    cp "$QTOK"/tokenizer*.json "$TMP/qwen3/"
    start_server template -m "$TMP/qwen3" --ctx 1024 --parallel 2 --test-scripted-output
    BASE=$BASE MODEL=qwen3 node serve/openai_test.mjs template
    check "openai client: qwen3 (chat template)" [ $? -eq 0 ]
    stop_server template
else
    echo "SKIP: $QTOK not present (the chat-template server test)"
fi
e2e_done
