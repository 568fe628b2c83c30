/* The Harmony chat format of gpt-oss: a conversation (mnv_chat) rendered to
 * text or token ids the way the reference renderer does it (openai/harmony
 * src/encoding.rs, Render<Message>, Render<SystemContent>,
 * Render<DeveloperContent>, render_conversation_for_completion).
 *
 * Rendering first lays the conversation out as a list of segments, each a
 * harmony marker or a piece of text, in exactly the pieces the reference
 * encodes one by one ("assistant", " to=functions.f", "commentary", " ",
 * "json", ...). Text output concatenates them; id output maps markers to
 * their special ids and encodes each text piece on its own, without
 * special-token matching (the reference's encode_ordinary): a user who types
 * "<|end|>" does not end the message. */
#include <stdlib.h>

#include "chat/harmony.h"
#include "tokenizer/tokenizer.h"

const char *const mnv__hm_marker_str[MNV__HM_N_MARKERS] = {
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>",
};

int32_t mnv__hm_marker_id(const mnv_chat_tokens *t, mnv__hm_marker m) {
    switch (m) {
    case MNV__HM_START: return t->start_id;
    case MNV__HM_END: return t->end_id;
    case MNV__HM_MESSAGE: return t->message_id;
    case MNV__HM_CHANNEL: return t->channel_id;
    case MNV__HM_CONSTRAIN: return t->constrain_id;
    case MNV__HM_RETURN: return t->return_id;
    case MNV__HM_CALL: return t->call_id;
    case MNV__HM_N_MARKERS: break;
    }
    return -1;
}

static const char *const ROLE_NAMES[MNV_ROLE_COUNT] = {"system", "developer", "user", "assistant",
                                                       "tool"};

const char *mnv_chat_role_name(mnv_chat_role role) {
    return (unsigned)role < MNV_ROLE_COUNT ? ROLE_NAMES[role] : "?";
}

/* ---- the conversation ------------------------------------------------------------- */

typedef struct {
    mnv_chat_role role;
    char *name, *recipient, *channel, *content_type, *content;
    size_t content_len;
} chat_msg;

struct mnv_chat {
    mnv_chat_params params; /* string fields point at the copies below */
    char *identity, *cutoff, *date, *instructions;
    char **channels;
    mnv__hm_ns *ns;
    size_t n_ns, cap_ns;
    chat_msg *msgs;
    size_t n_msgs, cap_msgs;
};

static const char *const DEFAULT_CHANNELS[] = {"analysis", "commentary", "final"};

mnv_chat_params mnv_chat_params_default(void) {
    mnv_chat_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.system_message = 1;
    p.model_identity = "You are ChatGPT, a large language model trained by OpenAI.";
    p.knowledge_cutoff = "2024-06";
    p.reasoning = MNV_REASONING_MEDIUM;
    p.channels = DEFAULT_CHANNELS;
    p.n_channels = 3;
    p.channel_required = 1;
    return p;
}

mnv_chat_render_params mnv_chat_render_params_default(void) {
    mnv_chat_render_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.add_generation_prompt = 1;
    p.cot = MNV_COT_DROP_ANSWERED;
    return p;
}

/* strdup that tells a failed copy (false) from a NULL source (true, *dst NULL). */
static bool dup_opt(const char *s, char **dst) {
    *dst = NULL;
    if (!s) return true;
    *dst = mnv_strdup(s);
    return *dst != NULL;
}

static void msg_free(chat_msg *m) {
    free(m->name);
    free(m->recipient);
    free(m->channel);
    free(m->content_type);
    free(m->content);
}

static void ns_free(mnv__hm_ns *ns) {
    for (size_t j = 0; j < ns->n_tools; j++) {
        free(ns->tools[j].name);
        free(ns->tools[j].description);
        free(ns->tools[j].ts);
    }
    free(ns->tools);
    free(ns->name);
    free(ns->description);
}

void mnv_chat_free(mnv_chat *c) {
    if (!c) return;
    free(c->identity);
    free(c->cutoff);
    free(c->date);
    free(c->instructions);
    for (size_t i = 0; c->channels && i < c->params.n_channels; i++) free(c->channels[i]);
    free(c->channels);
    for (size_t i = 0; i < c->n_ns; i++) ns_free(&c->ns[i]);
    free(c->ns);
    for (size_t i = 0; i < c->n_msgs; i++) msg_free(&c->msgs[i]);
    free(c->msgs);
    free(c);
}

static mnv_status copy_params(mnv_chat *c, const mnv_chat_params *p) {
    c->params = *p;
    bool ok = dup_opt(p->model_identity, &c->identity) && dup_opt(p->knowledge_cutoff, &c->cutoff) &&
              dup_opt(p->current_date, &c->date) && dup_opt(p->instructions, &c->instructions);
    c->params.model_identity = c->identity;
    c->params.knowledge_cutoff = c->cutoff;
    c->params.current_date = c->date;
    c->params.instructions = c->instructions;
    c->params.n_channels = 0; /* counts the copies made, for mnv_chat_free */
    if (ok && p->n_channels) {
        c->channels = calloc(p->n_channels, sizeof *c->channels);
        ok = c->channels != NULL;
        for (size_t i = 0; ok && i < p->n_channels; i++, c->params.n_channels++)
            ok = (c->channels[i] = mnv_strdup(p->channels[i])) != NULL;
    }
    c->params.channels = (const char *const *)c->channels;
    return ok ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_create: out of memory");
}

mnv_status mnv_chat_create(const mnv_chat_params *params, mnv_chat **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_create: out is NULL");
    *out = NULL;
    mnv_chat_params def = mnv_chat_params_default();
    const mnv_chat_params *p = params ? params : &def;
    if ((unsigned)p->reasoning > MNV_REASONING_OMIT)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_create: unknown reasoning effort %d",
                             (int)p->reasoning);
    if (p->n_channels && !p->channels)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_create: %zu channels but no list",
                             p->n_channels);
    for (size_t i = 0; i < p->n_channels; i++)
        if (!p->channels[i])
            return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_create: channel %zu is NULL", i);
    mnv_chat *c = calloc(1, sizeof *c);
    if (!c) return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_create: out of memory");
    mnv_status st = copy_params(c, p);
    if (st != MNV_OK) {
        mnv_chat_free(c);
        return st;
    }
    *out = c;
    return MNV_OK;
}

static bool grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return true;
    size_t cap2 = MNV_MAX(*cap * 2, MNV_MAX(need, 8));
    void *q = realloc(*p, cap2 * size);
    if (!q) return false;
    *p = q;
    *cap = cap2;
    return true;
}

static mnv__hm_ns *find_ns(mnv_chat *c, const char *name) {
    for (size_t i = 0; i < c->n_ns; i++)
        if (strcmp(c->ns[i].name, name) == 0) return &c->ns[i];
    return NULL;
}

/* The namespace called name, created (with placement where) if missing. */
static mnv_status get_ns(mnv_chat *c, const char *name, mnv_chat_role where, mnv__hm_ns **out) {
    if ((*out = find_ns(c, name)) != NULL) return MNV_OK;
    if (!grow((void **)&c->ns, &c->cap_ns, c->n_ns + 1, sizeof *c->ns))
        return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat: out of memory");
    mnv__hm_ns *ns = &c->ns[c->n_ns];
    memset(ns, 0, sizeof *ns);
    if (!(ns->name = mnv_strdup(name))) return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat: out of memory");
    ns->placement = where;
    c->n_ns++;
    *out = ns;
    return MNV_OK;
}

mnv_status mnv_chat_add_namespace(mnv_chat *c, const mnv_chat_namespace *ns) {
    if (!c || !ns || !ns->name || !ns->name[0])
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_add_namespace: NULL chat or empty name");
    if (ns->placement != MNV_ROLE_SYSTEM && ns->placement != MNV_ROLE_DEVELOPER)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_add_namespace: '%s': placement must be "
                             "the system or the developer message", ns->name);
    char *desc;
    if (!dup_opt(ns->description, &desc)) return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat: out of memory");
    mnv__hm_ns *dst;
    mnv_status st = get_ns(c, ns->name, ns->placement, &dst);
    if (st != MNV_OK) {
        free(desc);
        return st;
    }
    free(dst->description);
    dst->description = desc;
    dst->placement = ns->placement;
    return MNV_OK;
}

mnv_status mnv_chat_add_tool(mnv_chat *c, const char *ns_name, const mnv_chat_tool *tool) {
    if (!c || !tool || !tool->name || !tool->name[0])
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_add_tool: NULL chat or tool, or empty name");
    if (!ns_name) ns_name = "functions";
    if (!ns_name[0]) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_add_tool: empty namespace");
    mnv__hm_tool t = {0};
    mnv_status st = MNV_OK;
    if (tool->parameters_json) {
        st = mnv__hm_schema_to_ts(tool->parameters_json, strlen(tool->parameters_json), &t.ts);
        if (st != MNV_OK) {
            mnv_error_prefix("tool '%s': ", tool->name);
            return st;
        }
    }
    mnv__hm_ns *ns = NULL;
    if (!dup_opt(tool->name, &t.name) || !dup_opt(tool->description, &t.description))
        st = mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_add_tool: out of memory");
    if (st == MNV_OK) st = get_ns(c, ns_name, MNV_ROLE_DEVELOPER, &ns);
    if (st == MNV_OK && !grow((void **)&ns->tools, &ns->cap_tools, ns->n_tools + 1, sizeof t))
        st = mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_add_tool: out of memory");
    if (st != MNV_OK) {
        free(t.name);
        free(t.description);
        free(t.ts);
        return st;
    }
    ns->tools[ns->n_tools++] = t;
    return MNV_OK;
}

mnv_status mnv_chat_add_message(mnv_chat *c, const mnv_chat_message *m) {
    if (!c || !m) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_add_message: NULL argument");
    if ((unsigned)m->role >= MNV_ROLE_COUNT)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_add_message: role %d out of range",
                             (int)m->role);
    if (m->role == MNV_ROLE_TOOL && (!m->name || !m->name[0]))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_add_message: a tool message needs the "
                             "tool's name");
    if (!grow((void **)&c->msgs, &c->cap_msgs, c->n_msgs + 1, sizeof *c->msgs))
        return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_add_message: out of memory");
    chat_msg d = {.role = m->role};
    const char *content = m->content ? m->content : "";
    bool ok = dup_opt(m->name, &d.name) && dup_opt(m->recipient, &d.recipient) &&
              dup_opt(m->channel, &d.channel) && dup_opt(m->content_type, &d.content_type) &&
              dup_opt(content, &d.content);
    if (!ok) {
        msg_free(&d);
        return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_add_message: out of memory");
    }
    d.content_len = strlen(content);
    c->msgs[c->n_msgs++] = d;
    return MNV_OK;
}

size_t mnv_chat_n_messages(const mnv_chat *c) { return c ? c->n_msgs : 0; }

mnv_status mnv_chat_get_message(const mnv_chat *c, size_t i, mnv_chat_message *out) {
    if (!c || !out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_get_message: NULL argument");
    memset(out, 0, sizeof *out);
    if (i >= c->n_msgs)
        return mnv_set_error(MNV_ERR_RANGE, "mnv_chat_get_message: index %zu of %zu messages", i,
                             c->n_msgs);
    const chat_msg *m = &c->msgs[i];
    *out = (mnv_chat_message){m->role, m->name, m->recipient, m->channel, m->content_type,
                              m->content, m->content_len};
    return MNV_OK;
}

void mnv_chat_truncate(mnv_chat *c, size_t n) {
    if (!c) return;
    while (c->n_msgs > n) msg_free(&c->msgs[--c->n_msgs]);
}

/* ---- segments ------------------------------------------------------------------------ */

#define SEG_TEXT MNV__HM_N_MARKERS

typedef struct {
    int kind; /* an mnv__hm_marker, or SEG_TEXT */
    size_t off, len;
} segment;

typedef struct {
    segment *v;
    size_t n, cap;
    mnv__hm_buf text;
    bool oom;
} seglist;

static void seg_marker(seglist *l, mnv__hm_marker m) {
    if (!grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) {
        l->oom = true;
        return;
    }
    l->v[l->n++] = (segment){(int)m, 0, 0};
}

static void seg_text(seglist *l, const char *s, size_t n) {
    if (!grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) {
        l->oom = true;
        return;
    }
    l->v[l->n++] = (segment){SEG_TEXT, l->text.len, n};
    mnv__hm_put(&l->text, s, n);
}

static void seg_str(seglist *l, const char *s) { seg_text(l, s, strlen(s)); }

/* " " + s as one text piece. */
static void seg_spaced(seglist *l, const char *prefix, const char *s) {
    size_t a = strlen(prefix), b = strlen(s);
    if (!grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) {
        l->oom = true;
        return;
    }
    l->v[l->n++] = (segment){SEG_TEXT, l->text.len, a + b};
    mnv__hm_put(&l->text, prefix, a);
    mnv__hm_put(&l->text, s, b);
}

/* Sections joined by "\n\n". */
static void section(mnv__hm_buf *b, int *n) {
    if ((*n)++) mnv__hm_puts(b, "\n\n");
}

static bool has_function_tools(const mnv_chat *c) {
    for (size_t i = 0; i < c->n_ns; i++)
        if (c->ns[i].placement == MNV_ROLE_DEVELOPER && strcmp(c->ns[i].name, "functions") == 0 &&
            c->ns[i].n_tools > 0)
            return true;
    return false;
}

/* The system message's content (Render<SystemContent>). */
static void system_text(const mnv_chat *c, mnv__hm_buf *b) {
    static const char *const EFFORT[] = {"low", "medium", "high"};
    const mnv_chat_params *p = &c->params;
    int n = 0, top = 0;
    const char *top_lines[3][2] = {{"", p->model_identity},
                                   {"Knowledge cutoff: ", p->knowledge_cutoff},
                                   {"Current date: ", p->current_date}};
    for (int i = 0; i < 3; i++) {
        if (!top_lines[i][1]) continue;
        if (!top++) section(b, &n);
        else mnv__hm_putc(b, '\n');
        mnv__hm_puts(b, top_lines[i][0]);
        mnv__hm_puts(b, top_lines[i][1]);
    }
    if (p->reasoning != MNV_REASONING_OMIT) {
        section(b, &n);
        mnv__hm_puts(b, "Reasoning: ");
        mnv__hm_puts(b, EFFORT[p->reasoning]);
    }
    mnv__hm_buf tools = {0};
    if (mnv__hm_tools_section(c->ns, c->n_ns, MNV_ROLE_SYSTEM, &tools)) {
        section(b, &n);
        mnv__hm_put(b, tools.p, tools.len);
    }
    if (tools.oom) b->oom = true;
    mnv__hm_free(&tools);
    if (p->n_channels) {
        section(b, &n);
        mnv__hm_puts(b, "# Valid channels: ");
        for (size_t i = 0; i < p->n_channels; i++) {
            if (i) mnv__hm_puts(b, ", ");
            mnv__hm_puts(b, p->channels[i]);
        }
        mnv__hm_putc(b, '.');
        if (p->channel_required) mnv__hm_puts(b, " Channel must be included for every message.");
        if (p->function_tools_note || has_function_tools(c))
            mnv__hm_puts(b, "\nCalls to these tools must go to the commentary channel: 'functions'.");
    }
}

/* The developer message's content (Render<DeveloperContent>); false if none. */
static bool developer_text(const mnv_chat *c, mnv__hm_buf *b) {
    int n = 0;
    if (c->params.instructions) {
        section(b, &n);
        mnv__hm_puts(b, "# Instructions");
        section(b, &n);
        mnv__hm_puts(b, c->params.instructions);
    }
    mnv__hm_buf tools = {0};
    if (mnv__hm_tools_section(c->ns, c->n_ns, MNV_ROLE_DEVELOPER, &tools)) {
        section(b, &n);
        mnv__hm_put(b, tools.p, tools.len);
    }
    if (tools.oom) b->oom = true;
    mnv__hm_free(&tools);
    return n > 0;
}

/* One message (Render<Message>). */
static void seg_message(seglist *l, const chat_msg *m) {
    seg_marker(l, MNV__HM_START);
    if (m->role == MNV_ROLE_TOOL) {
        seg_str(l, m->name);
    } else {
        seg_str(l, ROLE_NAMES[m->role]);
        if (m->name) seg_spaced(l, ":", m->name);
    }
    if (m->recipient && strcmp(m->recipient, "all") != 0) seg_spaced(l, " to=", m->recipient);
    if (m->channel) {
        seg_marker(l, MNV__HM_CHANNEL);
        seg_str(l, m->channel);
    }
    if (m->content_type) {
        const char *cm = mnv__hm_marker_str[MNV__HM_CONSTRAIN];
        if (strncmp(m->content_type, cm, strlen(cm)) == 0) {
            const char *rest = m->content_type + strlen(cm);
            seg_str(l, " ");
            seg_marker(l, MNV__HM_CONSTRAIN);
            if (*rest) seg_str(l, rest);
        } else {
            seg_spaced(l, " ", m->content_type);
        }
    }
    seg_marker(l, MNV__HM_MESSAGE);
    seg_text(l, m->content, m->content_len);
    bool call = m->role == MNV_ROLE_ASSISTANT && m->recipient;
    seg_marker(l, call ? MNV__HM_CALL : MNV__HM_END);
}

static bool is_channel(const chat_msg *m, const char *ch) { return m->channel && strcmp(m->channel, ch) == 0; }

/* Which messages the chain-of-thought policy drops (keep[i] = false). */
static void cot_filter(const mnv_chat *c, mnv_chat_cot cot, bool *keep) {
    size_t n = c->n_msgs;
    for (size_t i = 0; i < n; i++) keep[i] = true;
    if (cot == MNV_COT_DROP_ANSWERED) {
        bool final_after = false;
        for (size_t i = n; i-- > 0;) {
            const chat_msg *m = &c->msgs[i];
            if (is_channel(m, "analysis") && final_after) keep[i] = false;
            if (m->role == MNV_ROLE_ASSISTANT && is_channel(m, "final")) final_after = true;
        }
    } else if (cot == MNV_COT_REFERENCE) {
        bool last_final = false;
        for (size_t i = n; i-- > 0;)
            if (c->msgs[i].role == MNV_ROLE_ASSISTANT) {
                last_final = is_channel(&c->msgs[i], "final");
                break;
            }
        size_t first = n;
        for (size_t i = 0; i < n && first == n; i++)
            if (is_channel(&c->msgs[i], "final")) first = i;
        for (size_t i = 0; last_final && i < first; i++)
            if (is_channel(&c->msgs[i], "analysis")) keep[i] = false;
    }
}

static mnv_status lay_out(const mnv_chat *c, const mnv_chat_render_params *rp, seglist *l) {
    for (size_t i = 0; i < c->n_msgs; i++)
        if (c->msgs[i].role == MNV_ROLE_TOOL && !c->msgs[i].name)
            return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_render: message %zu: a tool message "
                                 "needs the tool's name", i);
    if ((unsigned)rp->cot > MNV_COT_KEEP)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_render: unknown cot policy %d", (int)rp->cot);
    mnv__hm_buf b = {0};
    if (c->params.system_message) {
        chat_msg sys = {.role = MNV_ROLE_SYSTEM};
        system_text(c, &b);
        sys.content = b.p ? b.p : "";
        sys.content_len = b.len;
        seg_message(l, &sys);
    }
    b.len = 0;
    if (developer_text(c, &b)) {
        chat_msg dev = {.role = MNV_ROLE_DEVELOPER, .content = b.p, .content_len = b.len};
        seg_message(l, &dev);
    }
    if (b.oom) l->oom = true;
    mnv__hm_free(&b);
    bool *keep = malloc(MNV_MAX(c->n_msgs, 1) * sizeof *keep);
    if (!keep) return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_render: out of memory");
    cot_filter(c, rp->cot, keep);
    for (size_t i = 0; i < c->n_msgs; i++)
        if (keep[i]) seg_message(l, &c->msgs[i]);
    free(keep);
    if (rp->add_generation_prompt) {
        seg_marker(l, MNV__HM_START);
        seg_str(l, "assistant");
    }
    if (l->oom || l->text.oom) return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_render: out of memory");
    return MNV_OK;
}

static void seglist_free(seglist *l) {
    free(l->v);
    mnv__hm_free(&l->text);
}

mnv_status mnv_chat_render_text(const mnv_chat *c, const mnv_chat_render_params *params, char *text,
                                size_t cap, size_t *len_out) {
    if (len_out) *len_out = 0;
    if (!c || !len_out || (!text && cap))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_render_text: NULL argument");
    mnv_chat_render_params def = mnv_chat_render_params_default();
    seglist l = {0};
    mnv_status st = lay_out(c, params ? params : &def, &l);
    size_t len = 0;
    for (size_t i = 0; st == MNV_OK && i < l.n; i++) {
        const segment *s = &l.v[i];
        const char *p = s->kind == SEG_TEXT ? l.text.p + s->off : mnv__hm_marker_str[s->kind];
        size_t n = s->kind == SEG_TEXT ? s->len : strlen(p);
        if (len + n <= cap && n) memcpy(text + len, p, n);
        len += n;
    }
    seglist_free(&l);
    if (st != MNV_OK) return st;
    *len_out = len;
    if (len < cap) text[len] = 0;
    else return mnv_set_error(MNV_ERR_BUFFER_TOO_SMALL, "mnv_chat_render_text: %zu bytes do not fit "
                              "in cap %zu", len, cap);
    return MNV_OK;
}

/* ---- ids --------------------------------------------------------------------------- */

mnv_status mnv_chat_tokens_lookup(const mnv_tokenizer *tok, mnv_chat_tokens *out) {
    if (!tok || !out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_tokens_lookup: NULL argument");
    memset(out, 0xff, sizeof *out); /* every id -1 until found */
    int32_t id[MNV__HM_N_MARKERS];
    for (int m = 0; m < MNV__HM_N_MARKERS; m++) {
        const char *s = mnv__hm_marker_str[m];
        int32_t buf[4];
        size_t n = 0;
        mnv_status st = mnv_tokenize(tok, s, strlen(s), 0, buf, 4, &n);
        if (st == MNV_ERR_NOMEM) return st;
        if (n != 1)
            return mnv_set_error(MNV_ERR_UNSUPPORTED, "the tokenizer has no harmony token %s (it "
                                 "encodes to %zu ids): not a gpt-oss (o200k_harmony) tokenizer", s, n);
        id[m] = buf[0];
    }
    *out = (mnv_chat_tokens){id[MNV__HM_START], id[MNV__HM_END], id[MNV__HM_MESSAGE],
                             id[MNV__HM_CHANNEL], id[MNV__HM_CONSTRAIN], id[MNV__HM_RETURN],
                             id[MNV__HM_CALL], {id[MNV__HM_RETURN], id[MNV__HM_CALL]}};
    return MNV_OK;
}

typedef struct {
    int32_t *v;
    size_t n, cap;
} idvec;

/* Encode text without matching added/special tokens (tiktoken's
 * encode_ordinary). */
static mnv_status encode_ordinary(const mnv_tokenizer *tok, const char *s, size_t n, idvec *out) {
    size_t room = n + 8;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!grow((void **)&out->v, &out->cap, out->n + room, sizeof *out->v))
            return mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_render_ids: out of memory");
        size_t got = 0;
        mnv_status st = mnv__tokenize_ordinary(tok, s, n, out->v + out->n, out->cap - out->n, &got);
        if (st == MNV_OK) {
            out->n += got;
            return MNV_OK;
        }
        if (st != MNV_ERR_BUFFER_TOO_SMALL) return st;
        room = got;
    }
    return mnv_set_error(MNV_ERR_INTERNAL, "mnv_chat_render_ids: encoding size changed");
}

mnv_status mnv_chat_render_ids(const mnv_chat *c, const mnv_tokenizer *tok,
                               const mnv_chat_render_params *params, int32_t *ids, size_t cap,
                               size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!c || !tok || !n_out || (!ids && cap))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_chat_render_ids: NULL argument");
    mnv_chat_tokens t;
    mnv_status st = mnv_chat_tokens_lookup(tok, &t);
    if (st != MNV_OK) return st;
    mnv_chat_render_params def = mnv_chat_render_params_default();
    seglist l = {0};
    idvec out = {0};
    st = lay_out(c, params ? params : &def, &l);
    for (size_t i = 0; st == MNV_OK && i < l.n; i++) {
        const segment *s = &l.v[i];
        if (s->kind == SEG_TEXT) {
            if (s->len) st = encode_ordinary(tok, l.text.p + s->off, s->len, &out);
        } else if (grow((void **)&out.v, &out.cap, out.n + 1, sizeof *out.v)) {
            out.v[out.n++] = mnv__hm_marker_id(&t, (mnv__hm_marker)s->kind);
        } else {
            st = mnv_set_error(MNV_ERR_NOMEM, "mnv_chat_render_ids: out of memory");
        }
    }
    seglist_free(&l);
    if (st == MNV_OK) {
        *n_out = out.n;
        if (out.n > cap)
            st = mnv_set_error(MNV_ERR_BUFFER_TOO_SMALL, "mnv_chat_render_ids: %zu ids do not fit in "
                               "cap %zu", out.n, cap);
        else if (out.n)
            memcpy(ids, out.v, out.n * sizeof *ids);
    }
    free(out.v);
    return st;
}
