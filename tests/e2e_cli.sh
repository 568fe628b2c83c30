#!/bin/sh
# End-to-end tests of the other `minerva` commands (tokenize, logits,
# perplexity, inspect, synth, bench, help) and of the embed example.
# Run from tests/ with MNV_CLI, MNV_EMBED and MNV_ROOT set. Needs only
# POSIX sh, grep, sed and awk.

. ./lib_e2e.sh
MODEL="$MNV_ROOT/models/stories260K"
FIXTURE="$MNV_ROOT/tests/fixtures/stories260K_expected_greedy.txt"

# ---- help and version ----------------------------------------------------------------------
expect_rc "minerva --help" 0 "$MNV_CLI" --help
for cmd in generate tokenize logits perplexity inspect bench synth; do
    check "minerva --help lists $cmd" contains "$TMP/out" "$cmd"
done
for cmd in generate tokenize logits perplexity inspect bench synth; do
    expect_rc "$cmd --help" 0 "$MNV_CLI" "$cmd" --help
    check "$cmd --help prints its usage" contains "$TMP/out" "Usage: minerva $cmd"
done
expect_rc "minerva help bench" 0 "$MNV_CLI" help bench
expect_rc "minerva --version" 0 "$MNV_CLI" --version
check "version printed" contains "$TMP/out" "minerva 0."

# ---- tokenize ----------------------------------------------------------------------------------
got=$(mnv tokenize -m "$MODEL" --bos "Once upon a time")
check "tokenize --bos 'Once upon a time'" [ "$got" = "1 403 407 261 378" ]
got=$(mnv tokenize "Once upon a time")
check "tokenize without -m or --bos" [ "$got" = "403 407 261 378" ]
got=$(mnv tokenize --tokenizer "$MODEL/tokenizer.json" Once upon a time)
check "tokenize --tokenizer, words joined" [ "$got" = "403 407 261 378" ]
printf 'Hello, World!  Two  spaces\n"quotes" caf\303\251 \360\237\231\202 \344\270\255\346\226\207 end' >"$TMP/text.txt"
ids=$(mnv tokenize -m "$MODEL" --text-file "$TMP/text.txt")
check "tokenize --text-file gives ids" [ -n "$ids" ]
back=$(mnv tokenize -m "$MODEL" --decode "$ids")
check "decode(encode(text)) == text" same "$back" "$(cat "$TMP/text.txt")"
echo "$ids" >"$TMP/ids.txt"
back=$(mnv tokenize -m "$MODEL" --decode --text-file "$TMP/ids.txt")
check "decode --text-file" same "$back" "$(cat "$TMP/text.txt")"
# special tokens written in the text are recognised (HF add_special_tokens=False)
got=$(mnv tokenize -m "$MODEL" "<s> end")
check "'<s>' in text is the BOS token (got '$got')" [ "${got%% *}" = "1" ]
expect_fail "decode an out-of-vocabulary id" 1 "99999" "$MNV_CLI" tokenize -m "$MODEL" --decode "5 99999"
expect_fail "decode a non-id" 2 "got 'x'" "$MNV_CLI" tokenize -m "$MODEL" --decode "5 x"
expect_fail "tokenize without input" 2 "minerva tokenize: no input" "$MNV_CLI" tokenize -m "$MODEL"
expect_fail "tokenize with a missing tokenizer (the message names the file)" 1 "$TMP/none.json" \
    mnv tokenize --tokenizer "$TMP/none.json" hi
expect_fail "tokenize -m a missing directory" 1 "does not exist" "$MNV_CLI" tokenize -m "$TMP/nothing" hi

# ---- tokenizer files that once crashed (tests/fixtures/repro) ------------------------------
REPRO="$MNV_ROOT/tests/fixtures/repro"
expect_rc "invalid UTF-8 in a Prepend normalizer" 1 "$MNV_CLI" tokenize --tokenizer "$REPRO/segv-prepend-invalid-utf8.tokenizer.json" "a b"
check "  message names the key and the byte" contains "$TMP/err" "normalizer.prepend is not valid UTF-8 (byte 47"
expect_rc "invalid UTF-8 in a Replace content" 1 "$MNV_CLI" tokenize --tokenizer "$REPRO/segv-replace-content-invalid-utf8.tokenizer.json" "a b a b"
check "  message names the key" contains "$TMP/err" "normalizer.content"
expect_rc "invalid UTF-8 in the vocabulary" 1 "$MNV_CLI" tokenize --tokenizer "$REPRO/segv-decode-regex-invalid-utf8-vocab.tokenizer.json" --decode "0 1 2 0 1"
check "  message names model.vocab" contains "$TMP/err" "model.vocab"
expect_rc "a BOS id with no token" 1 "$MNV_CLI" tokenize --tokenizer "$REPRO/bos-hole-minimal.tokenizer.json" --bos "a b"
check "  message names the id" contains "$TMP/err" "id 2"
expect_rc "an empty id list through a Fuse decoder" 0 "$MNV_CLI" tokenize --tokenizer "$REPRO/ubsan-nullptr-offset-tok_decode158.tokenizer.json" --decode " "
printf 'a \377 b\342\202' >"$TMP/bad-utf8.txt"
got=$(mnv tokenize -m "$MODEL" --text-file "$TMP/bad-utf8.txt")
back=$(mnv tokenize -m "$MODEL" --decode "$got")
check "invalid UTF-8 input text is read as U+FFFD (got '$back')" same "$back" "$(printf 'a \357\277\275 b\357\277\275')"

# ---- logits ---------------------------------------------------------------------------------------
# Validates the JSON shape (an array of rows of numbers) and prints
# "ROWS ARGMAX_ROW1 ARGMAX_ROW2 ... LOGPROB(403 at row 1)".
LOGITS_AWK='
{ s = s $0 }
END {
    gsub(/[ \t\r\n]/, "", s)
    if (substr(s, 1, 2) != "[[" || substr(s, length(s) - 1) != "]]") { print "not an array of arrays"; exit 1 }
    nrows = split(substr(s, 3, length(s) - 4), rows, /\],\[/)
    out = nrows
    for (r = 1; r <= nrows; r++) {
        n = split(rows[r], v, ",")
        if (n != want) { print "row " r " has " n " values"; exit 1 }
        best = 1
        for (i = 1; i <= n; i++) {
            if (v[i] !~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) { print "bad value " v[i]; exit 1 }
            if (v[i] + 0 > v[best] + 0) best = i
        }
        out = out " " (best - 1)
        if (r == 1) {
            z = 0
            for (i = 1; i <= n; i++) z += exp(v[i] - v[best])
            lp = v[404] - v[best] - log(z)
        }
    }
    printf "%s %.4f\n", out, lp
}'
mnv logits -m "$MODEL" --ids "1 403 407" >"$TMP/logits.json"
check "logits exits 0" [ $? -eq 0 ]
summary=$(awk -v want=512 "$LOGITS_AWK" "$TMP/logits.json")
check "logits JSON: 3 rows of 512 numbers, greedy argmax 403 407 261 (got '$summary')" \
    [ "${summary% *}" = "3 403 407 261" ]
lp=${summary##* }
check "logprob of 403 after BOS is -0.2437 (got $lp)" \
    awk -v x="$lp" 'BEGIN { exit !(x > -0.2447 && x < -0.2427) }'
expect_fail "logits without --ids" 2 "--ids is required" "$MNV_CLI" logits -m "$MODEL"
expect_fail "logits with bad ids" 2 "got '-2'" "$MNV_CLI" logits -m "$MODEL" --ids "1 -2"

# ---- perplexity --------------------------------------------------------------------------------------
awk 'f { print } /^text:$/ { f = 1 }' "$FIXTURE" >"$TMP/story.txt"
mnv perplexity -m "$MODEL" --text-file "$TMP/story.txt" --ctx 64 >"$TMP/out"
check "perplexity exits 0" [ $? -eq 0 ]
ppl=$(sed -n 's/^perplexity: \([0-9.][0-9.]*\) over [0-9][0-9]* tokens$/\1/p' "$TMP/out")
check "perplexity line printed (got '$(cat "$TMP/out")')" [ -n "$ppl" ]
check "perplexity of the model's own greedy story is in [1, 20) (got $ppl)" \
    awk -v x="$ppl" 'BEGIN { exit !(x + 0 >= 1 && x + 0 < 20) }'
check "perplexity progress on stderr" contains "$TMP/err" "[1/"
expect_fail "perplexity without --text-file" 2 "--text-file is required" "$MNV_CLI" perplexity -m "$MODEL"
expect_fail "perplexity --ctx 1" 2 "--ctx: 1 is out of range" "$MNV_CLI" perplexity -m "$MODEL" --text-file "$TMP/story.txt" --ctx 1

# ---- inspect ---------------------------------------------------------------------------------------------
expect_rc "inspect" 0 "$MNV_CLI" inspect "$MODEL"
check "inspect lists model.embed_tokens.weight" contains "$TMP/out" "model.embed_tokens.weight"
check "inspect names the architecture" contains "$TMP/out" "llama"
check "inspect prints the KV cache size" contains "$TMP/out" "KV cache per token"
expect_fail "inspect without DIR" 2 "missing the model directory" "$MNV_CLI" inspect
expect_fail "inspect a missing dir" 1 "$TMP/nothing does not exist" "$MNV_CLI" inspect "$TMP/nothing"
# the KV cache at each element type: q8 / q4 per head row of 8: 8 / 4 bytes of codes + an f16 scale and bias
kvb() { "$MNV_CLI" inspect "$MODEL" --ctx 512 "$@" | sed -n 's/^  KV cache: *\([0-9]*\) bytes.*/\1/p'; }
kf32=$(kvb --kv-type f32) kq8=$(kvb --kv-type q8) kq4=$(kvb --kv-type q4) kmix=$(kvb --kv-type-k q8 --kv-type-v f16)
check "inspect --kv-type: q8 is 12/32 of f32 ($kq8 of $kf32)" [ "$((kf32 * 12))" -eq "$((kq8 * 32))" ]
check "inspect --kv-type: q4 is 8/32 of f32 ($kq4 of $kf32)" [ "$((kf32 * 8))" -eq "$((kq4 * 32))" ]
check "inspect --kv-type-k q8 --kv-type-v f16: (12 + 16) / 64 of f32 ($kmix)" [ "$((kf32 * 28))" -eq "$((kmix * 64))" ]
expect_rc "inspect --kv-type q4" 0 "$MNV_CLI" inspect "$MODEL" --kv-type q4
check "  names the type" contains "$TMP/out" "KV q4"
check "  prints the total" contains "$TMP/out" "total:"
expect_fail "inspect --kv-type-v q2" 2 "--kv-type-v: expected f32, f16, bf16, q8 or q4, got 'q2'" "$MNV_CLI" inspect "$MODEL" --kv-type-v q2

# ---- synth, then generate on the result -------------------------------------------------------------------
cat >"$TMP/config.json" <<'EOF'
{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
  "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "hidden_act": "silu",
  "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
}
EOF
expect_rc "synth f32" 0 "$MNV_CLI" synth --config "$TMP/config.json" --out "$TMP/synth" --dtype f32 --seed 7
check "synth wrote model.safetensors" [ -s "$TMP/synth/model.safetensors" ]
got=$(mnv generate -m "$TMP/synth" --prompt-ids "1 5 9" -n 8 --temp 0 --ignore-eos --print-ids)
check "generate on the synthesized model prints 8 ids (got '$got')" [ "$(echo "$got" | wc -w)" -eq 8 ]
check "  all ids in the vocabulary" awk -v s="$got" 'BEGIN { n = split(s, a, " "); for (i = 1; i <= n; i++) if (a[i] !~ /^[0-9]+$/ || a[i] >= 64) exit 1 }'
# a prompt that the tokenizer turns into no ids; a missing model directory
mkdir "$TMP/synthtok" && cp "$TMP/synth/config.json" "$TMP/synth/model.safetensors" "$TMP/synthtok/"
printf '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}' >"$TMP/synthtok/tokenizer.json"
expect_rc "generate -p with a prompt of no tokens" 1 "$MNV_CLI" generate -m "$TMP/synthtok" -p xyz -n 2
check "  message says the prompt produced no tokens" contains "$TMP/err" "the prompt produced no tokens"
expect_rc "generate -m a missing directory" 1 "$MNV_CLI" generate -m "$TMP/nothing" -n 2
check "  message says it does not exist" contains "$TMP/err" "does not exist"
expect_rc "synth bf16" 0 "$MNV_CLI" synth --config "$TMP/config.json" --out "$TMP/synth16" --seed 7
expect_rc "inspect the bf16 model" 0 "$MNV_CLI" inspect "$TMP/synth16"
check "  its tensors are BF16" contains "$TMP/out" "BF16"
expect_fail "synth --dtype q4" 2 "got 'q4'" "$MNV_CLI" synth --config "$TMP/config.json" --out "$TMP/x" --dtype q4
expect_fail "synth without --out" 2 "--out is required" "$MNV_CLI" synth --config "$TMP/config.json"
expect_fail "synth of a missing config" 1 "$TMP/none.json" "$MNV_CLI" synth --config "$TMP/none.json" --out "$TMP/y"

# sizes beyond 64 bits: refused with the true magnitude, nothing written (run with
# a 1 MiB file-size limit, so that a regression fails here instead of filling the disk)
small_files() { (trap '' XFSZ && ulimit -f 2048 && exec "$@"); }
mkdir "$TMP/absurd"
cat >"$TMP/absurd/config.json" <<'EOF'
{"model_type": "llama", "hidden_size": 1073741824, "intermediate_size": 1073741824,
 "num_hidden_layers": 4, "num_attention_heads": 1048576, "num_key_value_heads": 1048576,
 "vocab_size": 1073741824, "tie_word_embeddings": false}
EOF
expect_fail "inspect a config whose counts overflow 64 bits" 1 "3.46e+19 parameters" "$MNV_CLI" inspect "$TMP/absurd"
expect_fail "synth of a config beyond the size bound" 1 "more than the 16 TiB" \
    small_files "$MNV_CLI" synth --config "$TMP/absurd/config.json" --out "$TMP/absurd-out"
check "  nothing written" [ ! -e "$TMP/absurd-out" ]
# a write that fails part way (a file-size limit, as a full disk) leaves no partial model
sed 's/"hidden_size": 32, "intermediate_size": 64/"hidden_size": 256, "intermediate_size": 512/' \
    "$TMP/config.json" >"$TMP/config-7mb.json"
small_files "$MNV_CLI" synth --config "$TMP/config-7mb.json" --out "$TMP/full" --dtype f32 >"$TMP/out" 2>"$TMP/err"
check "synth that cannot finish writing exits 1" [ $? -eq 1 ]
cat "$TMP/err" >>"$ERRLOG"
check "  and says the write failed" contains "$TMP/err" "write failed"
check "  and removes its partial output" [ ! -e "$TMP/full" ]

# ---- bench ---------------------------------------------------------------------------------------------------
expect_rc "bench --json" 0 "$MNV_CLI" bench -m "$MODEL" --json -p 16 -n 8 --reps 1
check "bench JSON has prefill_tok_s" contains "$TMP/out" '"prefill_tok_s": '
check "bench JSON has decode_tok_s" contains "$TMP/out" '"decode_tok_s": '
check "bench JSON is one object" grep -qE '^\{.*\}$' "$TMP/out"
expect_rc "bench (text)" 0 "$MNV_CLI" bench -m "$MODEL" -p 8 -n 4 --reps 1
check "bench prints the decode bandwidth" contains "$TMP/out" "GB/s"
expect_rc "bench --depth 40 with a q8 K and q4 V cache" 0 "$MNV_CLI" bench -m "$MODEL" -p 8 -n 4 --reps 1 --depth 40 --kv-type-k q8 --kv-type-v q4
check "  prints the floor at that depth" contains "$TMP/out" "floor at depth 40"
check "  names the types" contains "$TMP/out" "KV q8/q4, depth 40"
expect_rc "bench --depth 200 --depth-random" 0 "$MNV_CLI" bench -m "$MODEL" -p 8 -n 4 --reps 1 --depth 200 --depth-random --kv-type q4
check "  says the context is random" contains "$TMP/out" "depth 200 (random K/V, not computed)"
expect_fail "bench --depth with --parallel" 2 "--depth applies to the pp and tg tests" "$MNV_CLI" bench -m "$MODEL" --parallel 1 --depth 8
expect_fail "bench --reps 0" 2 "--reps: 0 is out of range" "$MNV_CLI" bench -m "$MODEL" --reps 0

# ---- the embed example ------------------------------------------------------------------------------------------
if [ -n "$MNV_EMBED" ]; then
    expect_rc "embed MODEL" 0 "$MNV_EMBED" "$MODEL"
    check "embed streams the story" contains "$TMP/out" "little girl named Lily"
    (cd "$MNV_ROOT" && "$MNV_EMBED" >/dev/null 2>>"$ERRLOG")
    check "embed with the default model dir (cwd = repo root)" [ $? -eq 0 ]
    expect_fail "embed with a missing model prints the library's error" 1 "mnv_model_load failed" "$MNV_EMBED" "$TMP/nothing"
else
    bad "MNV_EMBED is not set"
fi

# ---- the chats example: three conversations on one engine ---------------------------------------------------------
if [ -n "$MNV_CHATS" ]; then
    expect_rc "chats MODEL 3" 0 "$MNV_CHATS" "$MODEL" 3
    check "chats answers every conversation" [ "$(grep -c ' generated, first token after ' "$TMP/out")" -eq 3 ]
    expect_fail "chats with a missing model prints the library's error" 1 "mnv_model_load failed" "$MNV_CHATS" "$TMP/nothing"
else
    bad "MNV_CHATS is not set"
fi

e2e_done
