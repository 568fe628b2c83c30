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
# expect_rc DESCRIPTION RC COMMAND...: stdout to $TMP/out, stderr to $TMP/err.
expect_rc() {
    desc=$1 want=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    got=$?
    if [ "$got" -eq "$want" ]; then ok; else bad "$desc: exit code $got, expected $want"; cat "$TMP/err" >&2; fi
}
e2e_done() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
