#!/bin/sh
# Runs a test executable on a lower CPU path than the host's best:
#   at_level.sh LEVEL TEST [ARGS...]   (MINERVA_CPU=LEVEL; needs $MNV_CLI)
# Exits 77 (skipped) when the host lacks LEVEL, or when LEVEL is the host's
# own best path (the plain test already runs it).
level=$1
shift
info=$(MINERVA_CPU=$level "$MNV_CLI" --version | grep '^cpu: ')
used=$(echo "$info" | sed 's/^cpu: \([a-z0-9-]*\).*/\1/')
if [ "$used" != "$level" ]; then
    echo "path $level: not available on this host (its best below it: $used)"
    exit 77
fi
case $info in
*"capped by MINERVA_CPU"*) ;;
*)
    echo "path $level is this host's best: the plain test covers it"
    exit 77
    ;;
esac
echo "path $level: $info"
MINERVA_CPU=$level exec "$@"
