#!/bin/sh
# Installs the Debian packages the build needs, when they are missing.
# As root it runs apt-get; otherwise it prints the command to run.
#
# Also the cross toolchain for `make test-aarch64` (64-bit ARM build run under
# qemu): gcc-aarch64-linux-gnu, qemu-user and the arm64 (multiarch) -dev
# packages of the dependencies, after adding the arm64 architecture to dpkg.
# They are optional: without root they are only suggested, and
# MNV_NO_CROSS=1 skips them.
set -e
PKGS="build-essential cmake pkg-config libcjson-dev libpcre2-dev libmicrohttpd-dev clang libclang-rt-14-dev"
CROSS_PKGS="gcc-aarch64-linux-gnu qemu-user libcjson-dev:arm64 libpcre2-dev:arm64 libmicrohttpd-dev:arm64"

missing_of() {
    out=""
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            out="$out $p"
        fi
    done
    echo "$out"
}

missing=$(missing_of $PKGS)
cross=""
[ "${MNV_NO_CROSS:-0}" = "1" ] || cross=$(missing_of $CROSS_PKGS)
[ -z "$missing" ] && [ -z "$cross" ] && exit 0

if [ "$(id -u)" != "0" ]; then
    if [ -n "$cross" ]; then
        echo "bootstrap: for make test-aarch64 (optional):"
        echo "run: sudo dpkg --add-architecture arm64 && sudo apt-get update && sudo apt-get install -y$cross"
    fi
    [ -z "$missing" ] && exit 0
    echo "bootstrap: missing packages:$missing"
    echo "run: sudo apt-get install -y$missing"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [ -n "$cross" ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "bootstrap: adding the arm64 architecture (for the cross build)"
    dpkg --add-architecture arm64
fi
echo "bootstrap: installing$missing$cross"
apt-get update -qq
apt-get install -y -qq $missing $cross
