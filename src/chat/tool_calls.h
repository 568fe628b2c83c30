/* Tool calls and reasoning in the output of Qwen/Hermes-style models. */
#ifndef MNV_CHAT_TOOL_CALLS_H
#define MNV_CHAT_TOOL_CALLS_H

#include <cjson/cJSON.h>

#include "minerva.h"

/* Parses a completed assistant text: <think>...</think> becomes *reasoning
 * (NULL if none; its surrounding whitespace trimmed), each
 * <tool_call>{"name":..,"arguments":..}</tool_call> one entry of *tool_calls
 * (a cJSON array of OpenAI tool_call objects: id "call_<n>" counting from 0,
 * type "function", function {name, arguments as a JSON string}; an empty
 * array when there is none), the rest *content (never NULL; leading
 * whitespace after a reasoning block, and surrounding whitespace when tool
 * calls were taken out, removed). Malformed tool-call JSON stays in the
 * content (never an error). MNV_ERR_NOMEM only; on failure every output is
 * NULL. Caller frees with cJSON_Delete / free. */
mnv_status mnv__chat_parse_output(const char *text, char **content, char **reasoning, cJSON **tool_calls);

#endif
