# Shared by the tests/e2e_*.sh scripts (sourced, not run): absolute tool
# paths, a temporary directory removed on exit, and check helpers that count
# passes and failures. The scripts end with `e2e_done`.

: "${MNV_CLI:?set MNV_CLI to the minerva binary}"
: "${MNV_ROOT:=..}"
unset MINERVA_DEFAULT_MODEL
# absolute paths, so that a test may change directory
case $MNV_CLI in /*) ;; *) MNV_CLI="$PWD/$MNV_CLI" ;; esac
case ${MNV_EMBED:-/} in /*) ;; *) MNV_EMBED="$PWD/$MNV_EMBED" ;; esac
TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"' EXIT

pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $*" >&2
}
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() {
    desc=$1
    shift
    if "$@"; then ok; else bad "$desc"; fi
}
contains() { grep -qF -- "$2" "$1"; }
same() { [ -n "$1" ] && [ "$1" = "$2" ]; }

# Nothing a command writes on stderr is thrown away: every stderr is added to
# $ERRLOG, and e2e_done fails on a sanitizer's report in it, whatever the
# exit status was. (The sanitizer builds also end a reporting process with
# status 86, which no minerva command uses: 0 ok, 1 runtime error, 2 usage.)
ERRLOG="$TMP/stderr.all"
: >"$ERRLOG"
SANITIZER_RE='runtime error|AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehaviorSanitizer'
no_sanitizer_report() { ! grep -qE "$SANITIZER_RE" "$1"; }
# run COMMAND...: stderr to $TMP/err (and $ERRLOG); the command's exit status.
run() {
    "$@" 2>"$TMP/err"
    set -- $?
    cat "$TMP/err" >>"$ERRLOG"
    return "$1"
}
# mnv ARGS...: run the minerva CLI.
mnv() { run "$MNV_CLI" "$@"; }

# expect_rc DESCRIPTION RC COMMAND...: stdout to $TMP/out, stderr to $TMP/err;
# passes when the exit status is RC and stderr holds no sanitizer report; a
# failure (RC > 0) must also say something on stderr.
expect_rc() {
    desc=$1 want=$2
    shift 2
    run "$@" >"$TMP/out"
    got=$?
    if [ "$got" -ne "$want" ]; then
        bad "$desc: exit code $got, expected $want"
        cat "$TMP/err" >&2
    elif ! no_sanitizer_report "$TMP/err"; then
        bad "$desc: a sanitizer report on stderr"
        cat "$TMP/err" >&2
    elif [ "$want" -ne 0 ] && [ ! -s "$TMP/err" ]; then
        bad "$desc: failed without a message on stderr"
    else
        ok
    fi
}
# expect_fail DESCRIPTION RC MESSAGE COMMAND...: expect_rc, and stderr holds MESSAGE.
expect_fail() {
    desc=$1 want=$2 msg=$3
    shift 3
    before=$fail
    expect_rc "$desc" "$want" "$@"
    if [ "$fail" -eq "$before" ] && ! contains "$TMP/err" "$msg"; then
        pass=$((pass - 1))
        bad "$desc: stderr does not say '$msg'"
        cat "$TMP/err" >&2
    fi
}
# A small random-weight gpt-oss (2 layers of width 64, 4 experts, a sliding
# window of 8) with the real o200k Harmony tokenizer, for the tests that need
# gpt-oss's tokenizer: present when the shared tokenizers sit beside the tree.
GPTOSS_TOK=../../shared/tokenizers/gptoss
# synth_gptoss DIR: synthesize it into DIR (a check of its own).
synth_gptoss() {
    cat >"$TMP/gptoss-config.json" <<'CFG'
{"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4,
 "num_experts_per_tok": 2, "vocab_size": 201088, "sliding_window": 8,
 "layer_types": ["sliding_attention", "full_attention"], "rms_norm_eps": 1e-05,
 "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                  "original_max_position_embeddings": 4096, "truncate": false},
 "rope_theta": 150000, "max_position_embeddings": 131072, "swiglu_limit": 7.0,
 "attention_bias": true, "tie_word_embeddings": false, "eos_token_id": 200002}
CFG
    mnv synth --config "$TMP/gptoss-config.json" --out "$1" --dtype bf16 >/dev/null
    check "synth a small gpt-oss" [ $? -eq 0 ]
    cp "$GPTOSS_TOK"/tokenizer*.json "$1/"
}

e2e_done() {
    if grep -E "$SANITIZER_RE" "$ERRLOG" >&2; then
        bad "sanitizer reports on stderr (above)"
    fi
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
