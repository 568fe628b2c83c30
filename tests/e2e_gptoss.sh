#!/bin/sh
# End-to-end tests of gpt-oss through the CLI: inspect of the real 20b and
# 120b configurations (weights and traffic estimated from config.json alone),
# and `minerva chat` on a small random-weight gpt-oss with the real o200k
# harmony tokenizer (when ../../shared/tokenizers/gptoss is present).
# Run from tests/ with MNV_CLI set.

. ./lib_e2e.sh

# inspect: 12.08 GB of weights in the MXFP4-Q8 layout, 2.566 GB read per token
mnv inspect fixtures/gpt-oss-20b >"$TMP/i20"
check "inspect 20b exits 0" [ $? -eq 0 ]
check "inspect 20b: architecture" grep -q "architecture:    gpt_oss" "$TMP/i20"
check "inspect 20b: 20.9 B parameters" grep -q "parameters:      209147" "$TMP/i20"
check "inspect 20b: 12.08 GB of weights" grep -q "12.08 GB" "$TMP/i20"
check "inspect 20b: 2.566 GB per token" grep -q "2.566 GB of weights" "$TMP/i20"
check "inspect 20b: KV bytes per token" grep -q "KV cache per token:  98304 bytes" "$TMP/i20"
mnv inspect fixtures/gpt-oss-120b >"$TMP/i120"
check "inspect 120b exits 0" [ $? -eq 0 ]
check "inspect 120b: 36 layers" grep -q "layers:          36" "$TMP/i120"

# chat on a small random gpt-oss with the real tokenizer
if [ -f "$GPTOSS_TOK/tokenizer.json" ]; then
    synth_gptoss "$TMP/m"
    printf 'What is 2 + 2?\nAnd 3 + 3?\n' | mnv chat -m "$TMP/m" -n 12 --temp 0 --hide-reasoning --stats >"$TMP/chat"
    check "chat exits 0 over two turns" [ $? -eq 0 ]
    cp "$TMP/err" "$TMP/chat.err"
    check "chat reports each turn" [ "$(grep -c 'prompt' "$TMP/chat.err")" -eq 2 ]
else
    echo "SKIP: $GPTOSS_TOK not present (chat test)"
fi
e2e_done
