/* OpenAI request fields: sampling, stopping, logit biases and logprobs into
 * generation parameters, with a 400 naming the field on a wrong type or
 * value; OpenAI error objects; logprobs in the chat and completion shapes. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "server/server_int.h"

bool srv_err_set(srv_err *e, int status, const char *param, const char *code, const char *fmt, ...) {
    e->status = status;
    e->param = param;
    e->code = code;
    e->type = status == 401 ? "authentication_error"
              : status == 404 && code && strcmp(code, "model_not_found") == 0 ? "invalid_request_error"
              : status >= 500 ? "server_error" : "invalid_request_error";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

cJSON *srv_error_json(const srv_err *e) {
    cJSON *o = cJSON_CreateObject(), *er = cJSON_CreateObject();
    char *msg = srv_utf8_clean(e->msg, strlen(e->msg));
    cJSON_AddStringToObject(er, "message", msg ? msg : "error");
    free(msg);
    cJSON_AddStringToObject(er, "type", e->type ? e->type : "invalid_request_error");
    if (e->param) cJSON_AddStringToObject(er, "param", e->param);
    else cJSON_AddNullToObject(er, "param");
    if (e->code) cJSON_AddStringToObject(er, "code", e->code);
    else cJSON_AddNullToObject(er, "code");
    cJSON_AddItemToObject(o, "error", er);
    return o;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || len > n || (len == 2 && c < 0xC2) || (len == 4 && c > 0xF4)) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (len == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))) return 0;
    if (len == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))) return 0;
    return len;
}

char *srv_utf8_clean(const char *s, size_t n) {
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len((const unsigned char *)s + i, n - i);
        if (l && s[i]) {
            memcpy(o, s + i, l);
            o += l, i += l;
        } else if (!s[i]) {
            i++; /* NUL cannot travel in a C string */
        } else {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3, i++;
        }
    }
    *o = 0;
    return out;
}

bool srv_check_model(mnv__server *s, const cJSON *body, srv_err *e) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (!m || cJSON_IsNull(m)) return true;
    if (!cJSON_IsString(m)) return srv_err_set(e, 400, "model", "invalid_type", "%s", "'model' must be a string");
    if (strcmp(m->valuestring, s->model_id) != 0)
        return srv_err_set(e, 404, "model", "model_not_found", "the model '%s' does not exist (this server has '%s')",
                           m->valuestring, s->model_id);
    return true;
}

/* ---- fields ------------------------------------------------------------------------------ */

static bool get_num(const cJSON *body, const char *k, double lo, double hi, double *out, srv_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, k);
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsNumber(v)) return srv_err_set(e, 400, k, "invalid_type", "'%s' must be a number", k);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return srv_err_set(e, 400, k, "invalid_value", "'%s' must be in [%g, %g]", k, lo, hi);
    *out = v->valuedouble;
    return true;
}

static bool get_int(const cJSON *body, const char *k, double lo, double hi, int64_t *out, srv_err *e) {
    double d = (double)*out;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, k);
    if (v && cJSON_IsNumber(v) && v->valuedouble != floor(v->valuedouble))
        return srv_err_set(e, 400, k, "invalid_type", "'%s' must be an integer", k);
    if (!get_num(body, k, lo, hi, &d, e)) return false;
    *out = (int64_t)d;
    return true;
}

static bool get_stops(const cJSON *body, srv_job *j, srv_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "stop");
    if (!v || cJSON_IsNull(v)) return true;
    if (cJSON_IsString(v)) {
        j->stops = cJSON_CreateArray();
        cJSON_AddItemToArray(j->stops, cJSON_CreateString(v->valuestring));
    } else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) <= 16) {
        const cJSON *s;
        cJSON_ArrayForEach(s, v) {
            if (!cJSON_IsString(s)) return srv_err_set(e, 400, "stop", "invalid_type", "%s", "'stop' must hold strings");
        }
        j->stops = cJSON_Duplicate(v, 1);
    } else {
        return srv_err_set(e, 400, "stop", "invalid_type", "%s", "'stop' must be a string or an array of at most 16 strings");
    }
    int n = cJSON_GetArraySize(j->stops);
    if (!(j->stop_v = calloc((size_t)MNV_MAX(n, 1), sizeof(char *)))) return srv_err_set(e, 500, NULL, NULL, "out of memory");
    for (int i = 0; i < n; i++) j->stop_v[i] = cJSON_GetArrayItem(j->stops, i)->valuestring;
    j->gp.stop_strings = j->stop_v;
    j->gp.n_stop = (size_t)n;
    return true;
}

static bool get_bias(mnv__server *s, const cJSON *body, srv_job *j, srv_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "logit_bias"), *b;
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsObject(v)) return srv_err_set(e, 400, "logit_bias", "invalid_type", "%s", "'logit_bias' must be an object of token ids to numbers");
    int n = cJSON_GetArraySize(v);
    if (!(j->bias = calloc((size_t)MNV_MAX(n, 1), sizeof *j->bias))) return srv_err_set(e, 500, NULL, NULL, "out of memory");
    int i = 0;
    cJSON_ArrayForEach(b, v) {
        char *end;
        long id = strtol(b->string, &end, 10);
        if (!*b->string || *end || id < 0 || id >= s->n_vocab)
            return srv_err_set(e, 400, "logit_bias", "invalid_value", "logit_bias: '%s' is not a token id of the vocabulary", b->string);
        if (!cJSON_IsNumber(b) || !(b->valuedouble >= -100 && b->valuedouble <= 100))
            return srv_err_set(e, 400, "logit_bias", "invalid_value", "logit_bias of %ld must be a number in [-100, 100]", id);
        j->bias[i++] = (mnv_logit_bias){(int32_t)id, (float)b->valuedouble};
    }
    j->gp.logit_bias = j->bias;
    j->gp.n_logit_bias = (size_t)n;
    return true;
}

static bool get_logprobs(const cJSON *body, srv_job *j, srv_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "logprobs");
    int64_t top = 0;
    if (j->kind == SRV_COMPLETION) { /* logprobs: the count of alternatives */
        if (v && !cJSON_IsNull(v)) {
            if (!get_int(body, "logprobs", 0, MNV_MAX_TOP_LOGPROBS, &top, e)) return false;
            j->logprobs = true;
        }
    } else {
        if (v && !cJSON_IsNull(v) && !cJSON_IsBool(v)) return srv_err_set(e, 400, "logprobs", "invalid_type", "%s", "'logprobs' must be a boolean");
        j->logprobs = cJSON_IsTrue(v);
        if (!get_int(body, "top_logprobs", 0, MNV_MAX_TOP_LOGPROBS, &top, e)) return false;
    }
    j->top_logprobs = (int32_t)top;
    j->gp.n_top_logprobs = j->logprobs ? (int32_t)top : 0;
    return true;
}

/* Tests only: the reply's first tokens, as text (special tokens recognised). */
static bool get_scripted(mnv__server *s, const cJSON *body, srv_job *j, srv_err *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "x_scripted_output");
    if (!s->p.scripted_output || !cJSON_IsString(v)) return true;
    size_t need = 0, n = 0, len = strlen(v->valuestring);
    mnv_tokenize(s->tok, v->valuestring, len, 0, NULL, 0, &need);
    if (!(j->scripted = malloc(MNV_MAX(need, 1) * sizeof(int32_t)))) return srv_err_set(e, 500, NULL, NULL, "out of memory");
    if (need && mnv_tokenize(s->tok, v->valuestring, len, 0, j->scripted, need, &n) != MNV_OK)
        return srv_err_set(e, 400, "x_scripted_output", "invalid_value", "%s", mnv_last_error());
    j->gp.scripted_ids = j->scripted;
    j->gp.n_scripted = n;
    return true;
}

/* response_format (chat completions) or text.format (responses): plain text
 * only. Output constrained to JSON or a schema needs grammar-constrained
 * sampling, which the engine does not have: such a request gets a 400 naming
 * the field and its type, as OpenAI answers a value a model does not
 * support, rather than an unconstrained reply its caller would trust. */
static bool get_format(const cJSON *body, srv_job *j, srv_err *e) {
    const char *param = "response_format";
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, param);
    if (j->kind == SRV_RESPONSES) {
        param = "text.format";
        f = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(body, "text"), "format");
    }
    if (!f || cJSON_IsNull(f)) return true;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(f, "type");
    if (!cJSON_IsObject(f) || !cJSON_IsString(t))
        return srv_err_set(e, 400, param, "invalid_type", "'%s' must be an object with a string 'type'", param);
    if (strcmp(t->valuestring, "text") == 0) return true;
    bool known = strcmp(t->valuestring, "json_object") == 0 || strcmp(t->valuestring, "json_schema") == 0;
    return srv_err_set(e, 400, param, "unsupported_value",
                       "'%s' of type '%.64s' is not supported%s; only {\"type\": \"text\"} is", param,
                       t->valuestring, known ? " (this server has no constrained sampling)" : "");
}

bool srv_parse_sampling(mnv__server *s, const cJSON *body, srv_job *j, srv_err *e) {
    mnv_sampler_params *sp = &j->gp.sampler;
    double temp = 1.0, top_p = 1.0, min_p = 0.0, pres = 0, freq = 0, rep = 1.0;
    int64_t top_k = 0, max_tokens = s->p.max_seq_tokens, seed = -1;
    static atomic_uint_fast64_t seed_ctr;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_completion_tokens");
    const char *mt_name = mt && !cJSON_IsNull(mt) ? "max_completion_tokens"
                          : j->kind == SRV_RESPONSES ? "max_output_tokens" : "max_tokens";
    if (!get_num(body, "temperature", 0, 2, &temp, e) || !get_num(body, "top_p", 0, 1, &top_p, e) ||
        !get_num(body, "min_p", 0, 1, &min_p, e) || !get_num(body, "presence_penalty", -2, 2, &pres, e) ||
        !get_num(body, "frequency_penalty", -2, 2, &freq, e) ||
        !get_num(body, "repetition_penalty", 1e-3, 100, &rep, e) || !get_int(body, "top_k", -1, 1 << 30, &top_k, e) ||
        !get_int(body, mt_name, 0, 1 << 30, &max_tokens, e) ||
        !get_int(body, "seed", -9.2e18, 9.2e18, &seed, e) || !get_stops(body, j, e) || !get_bias(s, body, j, e) ||
        !get_logprobs(body, j, e) || !get_scripted(s, body, j, e) || !get_format(body, j, e))
        return false;
    const cJSON *ie = cJSON_GetObjectItemCaseSensitive(body, "ignore_eos"); /* extension, for benchmarks */
    if (ie && !cJSON_IsNull(ie) && !cJSON_IsBool(ie))
        return srv_err_set(e, 400, "ignore_eos", "invalid_type", "%s", "'ignore_eos' must be a boolean");
    j->gp.ignore_eos = cJSON_IsTrue(ie);
    if (max_tokens == 0) max_tokens = 1;
    sp->temperature = (float)temp;
    sp->top_p = top_p <= 0 ? 1e-6f : (float)top_p;
    sp->min_p = (float)min_p;
    sp->top_k = (int32_t)top_k;
    sp->presence_penalty = (float)pres;
    sp->frequency_penalty = (float)freq;
    sp->repeat_penalty = (float)rep;
    sp->repeat_last_n = -1;
    sp->seed = seed >= 0 ? (uint64_t)seed
                         : (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull + atomic_fetch_add(&seed_ctr, 1) * 7919;
    j->gp.max_tokens = (int32_t)MNV_MIN(max_tokens, (int64_t)s->p.max_seq_tokens);
    return true;
}

/* ---- logprobs out ----------------------------------------------------------------------- */

static char *token_text(mnv__server *s, int32_t id) {
    char buf[256];
    size_t n = 0;
    if (mnv_detokenize(s->tok, &id, 1, 0, buf, sizeof buf, &n) != MNV_OK) n = 0;
    return srv_utf8_clean(buf, MNV_MIN(n, sizeof buf - 1));
}

/* The text of token i of a choice as its output shows it: the bytes the
 * output got from it (a SentencePiece "\u2581" is the space it stands for, not
 * dropped as at the start of a text; a character split over tokens is in the
 * token that completes it). */
static char *out_text(const srv_choice *c, size_t i) {
    size_t from = i ? c->toks[i - 1].text_end : 0;
    return srv_utf8_clean(c->text.p ? c->text.p + from : "", c->toks[i].text_end - from);
}

/* An alternative to token i: its text after the token before it (the
 * previous output token, else the prompt's last unless that is BOS), as
 * decoding the two shows it. */
static char *alt_text(const srv_job *j, const srv_choice *c, size_t i, int32_t id) {
    mnv__server *s = j->srv;
    if (id == c->toks[i].id) return out_text(c, i);
    int32_t prev = i ? c->toks[i - 1].id : c->n_prompt ? c->prompt[c->n_prompt - 1] : -1;
    if (prev < 0 || prev == mnv_tokenizer_bos(s->tok)) return token_text(s, id);
    int32_t two[2] = {prev, id};
    char a[256], b[512];
    size_t na = 0, nb = 0;
    if (mnv_detokenize(s->tok, &prev, 1, 0, a, sizeof a, &na) != MNV_OK ||
        mnv_detokenize(s->tok, two, 2, 0, b, sizeof b, &nb) != MNV_OK || nb < na || memcmp(a, b, na) != 0)
        return token_text(s, id);
    return srv_utf8_clean(b + na, nb - na);
}

static cJSON *bytes_of(const char *t) {
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)t; *p; p++) cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

static cJSON *chat_entry(char *t, float lp) { /* takes t */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", t ? t : "");
    cJSON_AddNumberToObject(o, "logprob", lp);
    cJSON_AddItemToObject(o, "bytes", bytes_of(t ? t : ""));
    free(t);
    return o;
}

cJSON *srv_logprobs_chat(const srv_job *j, const srv_choice *c, size_t from, size_t to) {
    if (!j->logprobs) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject(), *content = cJSON_CreateArray();
    for (size_t i = from; i < to; i++) {
        const srv_tok *t = &c->toks[i];
        cJSON *e = chat_entry(out_text(c, i), t->lp), *top = cJSON_CreateArray();
        for (int32_t k = 0; k < t->n_top; k++)
            cJSON_AddItemToArray(top, chat_entry(alt_text(j, c, i, t->top_ids[k]), t->top_lp[k]));
        cJSON_AddItemToObject(e, "top_logprobs", top);
        cJSON_AddItemToArray(content, e);
    }
    cJSON_AddItemToObject(o, "content", content);
    return o;
}

cJSON *srv_logprobs_completion(const srv_job *j, const srv_choice *c, size_t from, size_t to) {
    if (!j->logprobs) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject(), *toks = cJSON_CreateArray(), *lps = cJSON_CreateArray(),
          *tops = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    for (size_t i = from; i < to; i++) {
        const srv_tok *t = &c->toks[i];
        char *s = out_text(c, i);
        cJSON_AddItemToArray(toks, cJSON_CreateString(s ? s : ""));
        free(s);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->lp));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(i ? c->toks[i - 1].text_end : 0)));
        cJSON *top = cJSON_CreateObject();
        for (int32_t k = 0; k < t->n_top; k++) {
            char *a = alt_text(j, c, i, t->top_ids[k]);
            if (a && !cJSON_GetObjectItemCaseSensitive(top, a)) cJSON_AddNumberToObject(top, a, t->top_lp[k]);
            free(a);
        }
        cJSON_AddItemToArray(tops, top);
    }
    cJSON_AddItemToObject(o, "tokens", toks);
    cJSON_AddItemToObject(o, "token_logprobs", lps);
    cJSON_AddItemToObject(o, "top_logprobs", tops);
    cJSON_AddItemToObject(o, "text_offset", offs);
    return o;
}
