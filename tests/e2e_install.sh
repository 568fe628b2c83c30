#!/bin/sh
# Installs the build into a prefix under the build directory and uses it from
# there, as an application would: pkg-config flags, the shared library's
# exported symbols (only mnv_*), the CMake package, examples/embed.c and
# examples/cancel.c built against the installed library, the installed
# `minerva generate` finding its bundled model with no -m, and the Rust
# crate (examples/rust) streaming the greedy story and cancelling from
# another thread, when cargo is present.
# Run from tests/ with MNV_CLI (the build's minerva binary) and MNV_ROOT.

. ./lib_e2e.sh
BUILD=$(cd "$(dirname "$MNV_CLI")" && pwd)
ROOT=$(cd "$MNV_ROOT" && pwd)
FIXTURE="$ROOT/tests/fixtures/stories260K_expected_greedy.txt"
P="$BUILD/install-test"
rm -rf "$P"
trap 'rm -rf "$TMP" "$P"' EXIT

# ---- the install ----------------------------------------------------------------------
expect_rc "cmake --install into $P" 0 cmake --install "$BUILD" --prefix "$P"
export PKG_CONFIG_PATH="$P/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
libdir=$(pkg-config --variable=libdir minerva)
check "pkg-config finds minerva.pc" [ -n "$libdir" ]
for f in bin/minerva include/minerva.h lib/pkgconfig/minerva.pc lib/cmake/minerva/minervaConfig.cmake \
    share/minerva/models/stories260K/model.safetensors share/minerva/models/stories260K/tokenizer.json; do
    check "installed: $f" [ -f "$P/$f" ]
done
check "installed: libminerva.a" [ -f "$libdir/libminerva.a" ]
check "installed: libminerva.so" [ -e "$libdir/libminerva.so" ]

# ---- pkg-config ---------------------------------------------------------------------------
version=$("$P/bin/minerva" --version | sed -n 's/.*libminerva \([0-9.]*\).*/\1/p')
check "pkg-config version '$(pkg-config --modversion minerva)' is the library's '$version'" \
    same "$(pkg-config --modversion minerva)" "$version"
cflags=$(pkg-config --cflags minerva)
libs=$(pkg-config --libs minerva)
check "cflags name the installed include dir: $cflags" [ -f "$(echo "$cflags" | tr ' ' '\n' | sed -n 's/^-I//p' | head -1)/minerva.h" ]
case " $libs " in *" -lminerva "*) ok ;; *) bad "libs lack -lminerva: $libs" ;; esac
check "libdir is inside the prefix" [ "$(cd "$libdir" && pwd -P)" = "$(cd "$P/lib" && pwd -P)" ]

# ---- the shared library: SONAME and exported symbols -------------------------------------
so=$(readlink -f "$libdir/libminerva.so")
major=$(sed -n 's/^#define MNV_VERSION_MAJOR \([0-9]*\)$/\1/p' "$P/include/minerva.h")
minor=$(sed -n 's/^#define MNV_VERSION_MINOR \([0-9]*\)$/\1/p' "$P/include/minerva.h")
if [ "$major" = 0 ]; then want_soname="libminerva.so.0.$minor"; else want_soname="libminerva.so.$major"; fi
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
check "SONAME '$soname' is '$want_soname'" same "$soname" "$want_soname"
check "the SONAME link exists" [ -e "$libdir/$soname" ]
nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRVW]$/ { print $3 }' | sort >"$TMP/exported"
grep -v '^mnv_' "$TMP/exported" >"$TMP/foreign"
check "only mnv_* symbols are exported (others: $(head -5 "$TMP/foreign" | tr '\n' ' '))" [ ! -s "$TMP/foreign" ]
check "no internal mnv__ symbol is exported" [ -z "$(grep '^mnv__' "$TMP/exported")" ]
grep -o '^MNV_API [^(]*(' "$P/include/minerva.h" | sed 's/.*[ *]\(mnv_[a-z0-9_]*\)($/\1/' | sort -u >"$TMP/declared"
check "every MNV_API function is exported, nothing else ($(wc -l <"$TMP/declared") declared)" \
    cmp -s "$TMP/declared" "$TMP/exported"

# ---- C programs built against the installed library through pkg-config ------------------
MODEL="$P/share/minerva/models/stories260K"
cc -std=c17 -Wall -Wextra -Werror "$ROOT/examples/embed.c" $cflags $libs -Wl,-rpath,"$libdir" -o "$TMP/embed" 2>"$TMP/err"
check "embed.c compiles against the installed library" [ -x "$TMP/embed" ]
check "embed links the shared library" sh -c "readelf -d '$TMP/embed' | grep -q 'NEEDED.*$soname'"
expect_rc "embed runs with the installed model" 0 "$TMP/embed" "$MODEL"
check "  embed streams the story" contains "$TMP/out" "Once upon a time, there was a little girl named Lily"
check "  embed reports the library version" contains "$TMP/out" "libminerva $version"
cc -std=c17 -Wall -Wextra -Werror "$ROOT/examples/cancel.c" $cflags $libs -pthread -Wl,-rpath,"$libdir" \
    -o "$TMP/cancel" 2>"$TMP/err"
check "cancel.c compiles against the installed library" [ -x "$TMP/cancel" ]
expect_rc "C: a generation cancelled from another thread" 0 "$TMP/cancel" "$MODEL" 12
check "  ... after exactly the 12 tokens streamed before the request" contains "$TMP/out" "cancelled after 12 tokens"

# ---- the CMake package ---------------------------------------------------------------------
mkdir "$TMP/cmk"
cat >"$TMP/cmk/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(uses_minerva C)
find_package(minerva $version REQUIRED)
add_executable(embed "$ROOT/examples/embed.c")
target_link_libraries(embed PRIVATE minerva::libminerva)
add_executable(embed_static "$ROOT/examples/embed.c")
target_link_libraries(embed_static PRIVATE minerva::minerva)
EOF
if cmake -S "$TMP/cmk" -B "$TMP/cmk/b" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_BUILD_TYPE=Release >"$TMP/cmk.log" 2>&1 &&
    cmake --build "$TMP/cmk/b" >>"$TMP/cmk.log" 2>&1; then ok; else
    bad "find_package(minerva) and a build with its targets"
    tail -20 "$TMP/cmk.log" >&2
fi
expect_rc "embed through find_package (shared) runs" 0 "$TMP/cmk/b/embed" "$MODEL"
expect_rc "embed through find_package (static) runs" 0 "$TMP/cmk/b/embed_static" "$MODEL"
check "  the static one needs no libminerva.so" sh -c "! readelf -d '$TMP/cmk/b/embed_static' | grep -q 'NEEDED.*libminerva'"

# ---- the installed CLI finds its bundled model -----------------------------------------------
expected_ids=$(sed -n 's/^ids: //p' "$FIXTURE" | tr -s ' ' '\n' | sed -n '2,200p' | tr '\n' ' ' | sed 's/ *$//')
expected_text=$("$MNV_CLI" tokenize -m "$ROOT/models/stories260K" --decode "$expected_ids")
mkdir "$TMP/elsewhere"
text=$(cd "$TMP/elsewhere" && "$P/bin/minerva" generate -p "" -n 199 --temp 0 2>"$TMP/err")
check "installed minerva generate without -m exits 0" [ $? -eq 0 ]
if [ -n "$expected_text" ] && [ "$text" = "$expected_text" ]; then ok; else
    bad "installed generate's greedy story differs from the reference"
    printf '  expected: %.200s\n  got:      %.200s\n' "$expected_text" "$text" >&2
fi

# ---- Rust: the crate against the installed library --------------------------------------------
if command -v cargo >/dev/null 2>&1; then
    export CARGO_TARGET_DIR="$BUILD/cargo"
    unset MINERVA_LIB_DIR MINERVA_MODEL
    if cargo build --offline --release --examples --manifest-path "$ROOT/examples/rust/Cargo.toml" \
        >"$TMP/cargo.log" 2>&1; then ok; else
        bad "cargo build of examples/rust"
        tail -30 "$TMP/cargo.log" >&2
    fi
    EX="$CARGO_TARGET_DIR/release/examples"
    story=$(cd "$TMP/elsewhere" && MINERVA_CPU=bogus "$EX/story" 2>"$TMP/err")
    check "Rust story (installed bundled model, no argument) exits 0" [ $? -eq 0 ]
    if [ -n "$expected_text" ] && [ "$story" = "$expected_text" ]; then ok; else
        bad "the Rust example's greedy story differs from the reference"
        printf '  expected: %.200s\n  got:      %.200s\n' "$expected_text" "$story" >&2
        cat "$TMP/err" >&2
    fi
    check "  Rust story reports the model" contains "$TMP/err" "llama (5 layers, context 512, chat format none)"
    check "  the library's warning reached the Rust log callback" contains "$TMP/err" "[minerva Warn] MINERVA_CPU=bogus"
    expect_rc "Rust: a missing model directory is an error, not a panic" 1 "$EX/story" "$TMP/no/such/model"
    check "  the error carries the status and the library's message" contains "$TMP/err" "input/output error: $TMP/no/such/model"
    expect_rc "Rust: a generation cancelled through a CancelHandle on another thread" 0 "$EX/cancel" "$MODEL" 9
    check "  ... after exactly the 9 tokens streamed before the request" contains "$TMP/out" "cancelled after 9 tokens"
else
    echo "e2e_install: cargo not found: the Rust crate (examples/rust) is not built or run"
fi

e2e_done
