/* Chat templates: loading (chat_template.jinja or tokenizer_config.json)
 * and rendering an OpenAI chat request with transformers' variables. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "chat/chat_template.h"
#include "chat/jinja.h"

struct mnv__chat_template {
    mnv__jinja *dflt;     /* NULL when a list of templates has no "default" */
    mnv__jinja *tool_use; /* NULL when there is none */
    bool parts_dflt, parts_tool; /* the template reads content parts itself */
    char *bos, *eos;      /* NULL: not defined for the template */
};

/* A template that mentions a 'text' key reads a list of content parts
 * itself; others get them as one string (see prepare_messages). */
static bool reads_parts(const char *src) {
    return strstr(src, "'text'") || strstr(src, "\"text\"") || strstr(src, ".text");
}

void mnv__chat_template_free(mnv__chat_template *t) {
    if (!t) return;
    mnv__jinja_free(t->dflt);
    mnv__jinja_free(t->tool_use);
    free(t->bos);
    free(t->eos);
    free(t);
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* a special token: a string, or an added-token object {"content": ...} */
static mnv_status token_string(const cJSON *cfg, const char *key, const char *file, char **out) {
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return MNV_OK;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s': expected a string or an object with a string \"content\"",
                             file, key);
    *out = mnv_strdup(v->valuestring);
    return *out ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
}

static mnv_status parse_named(const char *name, const char *src, mnv__jinja **out) {
    return mnv__jinja_parse(name, src, strlen(src), out);
}

static mnv_status load_from_config(mnv__chat_template *t, const cJSON *ct, const char *file) {
    char name[512];
    if (cJSON_IsString(ct)) {
        snprintf(name, sizeof name, "%s: key 'chat_template'", file);
        t->parts_dflt = reads_parts(ct->valuestring);
        return parse_named(name, ct->valuestring, &t->dflt);
    }
    if (!cJSON_IsArray(ct))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'chat_template': expected a string or a list of {name, template}",
                             file);
    int i = 0;
    for (const cJSON *e = ct->child; e; e = e->next, i++) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (!cJSON_IsString(nm) || !cJSON_IsString(tp))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'chat_template'[%d]: expected {\"name\": string, \"template\": string}",
                                 file, i);
        bool dflt = !strcmp(nm->valuestring, "default");
        mnv__jinja **slot = dflt ? &t->dflt : !strcmp(nm->valuestring, "tool_use") ? &t->tool_use : NULL;
        if (!slot || *slot) continue;
        *(dflt ? &t->parts_dflt : &t->parts_tool) = reads_parts(tp->valuestring);
        snprintf(name, sizeof name, "%s: chat template '%s'", file, nm->valuestring);
        mnv_status st = parse_named(name, tp->valuestring, slot);
        if (st != MNV_OK) return st;
    }
    if (!t->dflt && !t->tool_use)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'chat_template': no template named \"default\" or \"tool_use\"", file);
    return MNV_OK;
}

mnv_status mnv__chat_template_load(const char *model_dir, mnv__chat_template **out) {
    *out = NULL;
    if (!model_dir) return mnv_set_error(MNV_ERR_INVALID_ARG, "chat template: no model directory");
    struct stat dst;
    if (stat(model_dir, &dst) != 0 || !S_ISDIR(dst.st_mode))
        return mnv_set_error(MNV_ERR_IO, "%s: not a directory", model_dir);
    char *jinja_path = mnv_path_join(model_dir, "chat_template.jinja");
    char *cfg_path = mnv_path_join(model_dir, "tokenizer_config.json");
    mnv__chat_template *t = calloc(1, sizeof *t);
    cJSON *cfg = NULL;
    char *text = NULL;
    mnv_status st = MNV_OK;
    if (!jinja_path || !cfg_path || !t) {
        st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (file_exists(cfg_path)) {
        size_t len;
        st = mnv_read_file(cfg_path, &text, &len);
        if (st != MNV_OK) goto done;
        cfg = cJSON_ParseWithLength(text, len);
        if (!cJSON_IsObject(cfg)) {
            st = mnv_set_error(MNV_ERR_FORMAT, "%s: not a JSON object", cfg_path);
            goto done;
        }
        if ((st = token_string(cfg, "bos_token", cfg_path, &t->bos)) != MNV_OK) goto done;
        if ((st = token_string(cfg, "eos_token", cfg_path, &t->eos)) != MNV_OK) goto done;
    }
    if (file_exists(jinja_path)) {
        char *src;
        size_t len;
        st = mnv_read_file(jinja_path, &src, &len);
        if (st != MNV_OK) goto done;
        st = mnv__jinja_parse(jinja_path, src, len, &t->dflt);
        t->parts_dflt = reads_parts(src);
        free(src);
        goto done;
    }
    const cJSON *ct = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    if (!ct || cJSON_IsNull(ct)) { /* no template: not an error */
        mnv__chat_template_free(t);
        t = NULL;
        goto done;
    }
    st = load_from_config(t, ct, cfg_path);
done:
    cJSON_Delete(cfg);
    free(text);
    free(jinja_path);
    free(cfg_path);
    if (st != MNV_OK) {
        mnv__chat_template_free(t);
        return st;
    }
    *out = t;
    return MNV_OK;
}

/* The messages as transformers' templates expect them (a copy in *out):
 * an assistant tool call's "arguments" given as a JSON string, OpenAI's
 * form, becomes the object it encodes; for a template that does not read
 * content parts, a list of text parts becomes their texts joined by
 * newlines and a null content an empty string. *converted: whether an
 * "arguments" string was replaced (only when convert_args). */
static mnv_status prepare_messages(const cJSON *messages, bool parts, bool convert_args, cJSON **out,
                                   bool *converted) {
    cJSON *msgs = cJSON_Duplicate(messages, 1);
    *out = NULL;
    *converted = false;
    if (!msgs) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    int i = 0;
    for (cJSON *m = msgs->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m)) continue;
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        for (const cJSON *c = cJSON_IsArray(calls) ? calls->child : NULL; c; c = c->next) {
            cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            if (!convert_args || !cJSON_IsString(args)) continue;
            cJSON *obj = cJSON_Parse(args->valuestring);
            if (cJSON_IsObject(obj) && cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", obj)) *converted = true;
            else cJSON_Delete(obj);
        }
        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (parts || !content) continue;
        cJSON *flat = NULL;
        if (cJSON_IsNull(content)) {
            flat = cJSON_CreateString("");
        } else if (cJSON_IsArray(content)) {
            size_t len = 1;
            int j = 0;
            for (const cJSON *p = content->child; p; p = p->next, j++) {
                const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "type"));
                const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "text"));
                if (!type || strcmp(type, "text") || !text) {
                    cJSON_Delete(msgs);
                    return mnv_set_error(MNV_ERR_INVALID_ARG,
                                         "request: messages[%d].content[%d]: only text parts (type \"text\" with a "
                                         "string \"text\") are supported by this model's chat template", i, j);
                }
                len += strlen(text) + 1;
            }
            char *joined = malloc(len);
            if (joined) {
                size_t k = 0;
                for (const cJSON *p = content->child; p; p = p->next) {
                    const char *text = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
                    if (k) joined[k++] = '\n';
                    memcpy(joined + k, text, strlen(text));
                    k += strlen(text);
                }
                joined[k] = 0;
                flat = cJSON_CreateString(joined);
                free(joined);
            }
        } else {
            continue;
        }
        if (!flat || !cJSON_ReplaceItemInObjectCaseSensitive(m, "content", flat)) {
            cJSON_Delete(flat);
            cJSON_Delete(msgs);
            return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        }
    }
    *out = msgs;
    return MNV_OK;
}

typedef struct {
    const mnv__chat_template *t;
    const mnv__jinja *tpl;
    bool parts;
    const cJSON *messages, *tools, *kwargs;
    int add_generation_prompt;
} render_job;

/* One render of the job's request; *converted as prepare_messages says. */
static mnv_status render_once(const render_job *job, bool convert_args, char **out, bool *converted) {
    cJSON *msgs;
    mnv_status st = prepare_messages(job->messages, job->parts, convert_args, &msgs, converted);
    if (st != MNV_OK) return st;
    cJSON *vars = cJSON_CreateObject();
    bool ok = vars != NULL;
    const mnv__chat_template *t = job->t;
    if (ok && t->bos) ok &= cJSON_AddStringToObject(vars, "bos_token", t->bos) != NULL;
    if (ok && t->eos) ok &= cJSON_AddStringToObject(vars, "eos_token", t->eos) != NULL;
    for (const cJSON *k = ok && cJSON_IsObject(job->kwargs) ? job->kwargs->child : NULL; k; k = k->next) {
        if (!k->string || !strcmp(k->string, "messages") || !strcmp(k->string, "tools") ||
            !strcmp(k->string, "add_generation_prompt"))
            continue;
        cJSON_DeleteItemFromObjectCaseSensitive(vars, k->string);
        ok &= cJSON_AddItemReferenceToObject(vars, k->string, (cJSON *)k) != 0;
    }
    if (ok) ok &= cJSON_AddItemReferenceToObject(vars, "messages", msgs) != 0;
    /* transformers passes tools and documents always (None when absent) */
    if (ok && job->tools) ok &= cJSON_AddItemReferenceToObject(vars, "tools", (cJSON *)job->tools) != 0;
    else if (ok) ok &= cJSON_AddNullToObject(vars, "tools") != NULL;
    if (ok) ok &= cJSON_AddNullToObject(vars, "documents") != NULL;
    if (ok) ok &= cJSON_AddBoolToObject(vars, "add_generation_prompt", job->add_generation_prompt != 0) != NULL;
    st = ok ? mnv__jinja_render(job->tpl, vars, NULL, out) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    cJSON_Delete(vars);
    cJSON_Delete(msgs);
    return st;
}

mnv_status mnv__chat_template_render(const mnv__chat_template *t, const cJSON *request,
                                     int add_generation_prompt, char **out) {
    *out = NULL;
    if (!t || !cJSON_IsObject(request))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "chat template: the request must be a JSON object");
    render_job job = {.t = t, .add_generation_prompt = add_generation_prompt};
    job.messages = cJSON_GetObjectItemCaseSensitive(request, "messages");
    if (!cJSON_IsArray(job.messages))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "request: 'messages' must be an array");
    job.tools = cJSON_GetObjectItemCaseSensitive(request, "tools");
    if (job.tools && cJSON_IsNull(job.tools)) job.tools = NULL;
    if (job.tools && !cJSON_IsArray(job.tools))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "request: 'tools' must be an array");
    job.kwargs = cJSON_GetObjectItemCaseSensitive(request, "chat_template_kwargs");
    if (job.kwargs && !cJSON_IsNull(job.kwargs) && !cJSON_IsObject(job.kwargs))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "request: 'chat_template_kwargs' must be an object");
    /* transformers: the tool_use template when there are tools and one exists */
    bool use_tool = (job.tools && t->tool_use) || !t->dflt;
    job.tpl = use_tool ? t->tool_use : t->dflt;
    job.parts = use_tool ? t->parts_tool : t->parts_dflt;
    bool converted;
    mnv_status st = render_once(&job, true, out, &converted);
    if (st != MNV_ERR_INVALID_ARG || !converted) return st;
    /* Some templates (DeepSeek's, say) concatenate "arguments" as the string
     * OpenAI sends: when the object form fails, the string form is tried;
     * if that fails too, the first error is the one reported. */
    char first[512];
    snprintf(first, sizeof first, "%s", mnv_last_error());
    if (render_once(&job, false, out, &converted) == MNV_OK) return MNV_OK;
    return mnv_set_error(st, "%s", first);
}

/* ---- the public entry point ---- */
mnv_status mnv_chat_template_render(const char *model_dir, const char *request_json,
                                    int add_generation_prompt, char **prompt_out) {
    if (!prompt_out) return mnv_set_error(MNV_ERR_INVALID_ARG, "chat template: prompt_out is NULL");
    *prompt_out = NULL;
    if (!model_dir || !request_json)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "chat template: model_dir and request_json are needed");
    cJSON *req = cJSON_Parse(request_json);
    if (!req) return mnv_set_error(MNV_ERR_FORMAT, "the chat request is not valid JSON");
    mnv__chat_template *t = NULL;
    mnv_status st = mnv__chat_template_load(model_dir, &t);
    if (st == MNV_OK && !t)
        st = mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: the model has no chat template (no chat_template.jinja, "
                           "no \"chat_template\" in tokenizer_config.json)", model_dir);
    if (st == MNV_OK) st = mnv__chat_template_render(t, req, add_generation_prompt, prompt_out);
    mnv__chat_template_free(t);
    cJSON_Delete(req);
    return st;
}

void mnv_chat_prompt_free(char *prompt) { free(prompt); }
