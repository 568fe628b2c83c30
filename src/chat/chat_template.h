/* Chat templates of Hugging Face models (every family but gpt-oss, which
 * uses Harmony): loading the model's Jinja template and rendering an OpenAI
 * chat request to the prompt text, as transformers' apply_chat_template
 * does (trim_blocks, lstrip_blocks, tojson without ASCII escaping,
 * raise_exception and strftime_now). */
#ifndef MNV_CHAT_TEMPLATE_H
#define MNV_CHAT_TEMPLATE_H

#include <cjson/cJSON.h>

#include "minerva.h"

typedef struct mnv__chat_template mnv__chat_template;

/* Loads the model's chat template: chat_template.jinja in model_dir if
 * present, else tokenizer_config.json's "chat_template" (a string, or a list
 * of {name, template}: "default", and "tool_use" used when the request has
 * tools), with bos_token / eos_token (strings or added-token objects). *out
 * NULL and MNV_OK when the model has no template. Errors name the file and
 * key (MNV_ERR_IO, also for a model_dir that is not a directory;
 * MNV_ERR_FORMAT for a syntax error, naming the line). */
mnv_status mnv__chat_template_load(const char *model_dir, mnv__chat_template **out);

/* Renders an OpenAI chat request body (cJSON object: "messages", optional
 * "tools", "chat_template_kwargs" whose keys become template variables,
 * e.g. enable_thinking) to the prompt text, malloc'd in *out. Errors
 * (template raise_exception, type errors, limits) return MNV_ERR_INVALID_ARG
 * with a message naming the template line. Never aborts. Thread-safe: a
 * loaded template is only read. The request is prepared as
 * mnv_chat_template_render in minerva.h says (tool-call arguments as
 * objects, with a retry on the strings; text parts joined for templates
 * that do not read parts). */
mnv_status mnv__chat_template_render(const mnv__chat_template *t, const cJSON *request,
                                     int add_generation_prompt, char **out);

void mnv__chat_template_free(mnv__chat_template *t);

#endif
