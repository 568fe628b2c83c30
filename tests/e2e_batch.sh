#!/bin/sh
# End-to-end tests of `minerva batch`: many prompts through one engine give,
# with greedy sampling, an f32 KV cache and --deterministic (every token
# computed as if alone in its batch), exactly the ids each prompt gives alone
# with `minerva generate`, whatever the batching: 8 at once with one
# prompt submitted every 3 steps and prompts over 32 tokens processed in
# chunks of 32 (--step-tokens 32), one at a time, all 16 at once, with prefix
# sharing (half the prompts start with the same 48 tokens, one prompt comes
# twice) and without, and with a KV pool too small for all of them, so that
# cached blocks are evicted. On the bundled stories260K (id and text prompts)
# and the tiny Llama, Qwen3 (f32 and bf16), Mistral and gpt-oss (dense and
# MXFP4) fixtures; gpt-oss's sliding window of 6 tokens is shorter than the
# prompts, so its rings wrap. Without --deterministic a token's logits may
# differ in the last bits with what it is batched with, so the ids could part
# at a near tie: the equality is tested where it is promised.
# Run from tests/ with MNV_CLI (the minerva binary) and MNV_ROOT (repo root).

. ./lib_e2e.sh
STORIES="$MNV_ROOT/models/stories260K"
FIXTURES="$MNV_ROOT/tests/fixtures/models"
N=12 # tokens generated per prompt

# prompts SEED: 16 lines of ids, BOS (1) first, the others in [3, 263) (valid
# in every vocabulary used here). Even lines stand alone, 3 to 90 tokens long;
# odd lines share a prefix of 48 tokens, followed by 0 to 40 tokens of their
# own; line 15 repeats line 9.
prompts() {
    awk -v seed="$1" '
    function r(n) { x = (x * 16807) % 2147483647; return x % n }
    function ids(n,    s, i) { s = ""; for (i = 0; i < n; i++) s = s " " (3 + r(260)); return s }
    BEGIN {
        x = seed
        prefix = "1" ids(47)
        split("3 9 17 30 33 47 64 90", own, " ")
        split("0 1 5 16 17 31 40", suffix, " ")
        n = 0
        for (i = 1; i <= 8; i++) {
            line[n++] = "1" ids(own[i] - 1)
            if (i < 8) line[n++] = prefix ids(suffix[i])
        }
        line[n++] = line[9]
        for (i = 0; i < n; i++) print line[i]
    }'
}

# expected_ids MODEL PROMPTS OUT [GENERATE ARGS...]: OUT gets "INDEX<tab>IDS"
# per line of PROMPTS, each prompt run alone by `minerva generate`.
expected_ids() {
    m=$1 pf=$2 out=$3
    shift 3
    : >"$out"
    i=0
    while IFS= read -r line; do
        if [ -z "$line" ]; then continue; fi
        ids=$(mnv generate -m "$m" --prompt-ids "$line" -n "$N" --temp 0 --ignore-eos --kv-type f32 \
            --deterministic --print-ids "$@") || bad "generate alone on $m, prompt $i failed: $(cat "$TMP/err")"
        printf '%d\t%s\n' "$i" "$ids" >>"$out"
        i=$((i + 1))
    done <"$pf"
}

# batch_same DESCRIPTION MODEL PROMPTS EXPECTED [BATCH ARGS...]: `minerva
# batch --print-ids` prints EXPECTED; its stderr is kept in $TMP/batch.err.
batch_same() {
    desc=$1 m=$2 pf=$3 want=$4
    shift 4
    mnv batch -m "$m" --prompts-file "$pf" -n "$N" --temp 0 --ignore-eos --kv-type f32 --deterministic \
        --print-ids "$@" >"$TMP/got"
    rc=$?
    cp "$TMP/err" "$TMP/batch.err"
    if [ "$rc" -ne 0 ]; then
        bad "$desc: exit code $rc"
        cat "$TMP/err" >&2
    elif cmp -s "$want" "$TMP/got"; then
        ok
    else
        bad "$desc: ids differ from the prompts run alone (< alone, > batch)"
        diff "$want" "$TMP/got" | grep '^[<>]' | cut -c1-150 | head -8 >&2
    fi
}

# Figures of the last batch's summary (stderr).
prefix_hits() { sed -n 's/.* \([0-9][0-9]*\) from the prefix cache.*/\1/p' "$TMP/batch.err"; }
pool_tokens() {
    sed -n 's/^KV pool:.*(\([0-9][0-9]*\) blocks of \([0-9][0-9]*\) tokens).*/\1 \2/p' "$TMP/batch.err" |
        awk '{ print $1 * $2 }'
}
all_tokens() {
    p=$(sed -n 's/^prompts: *\([0-9][0-9]*\) tokens.*/\1/p' "$TMP/batch.err")
    g=$(sed -n 's/^generated: *\([0-9][0-9]*\) tokens.*/\1/p' "$TMP/batch.err")
    echo $((${p:-0} + ${g:-0}))
}

# equivalence NAME MODEL PROMPTS SHARES: every way of batching gives the ids of
# the prompts run alone. SHARES=1: the prefix cache must have served tokens.
equivalence() {
    name=$1 m=$2 pf=$3 shares=$4
    expected_ids "$m" "$pf" "$TMP/want"
    check "$name: 16 reference outputs" [ "$(grep -c '	[0-9]' "$TMP/want")" -eq 16 ]
    staggered="--prompt-ids --parallel 8 --stagger 3 --step-tokens 32"
    batch_same "$name: --parallel 8 --stagger 3, no prefix cache" "$m" "$pf" "$TMP/want" \
        $staggered --no-prefix-cache
    check "$name: no prefix cache, no prefix hits" [ "$(prefix_hits)" = 0 ]
    batch_same "$name: --parallel 8 --stagger 3, prefix cache" "$m" "$pf" "$TMP/want" $staggered
    if [ "$shares" = 1 ]; then
        hits=$(prefix_hits)
        check "$name: shared prefixes served from the cache ($hits tokens)" [ "${hits:-0}" -ge 48 ]
    fi
    cp "$TMP/got" "$TMP/got8"
    batch_same "$name: --parallel 1" "$m" "$pf" "$TMP/want" --prompt-ids --parallel 1
    check "$name: --parallel 1 and --parallel 8 print the same" cmp -s "$TMP/got" "$TMP/got8"
    batch_same "$name: --parallel 16, all at once, chunks of 32" "$m" "$pf" "$TMP/want" \
        --prompt-ids --parallel 16 --step-tokens 32
    batch_same "$name: a pool of 160 tokens (evictions)" "$m" "$pf" "$TMP/want" $staggered --kv-tokens 160
    pool=$(pool_tokens) all=$(all_tokens)
    check "$name: the pool ($pool tokens) is smaller than all the requests ($all)" \
        [ "${pool:-0}" -gt 0 -a "${pool:-0}" -lt "$all" ]
    batch_same "$name: a pool of 160 tokens, no prefix cache" "$m" "$pf" "$TMP/want" $staggered \
        --kv-tokens 160 --no-prefix-cache
    cp "$TMP/want" "$TMP/want_$name"
}

# ---- equivalence on every model -------------------------------------------------------
prompts 12345 >"$TMP/p_ids"
check "16 prompts" [ "$(wc -l <"$TMP/p_ids")" -eq 16 ]
equivalence stories260K "$STORIES" "$TMP/p_ids" 1
for fx in tiny-llama tiny-llama-bf16 tiny-qwen3 tiny-qwen3-bf16 tiny-mistral; do
    equivalence "$fx" "$FIXTURES/$fx" "$TMP/p_ids" 1
done
for fx in tiny-gptoss-dense tiny-gptoss-mxfp4; do
    equivalence "$fx" "$FIXTURES/$fx" "$TMP/p_ids" 0
done

# ---- text prompts (stories260K): tokenized as generate -p does ----------------------------
shared="Once upon a time, there was a little girl named Lily. She loved to play outside in the park"
shared="$shared with her friends. One day, she saw a big red ball under a tree."
cat >"$TMP/p_text" <<EOF
Once upon a time
$shared She ran to get it.
Lily

The cat sat on the mat and looked at the bird that was singing in the tree all day long, and the bird was happy.
$shared Her mom said
Tom had a toy car.
$shared
EOF
: >"$TMP/want_text"
i=0
while IFS= read -r line; do
    if [ -z "$line" ]; then continue; fi
    ids=$(mnv generate -m "$STORIES" -p "$line" -n "$N" --temp 0 --ignore-eos --deterministic --print-ids)
    printf '%d\t%s\n' "$i" "$ids" >>"$TMP/want_text"
    i=$((i + 1))
done <"$TMP/p_text"
n_shared=$(mnv tokenize -m "$STORIES" --bos "$shared" | wc -w)
check "the shared text prefix is over 40 tokens ($n_shared)" [ "$n_shared" -gt 40 ]
batch_same "text prompts: --parallel 8 --stagger 3 (the empty line is skipped)" "$STORIES" "$TMP/p_text" \
    "$TMP/want_text" --parallel 8 --stagger 3 --step-tokens 32
hits=$(prefix_hits)
check "text prompts: shared prefixes served from the cache ($hits tokens)" [ "${hits:-0}" -ge 32 ]
# text output: prompt 2 ("Lily") as generate prints it (batch escapes \n, \t and \\)
want=$(mnv generate -m "$STORIES" -p "Lily" -n "$N" --temp 0 --ignore-eos --deterministic)
mnv batch -m "$STORIES" --prompts-file "$TMP/p_text" -n "$N" --temp 0 --ignore-eos --deterministic >"$TMP/text"
check "batch (text) exits 0" [ $? -eq 0 ]
check "batch (text) prints one line per prompt" [ "$(wc -l <"$TMP/text")" -eq 7 ]
got=$(sed -n 's/^2	//p' "$TMP/text")
check "text of prompt 2 is generate's ('$got')" same "$(printf '%b' "$got")" "$want"
check "text mode: aggregate figures on stderr" contains "$TMP/err" "tok/s aggregate"
check "text mode: the KV pool's peak on stderr" contains "$TMP/err" "KV pool:     peak"

# ---- sampling: the same seed gives the same ids, alone or batched ------------------------------
sed -n 1,6p "$TMP/p_ids" >"$TMP/p6"
: >"$TMP/want_seed"
i=0
while IFS= read -r line; do
    ids=$(mnv generate -m "$STORIES" --prompt-ids "$line" -n "$N" --seed 7 --temp 0.9 --deterministic --print-ids)
    printf '%d\t%s\n' "$i" "$ids" >>"$TMP/want_seed"
    i=$((i + 1))
done <"$TMP/p6"
mnv batch -m "$STORIES" --prompts-file "$TMP/p6" --prompt-ids -n "$N" --seed 7 --temp 0.9 --deterministic \
    --print-ids --parallel 4 --stagger 2 >"$TMP/got_seed"
check "sampled with --seed 7: batch gives generate's ids" cmp -s "$TMP/want_seed" "$TMP/got_seed"

# ---- JSON ------------------------------------------------------------------------------------
mnv batch -m "$STORIES" --prompts-file "$TMP/p_ids" --prompt-ids -n "$N" --temp 0 --ignore-eos --deterministic --json \
    --parallel 8 --stagger 3 --step-tokens 32 >"$TMP/json"
check "--json exits 0" [ $? -eq 0 ]
check "--json: 16 objects and a summary" [ "$(grep -c '^{.*}$' "$TMP/json")" -eq 17 ]
check "--json: the summary comes last" sh -c "tail -n 1 '$TMP/json' | grep -q '\"summary\": true'"
for key in '"index": 0,' '"n_prompt": 3,' '"n_cached": ' '"tokens": [' '"text": "' '"stop": "max tokens"' \
    '"first_token_s": ' '"decode_tok_s": '; do
    check "--json: a request has $key" sh -c "head -n 1 '$TMP/json' | grep -qF -- '$key'"
done
for key in '"decode_tok_s": ' '"steps": ' '"prefix_hit_tokens": ' '"kv_bytes_peak": ' '"kv_bytes_total": '; do
    check "--json: the summary has $key" sh -c "tail -n 1 '$TMP/json' | grep -qF -- '$key'"
done
# the JSON tokens are the --print-ids ids
first=$(sed -n '1s/.*"tokens": \[\([^]]*\)\].*/\1/p' "$TMP/json" | tr -d ',')
check "--json tokens of prompt 0 are its ids" [ "$(printf '0\t%s' "$first")" = "$(sed -n 1p "$TMP/want_stories260K")" ]

# ---- one request failing does not fail the others ---------------------------------------------
printf '1 5 6\n1 %s\n1 7 8\n' "$(seq 10 60 | tr '\n' ' ')" >"$TMP/p_long"
mnv batch -m "$STORIES" --prompts-file "$TMP/p_long" --prompt-ids --ctx 32 -n 4 --temp 0 --print-ids >"$TMP/out"
check "a prompt longer than --ctx: exit code 1" [ $? -eq 1 ]
check "  the error names the prompt" contains "$TMP/err" "minerva batch: prompt 1: "
check "  the other prompts are printed" [ "$(grep -c '^[02]	[0-9]' "$TMP/out")" -eq 2 ]

# ---- bench --parallel ----------------------------------------------------------------------
mnv bench -m "$STORIES" --parallel 1,3 -p 5 -n 6 --reps 1 --json >"$TMP/bench"
check "bench --parallel 1,3 --json exits 0" [ $? -eq 0 ]
check "  one JSON line per count" [ "$(grep -c '^{.*"aggregate_tok_s": [0-9].*}$' "$TMP/bench")" -eq 2 ]
check "  the second is for 3 sequences" sh -c "sed -n 2p '$TMP/bench' | grep -q '\"parallel\": 3,'"
check "  with a rate per sequence" contains "$TMP/bench" '"per_seq_tok_s": '
mnv bench -m "$STORIES" --parallel 2 -n 4 --reps 1 >"$TMP/bench"
check "bench --parallel 2 (text) exits 0" [ $? -eq 0 ]
check "  prints a row for 2 sequences" grep -qE '^ +2 +[0-9.]+ +[0-9.]+' "$TMP/bench"
expect_fail "bench --parallel 0" 2 "--parallel: 0 is out of range" "$MNV_CLI" bench --parallel 0
expect_fail "bench --parallel x" 2 "--parallel: expected" "$MNV_CLI" bench --parallel 2,x
expect_fail "bench --parallel with -n 1" 2 "-n 2 or more" "$MNV_CLI" bench --parallel 2 -n 1

# ---- errors ----------------------------------------------------------------------------------
expect_fail "no --prompts-file" 2 "--prompts-file is required" "$MNV_CLI" batch -m "$STORIES"
expect_fail "missing prompts file" 1 "$TMP/none.txt" "$MNV_CLI" batch -m "$STORIES" --prompts-file "$TMP/none.txt"
printf '\n\n' >"$TMP/p_empty"
expect_fail "a file without prompts" 1 "holds no prompt" "$MNV_CLI" batch -m "$STORIES" --prompts-file "$TMP/p_empty"
printf '1 2 3\n1 x 3\n' >"$TMP/p_bad"
expect_fail "a bad id names its line" 2 "line 2" "$MNV_CLI" batch -m "$STORIES" --prompts-file "$TMP/p_bad" --prompt-ids
expect_fail "--parallel 0" 2 "--parallel: 0 is out of range" "$MNV_CLI" batch --prompts-file "$TMP/p_ids" --parallel 0
expect_fail "--stagger -1" 2 "--stagger: -1 is out of range" "$MNV_CLI" batch --prompts-file "$TMP/p_ids" --stagger -1
expect_fail "bad --kv-type" 2 "--kv-type: expected f32, f16, bf16, q8 or q4" "$MNV_CLI" batch --prompts-file "$TMP/p_ids" --kv-type f8
printf '1 99999\n1 5\n' >"$TMP/p_oov"
expect_fail "an out-of-vocabulary id fails its prompt" 1 "prompt 0: " "$MNV_CLI" batch -m "$STORIES" \
    --prompts-file "$TMP/p_oov" --prompt-ids -n 1 --print-ids
check "  the other prompt is printed" grep -q '^1	[0-9]' "$TMP/out"
expect_rc "batch --help" 0 "$MNV_CLI" batch --help
check "  help lists --stagger" contains "$TMP/out" "--stagger"
expect_rc "minerva --help" 0 "$MNV_CLI" --help
check "  lists batch" contains "$TMP/out" "batch"

e2e_done
