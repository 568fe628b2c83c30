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
e2e_done() {
    if grep -E "$SANITIZER_RE" "$ERRLOG" >&2; then
        bad "sanitizer reports on stderr (above)"
    fi
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
