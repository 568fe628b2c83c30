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
TOK=../../shared/tokenizers/gptoss
if [ -f "$TOK/tokenizer.json" ]; then
    cat >"$TMP/cfg.json" <<'CFG'
{"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4,
 "num_experts_per_tok": 2, "vocab_size": 201088, "sliding_window": 8,
 "layer_types": ["sliding_attention", "full_attention"], "rms_norm_eps": 1e-05,
 "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                  "original_max_position_embeddings": 4096, "truncate": false},
 "rope_theta": 150000, "max_position_embeddings": 131072, "swiglu_limit": 7.0,
 "attention_bias": true, "tie_word_embeddings": false, "eos_token_id": 200002}
CFG
    mnv synth --config "$TMP/cfg.json" --out "$TMP/m" --dtype bf16 >/dev/null
    check "synth a small gpt-oss" [ $? -eq 0 ]
    cp "$TOK"/tokenizer*.json "$TMP/m/"
    printf 'What is 2 + 2?\nAnd 3 + 3?\n' | mnv chat -m "$TMP/m" -n 12 --temp 0 --hide-reasoning --stats >"$TMP/chat"
    check "chat exits 0 over two turns" [ $? -eq 0 ]
    cp "$TMP/err" "$TMP/chat.err"
    check "chat reports each turn" [ "$(grep -c 'prompt' "$TMP/chat.err")" -eq 2 ]
else
    echo "SKIP: $TOK not present (chat test)"
fi
e2e_done
