#!/bin/sh
# End-to-end tests of `minerva render-chat`: the qwen3 and llama3 chat
# templates of fixtures/chat on its requests (the same texts as
# fixtures/chat/expected.json, byte for byte), and its errors.
# Run from tests/ with MNV_CLI and MNV_ROOT set.

. ./lib_e2e.sh
FIX="$MNV_ROOT/tests/fixtures/chat"

expect_rc "render-chat --help" 0 "$MNV_CLI" render-chat --help
check "render-chat --help prints its usage" contains "$TMP/out" "Usage: minerva render-chat"
expect_rc "minerva --help lists render-chat" 0 "$MNV_CLI" --help
check "render-chat listed" contains "$TMP/out" "render-chat"

cat >"$TMP/req.json" <<'JSON'
{"model": "x", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
 "chat_template_kwargs": {"enable_thinking": false}}
JSON
expect_rc "render-chat qwen3" 0 "$MNV_CLI" render-chat -m "$FIX/qwen3" --request "$TMP/req.json"
printf '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n' >"$TMP/want"
check "qwen3 prompt, byte for byte" cmp -s "$TMP/out" "$TMP/want"

expect_rc "render-chat qwen3 --no-generation-prompt from stdin" 0 sh -c \
    "\"$MNV_CLI\" render-chat -m \"$FIX/qwen3\" -r - --no-generation-prompt <\"$TMP/req.json\""
printf '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n' >"$TMP/want"
check "qwen3 prompt without the generation prompt" cmp -s "$TMP/out" "$TMP/want"

expect_rc "render-chat llama3" 0 "$MNV_CLI" render-chat -m "$FIX/llama3" --request "$TMP/req.json"
printf '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n' >"$TMP/want"
check "llama3 prompt, byte for byte" cmp -s "$TMP/out" "$TMP/want"

# ---- errors: each names what is wrong ----
expect_rc "no -m" 2 "$MNV_CLI" render-chat --request "$TMP/req.json"
expect_rc "no --request" 2 "$MNV_CLI" render-chat -m "$FIX/qwen3"
expect_rc "a model without a template" 1 "$MNV_CLI" render-chat -m "$FIX" --request "$TMP/req.json"
check "the missing template is named" contains "$TMP/err" "no chat template"
echo '{"messages": [' >"$TMP/bad.json"
expect_rc "a request that is not JSON" 1 "$MNV_CLI" render-chat -m "$FIX/qwen3" --request "$TMP/bad.json"
check "bad JSON named" contains "$TMP/err" "not valid JSON"
echo '{"messages": "hi"}' >"$TMP/bad.json"
expect_rc "messages not a list" 1 "$MNV_CLI" render-chat -m "$FIX/qwen3" --request "$TMP/bad.json"
check "messages named" contains "$TMP/err" "'messages' must be an array"
mkdir -p "$TMP/raise"
printf '{"chat_template": "{%% if messages[0].role != \\"user\\" %%}\\n{{ raise_exception(\\"first message must be the user'"'"'s\\") }}{%% endif %%}"}' \
    >"$TMP/raise/tokenizer_config.json"
expect_rc "a template that raises" 1 "$MNV_CLI" render-chat -m "$TMP/raise" --request "$TMP/req.json"
check "the exception's message and line" contains "$TMP/err" "line 2: first message must be the user's"
expect_rc "a missing model directory" 1 "$MNV_CLI" render-chat -m "$TMP/nonexistent" --request "$TMP/req.json"
check "the directory named" contains "$TMP/err" "nonexistent: not a directory"
expect_rc "a missing request file" 1 "$MNV_CLI" render-chat -m "$FIX/qwen3" --request "$TMP/nonexistent.json"

e2e_done
