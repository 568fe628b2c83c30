#!/bin/sh
# End-to-end tests of `minerva generate` on the bundled stories260K model.
# Run from tests/ with MNV_CLI (the minerva binary) and MNV_ROOT (repo root).
# The expectation, fixtures/stories260K_expected_greedy.txt, is the reference
# greedy story: a line "ids: 1 403 407 ..." (BOS + 255 ids) and its text.

. ./lib_e2e.sh
MODEL="$MNV_ROOT/models/stories260K"
FIXTURE="$MNV_ROOT/tests/fixtures/stories260K_expected_greedy.txt"
# ids FROM TO: ids FROM..TO (1-based, BOS is id 1) of the fixture, space-separated.
ids() {
    sed -n 's/^ids: //p' "$FIXTURE" | tr -s ' ' '\n' | sed -n "$1,$2p" | tr '\n' ' ' | sed 's/ *$//'
}

# ---- greedy ids from BOS alone match the reference ----------------------------------
expected_ids=$(ids 2 200)
got=$(mnv generate -m "$MODEL" -p "" -n 199 --temp 0 --print-ids)
rc=$?
check "generate --print-ids exits 0" [ "$rc" -eq 0 ]
if [ "$got" = "$expected_ids" ]; then ok; else
    bad "greedy ids differ from the reference"
    echo "  expected: $(echo "$expected_ids" | cut -c1-200)..." >&2
    echo "  got:      $(echo "$got" | cut -c1-200)..." >&2
fi
check "199 ids printed" [ "$(echo "$got" | wc -w)" -eq 199 ]
check "stats: tokens/s on stderr" contains "$TMP/err" "tok/s"
check "stats: peak memory on stderr" contains "$TMP/err" "peak memory"

# --prompt-ids "1" is the same prompt as -p ""
got=$(mnv generate -m "$MODEL" --prompt-ids "1" -n 20 --temp 0 --print-ids)
check "--prompt-ids 1 gives the reference ids" [ "$got" = "$(ids 2 21)" ]

# a text prompt: "Once upon a time" = BOS 403 407 261 378, so greedy continues with ids 6..
got=$(mnv generate -m "$MODEL" -p "Once upon a time" -n 20 --temp 0 --print-ids)
check "-p 'Once upon a time' continues the reference" [ "$got" = "$(ids 6 25)" ]

# ---- text output (no -m: the bundled model) ------------------------------------------
text=$(mnv generate -p "" -n 199 --temp 0)
rc=$?
check "generate without -m exits 0" [ "$rc" -eq 0 ]
expected_text=$(mnv tokenize -m "$MODEL" --decode "$expected_ids")
if [ -n "$expected_text" ] && [ "$text" = "$expected_text" ]; then ok; else
    bad "generated text differs from the decoded reference ids"
    printf '  expected: %.200s\n  got:      %.200s\n' "$expected_text" "$text" >&2
fi
case "$text" in
"Once upon a time, there was a little girl named Lily"*) ok ;;
*) bad "text does not start with the reference story: $(printf '%.80s' "$text")" ;;
esac
fixture_text=$(awk 'f { print } /^text:$/ { f = 1 }' "$FIXTURE")
case "$fixture_text" in
"$text"*) ok ;;
*) bad "generated text is not a prefix of the fixture's text" ;;
esac

# ---- stop strings, -n 0, seeds ----------------------------------------------------------
got=$(mnv generate -m "$MODEL" -p "" -n 199 --temp 0 --stop "Lily")
check "--stop stops before the string" [ "$got" = "Once upon a time, there was a little girl named " ]
check "--stop reports the stop reason" contains "$TMP/err" "stop string"
# text held back as a possible stop-string prefix is delivered when generation ends
want=$(mnv generate -m "$MODEL" -p "" -n 14 --temp 0)
got=$(mnv generate -m "$MODEL" -p "" -n 14 --temp 0 --stop "named Lily and")
check "held stop-prefix text is delivered at max tokens ('$got' vs '$want')" same "$got" "$want"
# a continuation keeps its leading space: prompt text + output == decode(prompt ids + output ids)
got=$(mnv generate -m "$MODEL" -p "Lily" -n 3 --temp 0)
gen_ids=$(mnv generate -m "$MODEL" -p "Lily" -n 3 --temp 0 --print-ids)
full=$(mnv tokenize -m "$MODEL" --decode --skip-special "$(mnv tokenize -m "$MODEL" --bos Lily) $gen_ids")
check "continuation text: 'Lily' + '$got' == '$full'" same "Lily$got" "$full"
got=$(mnv generate -m "$MODEL" -p "" -n 0 --print-ids)
check "-n 0 generates nothing" [ -z "$got" ]
a=$(mnv generate -m "$MODEL" -p "Once" -n 40 --seed 42 --print-ids)
b=$(mnv generate -m "$MODEL" -p "Once" -n 40 --seed 42 --print-ids)
check "same seed, same sampled ids" same "$a" "$b"
check "sampling gives 40 ids" [ "$(echo "$a" | wc -w)" -eq 40 ]

# ---- the default model lookup ---------------------------------------------------------
mkdir "$TMP/empty"
expect_fail "MINERVA_DEFAULT_MODEL takes precedence (the error names it)" 1 "$TMP/empty" \
    env MINERVA_DEFAULT_MODEL="$TMP/empty" "$MNV_CLI" generate -n 1

# ---- errors ---------------------------------------------------------------------------------
expect_fail "bad integer" 2 "--top-k" "$MNV_CLI" generate --top-k abc
check "  message names option and value" contains "$TMP/err" "minerva generate: --top-k: expected an integer, got 'abc'"
check "  message points to --help" contains "$TMP/err" "--help"
expect_fail "bad float" 2 "--temp: expected a number" "$MNV_CLI" generate --temp 0.5x
expect_fail "nan temperature" 2 "--temp: nan is out of range" "$MNV_CLI" generate --temp nan
expect_fail "top-p out of range" 2 "--top-p: 1.5 is out of range" "$MNV_CLI" generate --top-p 1.5
expect_fail "negative -n" 2 "-n: -3 is out of range" "$MNV_CLI" generate -n -3
expect_fail "negative seed" 2 "--seed: expected a non-negative integer" "$MNV_CLI" generate --seed -1
expect_fail "missing value" 2 "-n" "$MNV_CLI" generate -n
check "  message says a value is needed" contains "$TMP/err" "needs a value"
expect_fail "unknown option (the message names it)" 2 "--bogus" "$MNV_CLI" generate --bogus
expect_fail "stray argument" 2 "unexpected argument 'stray'" "$MNV_CLI" generate stray
expect_fail "-p with --prompt-ids" 2 "not both" "$MNV_CLI" generate -p x --prompt-ids 1
expect_fail "bad id list" 2 "--prompt-ids: expected token ids" "$MNV_CLI" generate --prompt-ids "1 x"
expect_fail "unknown command" 2 "unknown command 'frobnicate'" "$MNV_CLI" frobnicate
expect_fail "no command" 2 "Usage: minerva COMMAND" "$MNV_CLI"
expect_fail "missing model dir (the message names it)" 1 "$TMP/no/such/model" "$MNV_CLI" generate -m "$TMP/no/such/model" -n 1
expect_fail "out-of-vocabulary prompt id" 1 "token id 99999" "$MNV_CLI" generate -m "$MODEL" --prompt-ids "1 99999" -n 1
# ---- KV cache types: every type and a mixed pair generate; 8-bit keeps the greedy story -------------------
for kv in f16 bf16 q8 q4 "q8 --kv-type-v q4" "f32 --kv-type-k q4"; do
    # shellcheck disable=SC2086 # the pair is two options
    got=$(mnv generate -m "$MODEL" -p "" -n 40 --temp 0 --print-ids --kv-type $kv)
    check "--kv-type $kv generates 40 ids" [ "$(echo "$got" | wc -w)" -eq 40 ]
done
got=$(mnv generate -m "$MODEL" -p "" -n 40 --temp 0 --print-ids --kv-type q8)
check "--kv-type q8 keeps the first 40 greedy ids of the reference" [ "$got" = "$(ids 2 41)" ]
expect_fail "bad --kv-type-k" 2 "--kv-type-k: expected f32, f16, bf16, q8 or q4, got 'q3'" "$MNV_CLI" generate -n 1 --kv-type-k q3
expect_rc "generate --help" 0 "$MNV_CLI" generate --help
check "  help lists --kv-type-v" contains "$TMP/out" "--kv-type-v"
check "  help lists --top-k" contains "$TMP/out" "--top-k"

e2e_done
