#!/bin/sh
# Installs the Debian packages the build needs, when they are missing.
# As root it runs apt-get; otherwise it prints the command to run.
set -e
PKGS="build-essential cmake pkg-config libcjson-dev libpcre2-dev clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ]; then
    echo "bootstrap: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing
else
    echo "bootstrap: missing packages:$missing"
    echo "run: sudo apt-get install -y$missing"
    exit 1
fi
