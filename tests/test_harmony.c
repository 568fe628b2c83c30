/* Tests of the Harmony chat format: rendering against the reference's
 * expected strings (tests/fixtures/harmony, see its README for where each
 * comes from), token ids with the real gpt-oss tokenizer (when
 * ../../shared/tokenizers/gptoss is present), the streaming parser on the
 * reference's examples and on malformed output, a fuzz loop, and the
 * `minerva chat` command on a random-weight model with the gpt-oss
 * tokenizer. */
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "minerva.h"
#include "test.h"

#define GPTOSS_TOKENIZER "../../shared/tokenizers/gptoss/tokenizer.json"

/* ---- helpers ------------------------------------------------------------------------------ */

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) s[n] = 0;
    if (len) *len = (size_t)n;
    return s;
}

/* A fixture with trailing whitespace trimmed, as the reference's tests read them. */
static char *fixture(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "fixtures/harmony/%s", name);
    size_t n = 0;
    char *s = read_all(path, &n);
    if (!s) {
        fprintf(stderr, "missing fixture %s\n", path);
        return NULL;
    }
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

static char *render(const mnv_chat *c, const mnv_chat_render_params *rp) {
    size_t n = 0;
    if (mnv_chat_render_text(c, rp, NULL, 0, &n) != MNV_ERR_BUFFER_TOO_SMALL) return NULL;
    char *s = malloc(n + 1);
    if (s && mnv_chat_render_text(c, rp, s, n + 1, &n) != MNV_OK) {
        free(s);
        return NULL;
    }
    return s;
}

/* Compare, and on a mismatch show where it starts. */
static void check_text(const char *what, const char *got, const char *want) {
    bool ok = got && want && strcmp(got, want) == 0;
    if (!ok && got && want) {
        size_t i = 0;
        while (got[i] && got[i] == want[i]) i++;
        fprintf(stderr, "%s: differs at byte %zu:\n  got:  \"%.60s\"\n  want: \"%.60s\"\n", what, i,
                got + i, want + i);
    }
    CHECKF(ok, "%s", what);
}

static void check_fixture(const char *name, const mnv_chat *c, const mnv_chat_render_params *rp) {
    char *want = fixture(name), *got = render(c, rp);
    check_text(name, got, want);
    free(want);
    free(got);
}

static void add(mnv_chat *c, mnv_chat_role role, const char *channel, const char *content) {
    mnv_chat_message m = {0};
    m.role = role;
    m.channel = channel;
    m.content = content;
    CHECK(mnv_chat_add_message(c, &m) == MNV_OK);
}

static void add_call(mnv_chat *c, const char *channel, const char *to, const char *type, const char *args) {
    mnv_chat_message m = {0};
    m.role = MNV_ROLE_ASSISTANT;
    m.channel = channel;
    m.recipient = to;
    m.content_type = type;
    m.content = args;
    CHECK(mnv_chat_add_message(c, &m) == MNV_OK);
}

static void add_tool_result(mnv_chat *c, const char *tool, const char *to, const char *channel,
                            const char *content) {
    mnv_chat_message m = {0};
    m.role = MNV_ROLE_TOOL;
    m.name = tool;
    m.recipient = to;
    m.channel = channel;
    m.content = content;
    CHECK(mnv_chat_add_message(c, &m) == MNV_OK);
}

static mnv_chat *new_chat(const mnv_chat_params *p) {
    mnv_chat *c = NULL;
    CHECK(mnv_chat_create(p, &c) == MNV_OK && c);
    return c;
}

static const char *const AF[] = {"analysis", "final"};

/* ---- rendering: the reference's test-data ---------------------------------------------------- */

static void test_simple_convos(void) {
    mnv_chat *c = new_chat(NULL);
    add(c, MNV_ROLE_USER, NULL, "What is 2 + 2?");
    check_fixture("simple_convo.txt", c, NULL);
    mnv_chat_free(c);

    static const char *const EFFORT[] = {"low", "medium", "high"};
    for (int e = 0; e < 3; e++)
        for (int instr = 0; instr < 2; instr++) {
            mnv_chat_params p = mnv_chat_params_default();
            p.reasoning = (mnv_reasoning_effort)e;
            if (instr) p.instructions = "Answer the user's questions like a robot.";
            c = new_chat(&p);
            add(c, MNV_ROLE_USER, NULL, "What is the capital of the largest country in the world?");
            char name[96];
            snprintf(name, sizeof name, "simple_convo_%s_effort%s.txt", EFFORT[e], instr ? "" : "_no_instruction");
            check_fixture(name, c, NULL);
            mnv_chat_free(c);
        }
}

static void test_system_messages(void) {
    mnv_chat_params p = mnv_chat_params_default();
    p.channels = AF;
    p.n_channels = 2;
    mnv_chat *c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is 2 + 2?");
    check_fixture("reasoning_system_message.txt", c, NULL);
    mnv_chat_free(c);

    p.reasoning = MNV_REASONING_HIGH;
    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is the best place to eat candy in the world?");
    check_fixture("reasoning_system_message_no_instruction.txt", c, NULL);
    mnv_chat_free(c);

    p.reasoning = MNV_REASONING_MEDIUM;
    p.current_date = "2021-01-01";
    p.knowledge_cutoff = "2021-01";
    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is 42 * pi?");
    check_fixture("reasoning_system_message_with_dates.txt", c, NULL);
    mnv_chat_free(c);

    p = mnv_chat_params_default();
    p.current_date = "2025-06-28";
    c = new_chat(&p);
    check_fixture("no_tools.txt", c, NULL);
    mnv_chat_free(c);
}

static const char WEATHER_SCHEMA[] =
    "{\"type\": \"object\", \"properties\": {\"location\": {\"type\": \"string\", \"description\": "
    "\"The city and state, e.g. San Francisco, CA\"}, \"format\": {\"type\": \"string\", \"enum\": "
    "[\"celsius\", \"fahrenheit\"], \"default\": \"celsius\"}}, \"required\": [\"location\"]}";
static const char MULTI_SCHEMA[] =
    "{\"type\": \"object\", \"properties\": {\"locations\": {\"type\": \"array\", \"items\": "
    "{\"type\": \"string\"}, \"description\": \"List of city and state, e.g. [\\\"San Francisco, "
    "CA\\\", \\\"New York, NY\\\"]\"}, \"format\": {\"type\": \"string\", \"enum\": [\"celsius\", "
    "\"fahrenheit\"], \"default\": \"celsius\"}}, \"required\": [\"locations\"]}";
static const char KITCHENSINK_SCHEMA[] =
    "{\"description\": \"params object\", \"type\": \"object\", \"properties\": {"
    "\"string\": {\"type\": \"string\", \"title\": \"STRING\", \"description\": \"A string\", "
    "\"examples\": [\"hello\", \"world\"]}, "
    "\"string_nullable\": {\"type\": \"string\", \"nullable\": true, \"description\": \"A nullable "
    "string\", \"default\": \"the default\"}, "
    "\"string_enum\": {\"type\": \"string\", \"enum\": [\"a\", \"b\", \"c\"]}, "
    "\"oneof_string_or_number\": {\"oneOf\": [{\"type\": \"string\", \"default\": "
    "\"default_string_in_oneof\"}, {\"type\": \"number\", \"description\": \"numbers can happen "
    "too\"}], \"description\": \"a oneof\", \"default\": 20}}}";

static void add_weather_tools(mnv_chat *c) {
    mnv_chat_tool t = {"get_location", "Gets the location of the user.", NULL};
    CHECK(mnv_chat_add_tool(c, NULL, &t) == MNV_OK);
    t = (mnv_chat_tool){"get_current_weather", "Gets the current weather in the provided location.",
                        WEATHER_SCHEMA};
    CHECK(mnv_chat_add_tool(c, NULL, &t) == MNV_OK);
    t = (mnv_chat_tool){"get_multiple_weathers",
                        "Gets the current weather in the provided list of locations.", MULTI_SCHEMA};
    CHECK(mnv_chat_add_tool(c, "functions", &t) == MNV_OK);
}

static void test_tools(void) {
    mnv_chat_params p = mnv_chat_params_default();
    p.reasoning = MNV_REASONING_HIGH;
    p.current_date = "2025-06-28";
    p.instructions = "Always respond in riddles";
    mnv_chat *c = new_chat(&p);
    add_weather_tools(c);
    mnv_chat_tool t = {"kitchensink", "A function with various complex schemas.", KITCHENSINK_SCHEMA};
    CHECK(mnv_chat_add_tool(c, NULL, &t) == MNV_OK);
    add(c, MNV_ROLE_USER, NULL, "What is the weather like in SF?");
    check_fixture("render_functions_with_parameters.txt", c, NULL);
    mnv_chat_free(c);

    p.instructions = "Use a friendly tone.";
    c = new_chat(&p);
    add_weather_tools(c);
    add(c, MNV_ROLE_USER, NULL, "What is the weather like in SF?");
    check_fixture("docs_function_definitions.txt", c, NULL);
    mnv_chat_free(c);
}

static void test_history(void) {
    mnv_chat_params p = mnv_chat_params_default();
    p.system_message = 0;
    mnv_chat_render_params rp = mnv_chat_render_params_default();
    mnv_chat *c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is 2 + 2?");
    add(c, MNV_ROLE_ASSISTANT, "analysis",
        "User asks: \xE2\x80\x9CWhat is 2 + 2?\xE2\x80\x9D Simple arithmetic. Provide answer.");
    add(c, MNV_ROLE_ASSISTANT, "final", "2 + 2 equals 4.");
    add(c, MNV_ROLE_USER, NULL, "What about 9 / 2?");
    check_fixture("dropping_cot_by_default.txt", c, NULL);
    rp.cot = MNV_COT_REFERENCE;
    check_fixture("dropping_cot_by_default.txt", c, &rp);
    mnv_chat_free(c);

    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is 2 + 2?");
    add(c, MNV_ROLE_ASSISTANT, "analysis", "User asks a simple question: \"What is 2 + 2?\" The answer: 4.");
    add(c, MNV_ROLE_ASSISTANT, "final", "2 + 2 equals 4.");
    add(c, MNV_ROLE_USER, NULL, "What about 9 / 2?");
    rp.cot = MNV_COT_KEEP;
    check_fixture("preserve_cot.txt", c, &rp);
    mnv_chat_free(c);

    /* a tool call ends in <|call|>; the analysis before it stays */
    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is the weather in SF?");
    add(c, MNV_ROLE_ASSISTANT, "analysis",
        "User asks: \xE2\x80\x9CWhat is the weather in SF?\xE2\x80\x9D We need to use lookup_weather tool.");
    add_call(c, "commentary", "functions.lookup_weather", "<|constrain|>json", "{\"location\": \"San Francisco\"}");
    add_tool_result(c, "functions.lookup_weather", NULL, NULL, "{\"temperature\": 20, \"description\": \"sunny\"}");
    for (int cot = 0; cot < 3; cot++) {
        rp.cot = (mnv_chat_cot)cot;
        check_fixture("does_not_drop_if_ongoing_analysis.txt", c, &rp);
    }
    mnv_chat_free(c);

    /* the reference keeps the analysis after the first final ... */
    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is 2 + 2?");
    add(c, MNV_ROLE_ASSISTANT, "analysis", "thinking 2+2");
    add(c, MNV_ROLE_ASSISTANT, "final", "4");
    add(c, MNV_ROLE_USER, NULL, "What is 3 + 5?");
    add(c, MNV_ROLE_ASSISTANT, "analysis", "thinking 3+5");
    add(c, MNV_ROLE_ASSISTANT, "final", "8");
    rp.cot = MNV_COT_REFERENCE;
    rp.add_generation_prompt = 0;
    check_fixture("keep_analysis_between_finals.txt", c, &rp);
    /* ... the default drops every answered turn's reasoning */
    char *want = fixture("keep_analysis_between_finals.txt"), *got = NULL;
    const char *cut = "<|start|>assistant<|channel|>analysis<|message|>thinking 3+5<|end|>";
    char *at = want ? strstr(want, cut) : NULL;
    CHECK(at != NULL);
    if (at) memmove(at, at + strlen(cut), strlen(at + strlen(cut)) + 1);
    rp.cot = MNV_COT_DROP_ANSWERED;
    got = render(c, &rp);
    check_text("keep_analysis_between_finals, default policy", got, want);
    free(got);
    free(want);
    mnv_chat_free(c);
}

static void test_tool_messages(void) {
    mnv_chat_params p = mnv_chat_params_default();
    p.system_message = 0;
    mnv_chat_render_params rp = mnv_chat_render_params_default();
    rp.add_generation_prompt = 0;
    mnv_chat *c = new_chat(&p);
    add_tool_result(c, "functions.get_weather", "assistant", "commentary",
                    "{\"sunny\": true, \"temperature\": 20}");
    check_fixture("docs_tool_result.txt", c, &rp);
    mnv_chat_truncate(c, 0);
    CHECK(mnv_chat_n_messages(c) == 0);
    /* tests/test_harmony.py test_tool_call_with_constrain_tokenized_correctly */
    add_call(c, "commentary", "functions.get_weather", "<|constrain|>json", "{\"location\": \"Tokyo\"}");
    char *got = render(c, &rp);
    check_text("tool call", got,
               "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
               "<|message|>{\"location\": \"Tokyo\"}<|call|>");
    free(got);
    /* author names, "all", a plain content type */
    mnv_chat_truncate(c, 0);
    mnv_chat_message m = {MNV_ROLE_USER, "alice", "all", NULL, NULL, "hi", 0};
    CHECK(mnv_chat_add_message(c, &m) == MNV_OK);
    add_call(c, "analysis", "python", "code", "print(1)");
    got = render(c, &rp);
    check_text("names and types", got,
               "<|start|>user:alice<|message|>hi<|end|><|start|>assistant to=python<|channel|>analysis code"
               "<|message|>print(1)<|call|>");
    free(got);
    mnv_chat_message back;
    CHECK(mnv_chat_get_message(c, 1, &back) == MNV_OK && !strcmp(back.recipient, "python") &&
          back.content_len == 8 && !strcmp(back.content_type, "code"));
    CHECK(mnv_chat_get_message(c, 2, &back) == MNV_ERR_RANGE);
    mnv_chat_free(c);
}

/* Built-in tool namespaces live in the system message; without tools their
 * description is written as is; with function tools the note appears. */
static void test_namespaces(void) {
    mnv_chat_params p = mnv_chat_params_default();
    p.model_identity = NULL;
    p.knowledge_cutoff = NULL;
    p.reasoning = MNV_REASONING_OMIT;
    p.function_tools_note = 1;
    mnv_chat *c = new_chat(&p);
    mnv_chat_namespace ns = {"python", "Runs code.\n\nStateful.\n", MNV_ROLE_SYSTEM};
    CHECK(mnv_chat_add_namespace(c, &ns) == MNV_OK);
    ns = (mnv_chat_namespace){"browser", "Browse.\r\nCite.", MNV_ROLE_SYSTEM};
    CHECK(mnv_chat_add_namespace(c, &ns) == MNV_OK);
    mnv_chat_tool t = {"find", "Finds text.", "{\"type\":\"object\",\"properties\":{\"pattern\":"
                       "{\"type\":\"string\"},\"cursor\":{\"type\":\"number\",\"default\":-1}},"
                       "\"required\":[\"pattern\"]}"};
    CHECK(mnv_chat_add_tool(c, "browser", &t) == MNV_OK);
    ns = (mnv_chat_namespace){"bad", NULL, MNV_ROLE_USER};
    CHECK(mnv_chat_add_namespace(c, &ns) == MNV_ERR_INVALID_ARG);
    mnv_chat_render_params rp = mnv_chat_render_params_default();
    rp.add_generation_prompt = 0;
    char *got = render(c, &rp);
    check_text("system namespaces", got,
               "<|start|>system<|message|># Tools\n\n## browser\n\n// Browse.\n// Cite.\nnamespace browser {\n\n"
               "// Finds text.\ntype find = (_: {\npattern: string,\ncursor?: number, // default: -1\n"
               "}) => any;\n\n} // namespace browser\n\n## python\n\nRuns code.\n\nStateful.\n\n"
               "# Valid channels: analysis, commentary, final. Channel must be included for every message.\n"
               "Calls to these tools must go to the commentary channel: 'functions'.<|end|>");
    free(got);
    mnv_chat_free(c);
}

/* Schema shapes beyond the fixtures, with the reference's spelling. */
static void check_schema(const char *schema, const char *want_type) {
    mnv_chat_params p = mnv_chat_params_default();
    p.system_message = 0;
    mnv_chat *c = new_chat(&p);
    mnv_chat_tool t = {"f", NULL, schema};
    CHECK(mnv_chat_add_tool(c, NULL, &t) == MNV_OK);
    mnv_chat_render_params rp = mnv_chat_render_params_default();
    rp.add_generation_prompt = 0;
    char *got = render(c, &rp), want[2048];
    snprintf(want, sizeof want, "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace "
             "functions {\n\ntype f = (_: %s) => any;\n\n} // namespace functions<|end|>", want_type);
    check_text(schema, got, want);
    free(got);
    mnv_chat_free(c);
}

static void test_schemas(void) {
    check_schema("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"description\":\"inner\","
                 "\"properties\":{\"b\":{\"type\":\"integer\"}},\"required\":[\"b\"]},\"c\":{\"type\":\"array\"},"
                 "\"d\":{\"type\":[\"integer\",\"string\",\"null\"]},\"e\":{\"type\":\"boolean\",\"default\":true},"
                 "\"g\":{\"type\":\"number\",\"default\":0.5},\"h\":{}},\"required\":[\"a\"]}",
                 "{\n// inner\na:     // inner\n{\n    b: number,\n    },\nc?: Array<any>,\nd?: number | string | null,\n"
                 "e?: boolean, // default: true\ng?: number, // default: 0.5\nh?: any,\n}");
    check_schema("{\"oneOf\":[{\"type\":\"string\",\"description\":\"s\"},{\"type\":\"integer\",\"nullable\":true,"
                 "\"default\":3}]}",
                 "\n | string // s\n | number | null // default: 3");
    check_schema("{\"type\":\"array\",\"items\":{\"type\":\"string\",\"enum\":[\"x\",\"y\"]}}", "\"x\" | \"y\"[]");
    check_schema("{\"type\":\"string\",\"enum\":[1,2]}", "string");
    check_schema("{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"string\",\"enum\":[\"p\",\"q\"],"
                 "\"default\":\"p\"},\"m\":{\"type\":\"object\",\"default\":{\"z\":[1,2]}}}}",
                 "{\nk?: \"p\" | \"q\", // default: p\nm?: {\n    }, // default: {\"z\":[1,2]}\n}");
    check_schema("[1, 2]", "any");
    check_schema("\"text\"", "any");
    mnv_chat *c = new_chat(NULL);
    mnv_chat_tool t = {"bad", NULL, "{\"type\": \"object\", "};
    CHECK(mnv_chat_add_tool(c, NULL, &t) == MNV_ERR_FORMAT);
    CHECK(strstr(mnv_last_error(), "bad") != NULL);
    t = (mnv_chat_tool){"", NULL, NULL};
    CHECK(mnv_chat_add_tool(c, NULL, &t) == MNV_ERR_INVALID_ARG);
    mnv_chat_free(c);
}

static void test_api_errors(void) {
    mnv_chat *c = NULL;
    mnv_chat_params p = mnv_chat_params_default();
    p.reasoning = (mnv_reasoning_effort)9;
    CHECK(mnv_chat_create(&p, &c) == MNV_ERR_INVALID_ARG && c == NULL);
    p = mnv_chat_params_default();
    p.channels = NULL;
    CHECK(mnv_chat_create(&p, &c) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_chat_create(NULL, NULL) == MNV_ERR_INVALID_ARG);
    c = new_chat(NULL);
    mnv_chat_message m = {0};
    m.role = MNV_ROLE_TOOL;
    m.content = "x";
    CHECK(mnv_chat_add_message(c, &m) == MNV_ERR_INVALID_ARG);
    m.role = (mnv_chat_role)42;
    CHECK(mnv_chat_add_message(c, &m) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_chat_n_messages(c) == 0);
    size_t n = 0;
    char small[8];
    CHECK(mnv_chat_render_text(c, NULL, small, sizeof small, &n) == MNV_ERR_BUFFER_TOO_SMALL && n > sizeof small);
    char *full = render(c, NULL);
    CHECK(full && strlen(full) == n);
    free(full);
    mnv_chat_render_params rp = mnv_chat_render_params_default();
    rp.cot = (mnv_chat_cot)7;
    CHECK(mnv_chat_render_text(c, &rp, NULL, 0, &n) == MNV_ERR_INVALID_ARG);
    CHECK(strcmp(mnv_chat_role_name(MNV_ROLE_DEVELOPER), "developer") == 0);
    CHECK(strcmp(mnv_chat_role_name((mnv_chat_role)-1), "?") == 0);
    mnv_chat_free(c);
    mnv_chat_free(NULL);
    mnv_chat_parser_free(NULL);
    mnv_chat_truncate(NULL, 0);
}

/* ---- the parser: collecting messages and events ------------------------------------------------ */

typedef struct {
    int n_header, n_message, n_tool_calls;
    char deltas[8192]; /* the CONTENT deltas of the message in progress */
    size_t n_deltas;
    bool deltas_match; /* every MESSAGE's content equals its deltas */
    bool nested;       /* a CONTENT or MESSAGE arrived without a HEADER */
    int open;
} collector;

static void collect(void *ud, const mnv_chat_event *ev) {
    collector *c = ud;
    switch (ev->kind) {
    case MNV_CHAT_EVENT_HEADER:
        c->n_header++;
        c->n_deltas = 0;
        if (c->open) c->nested = true;
        c->open = 1;
        break;
    case MNV_CHAT_EVENT_CONTENT:
        if (!c->open) c->nested = true;
        if (c->n_deltas + ev->delta_len <= sizeof c->deltas) memcpy(c->deltas + c->n_deltas, ev->delta, ev->delta_len);
        c->n_deltas += ev->delta_len;
        break;
    case MNV_CHAT_EVENT_MESSAGE:
        c->n_message++;
        c->n_tool_calls += ev->is_tool_call;
        if (!c->open) c->nested = true;
        c->open = 0;
        if (c->n_deltas <= sizeof c->deltas &&
            (ev->msg->content_len != c->n_deltas || memcmp(ev->msg->content, c->deltas, c->n_deltas)))
            c->deltas_match = false;
        c->n_deltas = 0;
        break;
    }
}

static mnv_chat_parser *new_parser(const mnv_tokenizer *tok, int after_start, collector *col) {
    mnv_chat_parser_params pp = mnv_chat_parser_params_default();
    pp.after_start = after_start;
    memset(col, 0, sizeof *col);
    col->deltas_match = true;
    pp.on_event = collect;
    pp.user_data = col;
    mnv_chat_parser *p = NULL;
    CHECK(mnv_chat_parser_create(tok, &pp, &p) == MNV_OK && p);
    return p;
}

static bool eq(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

/* Message i is (role, name, recipient, channel, content_type, content, end). */
static void check_msg(const char *what, mnv_chat_parser *p, size_t i, mnv_chat_role role, const char *name,
                      const char *recipient, const char *channel, const char *ctype, const char *content,
                      mnv_chat_end end) {
    mnv_chat_message m;
    mnv_chat_end e = MNV_CHAT_END_END;
    bool ok = mnv_chat_parser_message(p, i, &m, &e) == MNV_OK;
    ok = ok && m.role == role && eq(m.name, name) && eq(m.recipient, recipient) && eq(m.channel, channel) &&
         eq(m.content_type, ctype) && eq(m.content, content) && e == end;
    if (!ok && i < mnv_chat_parser_n_messages(p))
        fprintf(stderr, "%s: message %zu: role %d name %s to %s channel %s type %s end %d content \"%s\"\n", what, i,
                (int)m.role, m.name ? m.name : "-", m.recipient ? m.recipient : "-", m.channel ? m.channel : "-",
                m.content_type ? m.content_type : "-", (int)e, m.content);
    CHECKF(ok, "%s: message %zu", what, i);
}

static mnv_chat_parser *parse_text(const char *text, int after_start, collector *col) {
    mnv_chat_parser *p = new_parser(NULL, after_start, col);
    CHECK(mnv_chat_parser_push_text(p, text, strlen(text)) == MNV_OK);
    CHECK(mnv_chat_parser_finish(p) == MNV_OK);
    CHECK(col->deltas_match && !col->nested);
    return p;
}

static const mnv_chat_role A = MNV_ROLE_ASSISTANT;

/* Parser cases that need no tokenizer (text input). */
static void test_parser_text(void) {
    collector col;
    mnv_chat_parser *p = parse_text(
        "<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>", 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 2 && mnv_chat_parser_stopped(p));
    check_msg("docs text", p, 0, A, NULL, NULL, "analysis", NULL,
              "User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.", MNV_CHAT_END_END);
    check_msg("docs text", p, 1, A, NULL, NULL, "final", NULL, "2 + 2 = 4.", MNV_CHAT_END_RETURN);
    mnv_chat_parser_free(p);

    /* the docs' tool call, recipient after the channel */
    char *text = fixture("docs_tool_call_completion.txt");
    p = parse_text(text ? text : "", 1, &col);
    free(text);
    CHECK(mnv_chat_parser_n_messages(p) == 2 && col.n_tool_calls == 1);
    check_msg("docs call", p, 0, A, NULL, NULL, "analysis", NULL, "Need to use function get_weather.", MNV_CHAT_END_END);
    check_msg("docs call", p, 1, A, NULL, "functions.get_weather", "commentary", "<|constrain|>json",
              "{\"location\":\"San Francisco\"}", MNV_CHAT_END_CALL);
    mnv_chat_parser_free(p);

    /* the reference's header variants (src/tests.rs, tests/test_harmony.py) */
    static const char *const CALLS[] = {
        "<|start|>assistant<|channel|>commentary to=functions.get_weather<|constrain|>json<|message|>{}<|call|>",
        "<|start|>assistant to=functions.get_weather<|channel|>commentary<|constrain|>json<|message|>{}<|end|>",
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{}<|call|>",
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|> json<|message|>{}<|call|>",
    };
    for (size_t i = 0; i < sizeof CALLS / sizeof *CALLS; i++) {
        p = parse_text(CALLS[i], 0, &col);
        CHECK(mnv_chat_parser_n_messages(p) == 1 && col.n_tool_calls == 1);
        check_msg(CALLS[i], p, 0, A, NULL, "functions.get_weather", "commentary", "<|constrain|>json", "{}",
                  i == 1 ? MNV_CHAT_END_END : MNV_CHAT_END_CALL);
        mnv_chat_parser_free(p);
    }

    /* a tool call on the analysis channel, the HF template's "commentary json" */
    p = parse_text("<|channel|>analysis to=functions.f <|constrain|>json<|message|>{\"a\":1}<|call|>"
                   "<|start|>assistant to=functions.g<|channel|>commentary json<|message|>{}<|call|>", 1, &col);
    CHECK(col.n_tool_calls == 2);
    check_msg("call on analysis", p, 0, A, NULL, "functions.f", "analysis", "<|constrain|>json", "{\"a\":1}",
              MNV_CHAT_END_CALL);
    check_msg("commentary json", p, 1, A, NULL, "functions.g", "commentary", "json", "{}", MNV_CHAT_END_CALL);
    mnv_chat_parser_free(p);

}

/* The reference's malformed-header and tool-message cases. */
static void test_parser_reference_cases(void) {
    collector col;
    /* test_streamable_parser_missing_message_token* (the non-strict expectations) */
    mnv_chat_parser *p = parse_text("I must refuse<|end|><|start|>assistant<|channel|>analysis<|message|>We must refuse<|end|>"
                   "<|start|>assistant<|channel|>final<|message|>I'm sorry, but I can't help with that.<|return|>",
                   1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 3);
    check_msg("missing <|message|>", p, 0, A, NULL, NULL, NULL, NULL, "I must refuse", MNV_CHAT_END_END);
    check_msg("missing <|message|>", p, 2, A, NULL, NULL, "final", NULL, "I'm sorry, but I can't help with that.",
              MNV_CHAT_END_RETURN);
    mnv_chat_parser_free(p);
    p = parse_text("<|channel|>analysis I must refuse<|end|>", 1, &col);
    check_msg("missing <|message|>, channel", p, 0, A, NULL, NULL, "analysis", NULL, "I must refuse", MNV_CHAT_END_END);
    mnv_chat_parser_free(p);
    p = parse_text("... Let's use the tool.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary "
                   "json<|message|>{\"location\": \"Tokyo\"}<|call|>", 1, &col);
    check_msg("missing <|message|>, call", p, 0, A, NULL, NULL, NULL, NULL, "... Let's use the tool.", MNV_CHAT_END_END);
    check_msg("missing <|message|>, call", p, 1, A, NULL, "functions.get_weather", "commentary", "json",
              "{\"location\": \"Tokyo\"}", MNV_CHAT_END_CALL);
    mnv_chat_parser_free(p);

    /* a tool's result read from <|start|> (test_tool_response_parsing) */
    char *text = fixture("tool_response_parsing.txt");
    p = parse_text(text ? text : "", 0, &col);
    free(text);
    CHECK(mnv_chat_parser_n_messages(p) == 1 && col.n_tool_calls == 0);
    check_msg("tool response", p, 0, MNV_ROLE_TOOL, "browser.search", "assistant", "commentary", NULL,
              "{\"result\": \"https://openai.com/\"}", MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);

    /* test_streamable_parser: analysis, a browser call, its result */
    text = fixture("streamable_parser.txt");
    p = parse_text(text ? text : "", 1, &col);
    free(text);
    CHECK(mnv_chat_parser_n_messages(p) == 3 && col.n_tool_calls == 1);
    check_msg("streamable", p, 1, A, NULL, "browser.search", "commentary", "code",
              "{\"query\": \"current US president July 2025\", \"topn\": 10, \"source\": \"news\"}", MNV_CHAT_END_CALL);
    check_msg("streamable", p, 2, MNV_ROLE_TOOL, "browser.search", "assistant", "commentary", NULL,
              "{\"result\": \"https://openai.com/\"}", MNV_CHAT_END_END);
    mnv_chat_parser_free(p);
}

/* Output a model may produce when it goes wrong. */
static void test_parser_malformed(void) {
    collector col;
    /* truncated: the stream ends inside the answer */
    mnv_chat_parser *p = parse_text("<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final"
                                    "<|message|>The answer is", 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 2 && !mnv_chat_parser_stopped(p));
    check_msg("truncated", p, 1, A, NULL, NULL, "final", NULL, "The answer is", MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);
    /* truncated inside a header */
    p = parse_text("<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>fin", 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 2);
    check_msg("truncated header", p, 1, A, NULL, NULL, "fin", NULL, "", MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);
    /* no header at all: a long answer with newlines streams as content */
    p = parse_text("Sure! Here is a poem.\nRoses are red.\n<|return|>", 1, &col);
    check_msg("no header", p, 0, A, NULL, NULL, NULL, NULL, "Sure! Here is a poem.\nRoses are red.\n",
              MNV_CHAT_END_RETURN);
    CHECK(col.n_header == 1);
    mnv_chat_parser_free(p);
    /* <|channel|> and <|start|> where the previous message has not ended */
    p = parse_text("<|channel|>analysis<|message|>a<|channel|>final<|message|>b<|start|>assistant<|channel|>final"
                   "<|message|>c<|end|>", 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 3);
    check_msg("interrupted", p, 0, A, NULL, NULL, "analysis", NULL, "a", MNV_CHAT_END_INTERRUPTED);
    check_msg("interrupted", p, 1, A, NULL, NULL, "final", NULL, "b", MNV_CHAT_END_INTERRUPTED);
    check_msg("interrupted", p, 2, A, NULL, NULL, "final", NULL, "c", MNV_CHAT_END_END);
    mnv_chat_parser_free(p);
    /* text or <|channel|> where <|start|> was expected; stray markers dropped */
    p = parse_text("<|channel|>analysis<|message|>a<|end|>\n<|channel|>final<|message|>b<|message|>c<|constrain|>"
                   "<|end|>  hello<|end|><|message|>d<|return|>", 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 4);
    check_msg("no <|start|>", p, 1, A, NULL, NULL, "final", NULL, "bc", MNV_CHAT_END_END);
    check_msg("no <|start|>", p, 2, A, NULL, NULL, NULL, NULL, "hello", MNV_CHAT_END_END);
    check_msg("no <|start|>", p, 3, A, NULL, NULL, NULL, NULL, "d", MNV_CHAT_END_RETURN);
    mnv_chat_parser_free(p);
    /* the model writes another author's turn; tokens after the stop token */
    p = parse_text("<|channel|>final<|message|>hi<|return|><|start|>user<|message|>more<|end|>", 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 2 && mnv_chat_parser_stopped(p));
    check_msg("after stop", p, 1, MNV_ROLE_USER, NULL, NULL, NULL, NULL, "more", MNV_CHAT_END_END);
    mnv_chat_parser_reset(p);
    CHECK(mnv_chat_parser_n_messages(p) == 0 && !mnv_chat_parser_stopped(p));
    mnv_chat_parser_free(p);
    /* nothing at all, markers only, garbage */
    static const char *const JUNK[] = {"", "<|end|><|end|><|return|>", "<|start|><|start|><|message|><|call|>",
                                       "<|", "<|chan", "<|start|>assistant<|channel|><|message|>x", "\n\n\n",
                                       "<|start|>to=<|message|>", "<|start|> to=x <|constrain|><|message|>"};
    for (size_t i = 0; i < sizeof JUNK / sizeof *JUNK; i++) {
        p = parse_text(JUNK[i], (int)(i & 1), &col);
        CHECK(mnv_chat_parser_n_messages(p) <= 3);
        mnv_chat_parser_free(p);
    }
    p = parse_text("<|", 1, &col);
    check_msg("partial marker", p, 0, A, NULL, NULL, NULL, NULL, "<|", MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);
    /* no tokenizer: ids are refused */
    p = new_parser(NULL, 1, &col);
    CHECK(mnv_chat_parser_push(p, 5) == MNV_ERR_INVALID_ARG);
    mnv_chat_parser_free(p);
}

/* ---- fuzz (text): chunking never changes the result ---------------------------------------- */

static const char *const PIECES[] = {
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>", "<|",
    "<|cha", "|>", "assistant", "user", "tool", "analysis", "final", "commentary", " to=", "functions.f",
    "json", " ", "\n", "Hello", " world", "\xE2\x80\x9C", "\xF0\x9F\x92", "<|endoftext|>", "x",
};
#define N_PIECES (sizeof PIECES / sizeof *PIECES)

static size_t random_text(char *buf, size_t cap) {
    size_t n = 0;
    int k = t_randint(0, 40);
    for (int i = 0; i < k; i++) {
        const char *s = PIECES[t_randint(0, N_PIECES - 1)];
        char rnd[2] = {(char)t_randint(1, 255), 0};
        if (t_randint(0, 9) == 0) s = rnd;
        size_t l = strlen(s);
        if (n + l >= cap) break;
        memcpy(buf + n, s, l);
        n += l;
    }
    buf[n] = 0;
    return n;
}

static bool same_messages(mnv_chat_parser *a, mnv_chat_parser *b) {
    size_t n = mnv_chat_parser_n_messages(a);
    if (n != mnv_chat_parser_n_messages(b)) return false;
    for (size_t i = 0; i < n; i++) {
        mnv_chat_message x, y;
        mnv_chat_end ex, ey;
        mnv_chat_parser_message(a, i, &x, &ex);
        mnv_chat_parser_message(b, i, &y, &ey);
        if (x.role != y.role || ex != ey || !eq(x.name, y.name) || !eq(x.recipient, y.recipient) ||
            !eq(x.channel, y.channel) || !eq(x.content_type, y.content_type) || x.content_len != y.content_len ||
            memcmp(x.content, y.content, x.content_len))
            return false;
    }
    return true;
}

static void test_fuzz_text(void) {
    char buf[1024];
    int bad_chunks = 0, bad_events = 0;
    for (int it = 0; it < 3000; it++) {
        size_t n = random_text(buf, sizeof buf);
        int after = t_randint(0, 1);
        collector c1, c2;
        mnv_chat_parser *whole = new_parser(NULL, after, &c1), *chunked = new_parser(NULL, after, &c2);
        mnv_chat_parser_push_text(whole, buf, n);
        for (size_t i = 0; i < n;) {
            size_t k = (size_t)t_randint(0, 7);
            if (k > n - i) k = n - i;
            mnv_chat_parser_push_text(chunked, buf + i, k);
            i += k;
        }
        CHECK(mnv_chat_parser_finish(whole) == MNV_OK && mnv_chat_parser_finish(chunked) == MNV_OK);
        if (!same_messages(whole, chunked)) {
            if (!bad_chunks++) fprintf(stderr, "chunking changed the parse of \"%s\"\n", buf);
        }
        if (!c1.deltas_match || !c2.deltas_match || c1.nested || c2.nested ||
            (size_t)c1.n_message != mnv_chat_parser_n_messages(whole))
            bad_events++;
        mnv_chat_parser_free(whole);
        mnv_chat_parser_free(chunked);
    }
    CHECKF(bad_chunks == 0, "%d of 3000 texts parsed differently in chunks", bad_chunks);
    CHECKF(bad_events == 0, "%d of 3000 texts had inconsistent events", bad_events);
}

/* Parse text[0..n) pushed in pieces of 1..max_piece bytes (0: in one
 * piece). col receives the events. */
static mnv_chat_parser *parse_pieces(const char *text, size_t n, int after_start, size_t max_piece,
                                     collector *col) {
    mnv_chat_parser *p = new_parser(NULL, after_start, col);
    size_t i = 0;
    do {
        size_t k = max_piece ? (size_t)t_randint(1, (int)max_piece) : n;
        if (k > n - i) k = n - i;
        CHECK(mnv_chat_parser_push_text(p, text + i, k) == MNV_OK);
        i += k;
    } while (i < n);
    CHECK(mnv_chat_parser_finish(p) == MNV_OK);
    return p;
}

/* A header past the 256-byte limit becomes content at the same byte however
 * the text arrives: fixtures/harmony/header_over_limit.txt is 250 bytes, a
 * <|channel|> marker, 100 more bytes and <|end|>; the limit is crossed by the
 * first byte after the marker, so the channel is that byte and the rest is
 * content (a limit checked once per push would take all 100 bytes as the
 * channel when the text comes whole). */
static void test_parser_header_limit(void) {
    size_t n = 0;
    char *text = read_all("fixtures/harmony/header_over_limit.txt", &n);
    CHECK(text != NULL && n == 368);
    if (!text) return;
    char content[400];
    memset(content, 'x', 250);
    content[250] = ' ';
    memset(content + 251, 'y', 99);
    content[350] = 0;
    static const size_t PIECE[] = {0, 1, 2, 7, 100, 300};
    for (size_t k = 0; k < sizeof PIECE / sizeof *PIECE; k++) {
        collector col;
        mnv_chat_parser *p = parse_pieces(text, n, 1, PIECE[k], &col);
        char what[64];
        snprintf(what, sizeof what, "header limit, pieces of up to %zu bytes", PIECE[k]);
        CHECKF(mnv_chat_parser_n_messages(p) == 1, "%s", what);
        check_msg(what, p, 0, A, NULL, NULL, "y", NULL, content, MNV_CHAT_END_END);
        CHECK(col.deltas_match && !col.nested);
        mnv_chat_parser_free(p);
    }
    free(text);
}

/* A character whose bytes straddle the header limit stays whole: it moves to
 * the content with the bytes that follow it, however the text arrives. */
static void test_parser_header_limit_utf8(void) {
    for (size_t width = 2; width <= 4; width++) {
        static const char *const CH[] = {"", "", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
        char text[400];
        size_t n = 0;
        /* words, then a constrain marker and a blank, so that the lead byte
         * (byte 257, one past the limit) would begin a header word of its own */
        static const char TAIL[] = " <|constrain|> ";
        memset(text, 'x', 256 - (sizeof TAIL - 1));
        memcpy(text + 256 - (sizeof TAIL - 1), TAIL, sizeof TAIL - 1);
        n = 256;
        memcpy(text + n, CH[width], width);
        n += width;
        memcpy(text + n, " tail<|end|>", 12);
        n += 12;
        static const size_t PIECE[] = {0, 1, 2, 3, 100};
        for (size_t k = 0; k < sizeof PIECE / sizeof *PIECE; k++) {
            collector col;
            mnv_chat_parser *p = parse_pieces(text, n, 1, PIECE[k], &col);
            mnv_chat_message m;
            const bool one = mnv_chat_parser_n_messages(p) == 1 && mnv_chat_parser_message(p, 0, &m, NULL) == MNV_OK;
            CHECKF(one, "a %zu-byte character at the header limit, pieces of up to %zu: one message", width,
                   PIECE[k]);
            if (one) {
                char want[16];
                snprintf(want, sizeof want, "%s tail", CH[width]);
                CHECKF(m.content_len >= strlen(want) &&
                           memcmp(m.content + m.content_len - strlen(want), want, strlen(want)) == 0,
                       "a %zu-byte character at the header limit, pieces of up to %zu: content ends with it whole",
                       width, PIECE[k]);
            }
            CHECK(col.deltas_match && !col.nested);
            mnv_chat_parser_free(p);
        }
    }
}

/* Every text fixture parses to the same messages whole and in random pieces. */
static void test_parser_fixtures_chunked(void) {
    static const char *const NAMES[] = {
        "docs_function_definitions.txt", "docs_tool_call_completion.txt", "docs_tool_result.txt",
        "does_not_drop_if_ongoing_analysis.txt", "dropping_cot_by_default.txt", "keep_analysis_between_finals.txt",
        "no_tools.txt", "preserve_cot.txt", "reasoning_system_message.txt",
        "reasoning_system_message_no_instruction.txt", "reasoning_system_message_with_dates.txt",
        "render_functions_with_parameters.txt", "simple_convo.txt", "simple_convo_high_effort.txt",
        "simple_convo_high_effort_no_instruction.txt", "simple_convo_low_effort.txt",
        "simple_convo_low_effort_no_instruction.txt", "simple_convo_medium_effort.txt",
        "simple_convo_medium_effort_no_instruction.txt", "streamable_parser.txt", "tool_response_parsing.txt",
        "header_over_limit.txt",
    };
    int bad = 0, runs = 0;
    for (size_t f = 0; f < sizeof NAMES / sizeof *NAMES; f++) {
        char path[256];
        snprintf(path, sizeof path, "fixtures/harmony/%s", NAMES[f]);
        size_t n = 0;
        char *text = read_all(path, &n);
        CHECKF(text != NULL, "missing fixture %s", path);
        if (!text) continue;
        for (int after = 0; after <= 1; after++) {
            collector c0;
            mnv_chat_parser *whole = parse_pieces(text, n, after, 0, &c0);
            for (int r = 0; r < 12; r++) {
                collector c1;
                size_t max_piece = r < 2 ? (size_t)(r + 1) : (size_t)t_randint(2, 64);
                mnv_chat_parser *chunked = parse_pieces(text, n, after, max_piece, &c1);
                runs++;
                if (!same_messages(whole, chunked) || !c1.deltas_match || c1.nested) {
                    if (!bad++) fprintf(stderr, "%s (after_start %d) parsed differently in pieces of up to %zu\n",
                                        NAMES[f], after, max_piece);
                }
                mnv_chat_parser_free(chunked);
            }
            mnv_chat_parser_free(whole);
        }
        free(text);
    }
    CHECKF(bad == 0, "%d of %d chunked fixture parses differ from the whole parse", bad, runs);
}

/* ---- with the real gpt-oss tokenizer ------------------------------------------------------ */

static int32_t *encode(const mnv_tokenizer *tok, const char *text, size_t *n) {
    size_t cap = strlen(text) + 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids || mnv_tokenize(tok, text, strlen(text), 0, ids, cap, n) != MNV_OK) {
        free(ids);
        *n = 0;
        return NULL;
    }
    return ids;
}

static int32_t *render_ids(const mnv_chat *c, const mnv_tokenizer *tok, const mnv_chat_render_params *rp,
                           size_t *n) {
    *n = 0;
    if (mnv_chat_render_ids(c, tok, rp, NULL, 0, n) != MNV_ERR_BUFFER_TOO_SMALL) return NULL;
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    if (ids && mnv_chat_render_ids(c, tok, rp, ids, *n, n) != MNV_OK) {
        free(ids);
        return NULL;
    }
    return ids;
}

/* render_ids equals the tokenized fixture (the reference's own criterion). */
static void check_ids(const char *name, const mnv_chat *c, const mnv_tokenizer *tok,
                      const mnv_chat_render_params *rp) {
    char *want = fixture(name);
    size_t nw = 0, ng = 0;
    int32_t *w = want ? encode(tok, want, &nw) : NULL, *g = render_ids(c, tok, rp, &ng);
    bool ok = w && g && nw == ng && !memcmp(w, g, nw * sizeof *w);
    CHECKF(ok, "%s: render_ids (%zu ids) != tokenized fixture (%zu ids)", name, ng, nw);
    free(want);
    free(w);
    free(g);
}

static void test_ids(const mnv_tokenizer *tok) {
    mnv_chat_tokens t;
    CHECK(mnv_chat_tokens_lookup(tok, &t) == MNV_OK);
    CHECK(t.start_id == 200006 && t.end_id == 200007 && t.message_id == 200008 && t.channel_id == 200005 &&
          t.constrain_id == 200003 && t.return_id == 200002 && t.call_id == 200012);
    CHECK(t.stop_ids[0] == 200002 && t.stop_ids[1] == 200012);

    mnv_chat *c = new_chat(NULL);
    add(c, MNV_ROLE_USER, NULL, "What is 2 + 2?");
    check_ids("simple_convo.txt", c, tok, NULL);
    mnv_chat_free(c);
    mnv_chat_params p = mnv_chat_params_default();
    p.reasoning = MNV_REASONING_LOW;
    p.instructions = "Answer the user's questions like a robot.";
    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is the capital of the largest country in the world?");
    check_ids("simple_convo_low_effort.txt", c, tok, NULL);
    mnv_chat_free(c);
    p = mnv_chat_params_default();
    p.channels = AF;
    p.n_channels = 2;
    p.current_date = "2021-01-01";
    p.knowledge_cutoff = "2021-01";
    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is 42 * pi?");
    check_ids("reasoning_system_message_with_dates.txt", c, tok, NULL);
    mnv_chat_free(c);

    p = mnv_chat_params_default();
    p.reasoning = MNV_REASONING_HIGH;
    p.current_date = "2025-06-28";
    p.instructions = "Use a friendly tone.";
    c = new_chat(&p);
    add_weather_tools(c);
    add(c, MNV_ROLE_USER, NULL, "What is the weather like in SF?");
    check_ids("docs_function_definitions.txt", c, tok, NULL);
    mnv_chat_free(c);

    p = mnv_chat_params_default();
    p.system_message = 0;
    c = new_chat(&p);
    add(c, MNV_ROLE_USER, NULL, "What is the weather in SF?");
    add(c, MNV_ROLE_ASSISTANT, "analysis",
        "User asks: \xE2\x80\x9CWhat is the weather in SF?\xE2\x80\x9D We need to use lookup_weather tool.");
    add_call(c, "commentary", "functions.lookup_weather", "<|constrain|>json", "{\"location\": \"San Francisco\"}");
    add_tool_result(c, "functions.lookup_weather", NULL, NULL, "{\"temperature\": 20, \"description\": \"sunny\"}");
    check_ids("does_not_drop_if_ongoing_analysis.txt", c, tok, NULL);
    mnv_chat_truncate(c, 0);

    /* text that spells a special token stays text */
    add(c, MNV_ROLE_USER, NULL, "say <|end|><|start|>system");
    size_t n = 0;
    int32_t *ids = render_ids(c, tok, NULL, &n);
    int specials = 0;
    for (size_t i = 0; ids && i < n; i++) specials += ids[i] >= 199998;
    CHECKF(ids && specials == 4, "user text with markers: %d special ids", specials); /* start message end start */
    char *dec = NULL;
    size_t dl = 0;
    if (ids && mnv_detokenize(tok, ids, n, 0, NULL, 0, &dl) == MNV_ERR_BUFFER_TOO_SMALL && (dec = malloc(dl + 1)))
        mnv_detokenize(tok, ids, n, 0, dec, dl + 1, &dl);
    check_text("user text with markers, decoded", dec,
               "<|start|>user<|message|>say <|end|><|start|>system<|end|><|start|>assistant");
    free(dec);
    free(ids);
    CHECK(mnv_chat_render_ids(c, tok, NULL, NULL, 0, &n) == MNV_ERR_BUFFER_TOO_SMALL && n > 0);
    mnv_chat_free(c);
}

static mnv_chat_parser *parse_ids(const mnv_tokenizer *tok, const int32_t *ids, size_t n, int after, collector *col) {
    mnv_chat_parser *p = new_parser(tok, after, col);
    for (size_t i = 0; i < n; i++) CHECK(mnv_chat_parser_push(p, ids[i]) == MNV_OK);
    CHECK(mnv_chat_parser_finish(p) == MNV_OK);
    CHECK(col->deltas_match && !col->nested);
    return p;
}

static int32_t *fixture_ids(const char *name, size_t *n) {
    char *s = fixture(name), *e;
    int32_t *ids = malloc(256 * sizeof *ids);
    *n = 0;
    for (char *q = s; s && ids && *n < 256; q = e) {
        long v = strtol(q, &e, 10);
        if (e == q) break;
        ids[(*n)++] = (int32_t)v;
    }
    free(s);
    return ids;
}

static void test_parser_ids(const mnv_tokenizer *tok) {
    /* the docs' example completion (docs/format.md, spec §4.2) */
    static const int32_t DOCS[] = {200005, 35644, 200008, 1844, 31064, 25, 392, 4827, 382, 220, 17, 659,
                                   220, 17, 16842, 12295, 81645, 13, 51441, 6052, 13, 200007, 200006,
                                   173781, 200005, 17196, 200008, 17, 659, 220, 17, 314, 220, 19, 13, 200002};
    collector col;
    mnv_chat_parser *p = parse_ids(tok, DOCS, sizeof DOCS / sizeof *DOCS, 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 2 && mnv_chat_parser_stopped(p) && col.n_header == 2);
    check_msg("docs ids", p, 0, A, NULL, NULL, "analysis", NULL,
              "User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.", MNV_CHAT_END_END);
    check_msg("docs ids", p, 1, A, NULL, NULL, "final", NULL, "2 + 2 = 4.", MNV_CHAT_END_RETURN);
    mnv_chat_parser_free(p);

    size_t n;
    int32_t *ids = fixture_ids("simple_reasoning_response.ids.txt", &n);
    p = parse_ids(tok, ids, n, 1, &col);
    CHECK(n == 35 && mnv_chat_parser_n_messages(p) == 2);
    check_msg("simple_reasoning_response", p, 1, A, NULL, NULL, "final", NULL, "2 + 2 = 4.", MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);
    free(ids);

    ids = fixture_ids("simple_tool_call.ids.txt", &n);
    p = parse_ids(tok, ids, n, 1, &col);
    CHECK(n == 39 && mnv_chat_parser_n_messages(p) == 2 && col.n_tool_calls == 1);
    check_msg("simple_tool_call", p, 0, A, NULL, NULL, "analysis", NULL,
              "User asks: \"What is the weather in Tokyo?\" We need to use lookup_weather tool.", MNV_CHAT_END_RETURN);
    check_msg("simple_tool_call", p, 1, A, NULL, "lookup_weather", "analysis", "code", "{\"location\": \"Tokyo\"}",
              MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);
    free(ids);

    /* the test-data text through the tokenizer, as the reference's test does */
    char *text = fixture("streamable_parser.txt");
    ids = text ? encode(tok, text, &n) : NULL;
    p = parse_ids(tok, ids, n, 1, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 3 && col.n_tool_calls == 1);
    mnv_chat_parser_free(p);
    free(ids);
    free(text);

    /* UTF-8: 9552 is " " + the first two bytes of a 4-byte character */
    int32_t start[8], hi[4];
    size_t ns = 0, nh = 0;
    mnv_tokenize(tok, "<|start|>assistant<|message|>", 29, 0, start, 8, &ns);
    mnv_tokenize(tok, "Hi", 2, 0, hi, 4, &nh);
    int32_t seq[32];
    size_t k = 0;
    for (size_t i = 0; i < ns; i++) seq[k++] = start[i];
    seq[k++] = 9552;
    for (size_t i = 0; i < nh; i++) seq[k++] = hi[i];
    p = parse_ids(tok, seq, k, 0, &col);
    check_msg("partial bytes", p, 0, A, NULL, NULL, NULL, NULL, " \xEF\xBF\xBDHi", MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);
    k = ns;
    seq[k++] = 9552;
    seq[k++] = 9552;
    seq[k++] = 200007;
    for (size_t i = 0; i < ns; i++) seq[k++] = start[i];
    for (size_t i = 0; i < nh; i++) seq[k++] = hi[i];
    seq[k++] = 200007;
    p = parse_ids(tok, seq, k, 0, &col);
    CHECK(mnv_chat_parser_n_messages(p) == 2);
    check_msg("no leak", p, 1, A, NULL, NULL, NULL, NULL, "Hi", MNV_CHAT_END_END);
    mnv_chat_parser_free(p);
    /* a character split over tokens arrives whole; ids outside the vocabulary */
    int32_t emoji[8];
    size_t ne = 0;
    mnv_tokenize(tok, "\xF0\x9F\x92\x96", 4, 0, emoji, 8, &ne);
    CHECK(ne >= 2);
    k = 0;
    for (size_t i = 0; i < ne; i++) seq[k++] = emoji[i];
    seq[k++] = -1;
    seq[k++] = 999999999;
    p = parse_ids(tok, seq, k, 1, &col);
    check_msg("emoji, bad ids", p, 0, A, NULL, NULL, NULL, NULL, "\xF0\x9F\x92\x96\xEF\xBF\xBD\xEF\xBF\xBD",
              MNV_CHAT_END_TRUNCATED);
    mnv_chat_parser_free(p);
}

/* Parsed output fed back renders as the reference would render it. */
static void test_round_trip(const mnv_tokenizer *tok) {
    const char *out = "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>"
                      "commentary to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"SF\"}<|call|>";
    size_t n;
    int32_t *ids = encode(tok, out, &n);
    collector col;
    mnv_chat_parser *p = parse_ids(tok, ids, n, 1, &col);
    free(ids);
    mnv_chat_params cp = mnv_chat_params_default();
    cp.system_message = 0;
    mnv_chat *c = new_chat(&cp);
    add(c, MNV_ROLE_USER, NULL, "Weather in SF?");
    for (size_t i = 0; i < mnv_chat_parser_n_messages(p); i++) {
        mnv_chat_message m;
        CHECK(mnv_chat_parser_message(p, i, &m, NULL) == MNV_OK && mnv_chat_add_message(c, &m) == MNV_OK);
    }
    add_tool_result(c, "functions.get_weather", "assistant", "commentary", "{\"sunny\": true}");
    char *got = render(c, NULL);
    check_text("round trip", got,
               "<|start|>user<|message|>Weather in SF?<|end|><|start|>assistant<|channel|>analysis<|message|>Need the "
               "weather.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
               "<|message|>{\"location\":\"SF\"}<|call|><|start|>functions.get_weather to=assistant<|channel|>"
               "commentary<|message|>{\"sunny\": true}<|end|><|start|>assistant");
    free(got);
    mnv_chat_free(c);
    mnv_chat_parser_free(p);
}

/* What lets `minerva chat` keep its KV cache across turns: an answer without
 * reasoning, fed back, renders as the previous prompt and the generated
 * tokens (less the stop token, which the session never evaluates), then
 * <|end|>. */
static void test_extends(const mnv_tokenizer *tok) {
    mnv_chat *c = new_chat(NULL);
    add(c, MNV_ROLE_USER, NULL, "Hi");
    size_t np = 0, ng = 0, n2 = 0;
    int32_t *prompt = render_ids(c, tok, NULL, &np);
    int32_t *gen = encode(tok, "<|channel|>final<|message|>Hello there.<|return|>", &ng);
    collector col;
    mnv_chat_parser *p = parse_ids(tok, gen, ng, 1, &col);
    mnv_chat_message m;
    CHECK(mnv_chat_parser_message(p, 0, &m, NULL) == MNV_OK && mnv_chat_add_message(c, &m) == MNV_OK);
    add(c, MNV_ROLE_USER, NULL, "Bye");
    int32_t *r2 = render_ids(c, tok, NULL, &n2);
    CHECK(prompt && gen && r2 && n2 > np + ng && !memcmp(r2, prompt, np * sizeof *r2) &&
          !memcmp(r2 + np, gen, (ng - 1) * sizeof *r2) && r2[np + ng - 1] == 200007);
    free(prompt);
    free(gen);
    free(r2);
    mnv_chat_parser_free(p);
    mnv_chat_free(c);
}

/* Random and mutated token streams: no crash, consistent events, valid UTF-8. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!l || i + l > n) return false;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        i += l;
    }
    return true;
}

static void test_fuzz_ids(const mnv_tokenizer *tok) {
    static const char *const WORDS[] = {"analysis", "final", "commentary", " to", "=", "functions", ".get",
                                        "assistant", "user", " json", " ", "\n", "Hello", "\xF0\x9F\x92\x96"};
    int32_t alpha[64];
    size_t na = 0;
    static const int32_t SPECIAL[] = {200002, 200003, 200005, 200006, 200007, 200008, 200012, 199998, 199999,
                                      200014, 200018, 9552, -7, 201088, 2147483647};
    for (size_t i = 0; i < sizeof SPECIAL / sizeof *SPECIAL; i++) alpha[na++] = SPECIAL[i];
    for (size_t i = 0; i < sizeof WORDS / sizeof *WORDS; i++) {
        int32_t w[8];
        size_t n = 0;
        if (mnv_tokenize(tok, WORDS[i], strlen(WORDS[i]), 0, w, 8, &n) == MNV_OK)
            for (size_t k = 0; k < n && na < 64; k++) alpha[na++] = w[k];
    }
    static const int32_t DOCS[] = {200005, 35644, 200008, 1844, 31064, 25, 392, 200007, 200006, 173781, 200005,
                                   17196, 200008, 17, 659, 220, 17, 314, 220, 19, 13, 200002};
    int32_t n_vocab = mnv_tokenizer_n_vocab(tok), seq[128];
    int bad = 0;
    for (int it = 0; it < 4000; it++) {
        size_t n = 0;
        if (it % 2) { /* a mutated valid stream */
            n = sizeof DOCS / sizeof *DOCS;
            memcpy(seq, DOCS, sizeof DOCS);
            for (int m = t_randint(1, 4); m > 0; m--) seq[t_randint(0, (int)n - 1)] = alpha[t_randint(0, (int)na - 1)];
        } else {
            n = (size_t)t_randint(0, 127);
            for (size_t i = 0; i < n; i++)
                seq[i] = t_randint(0, 2) ? alpha[t_randint(0, (int)na - 1)] : t_randint(0, n_vocab - 1);
        }
        collector col;
        mnv_chat_parser *p = new_parser(tok, t_randint(0, 1), &col);
        for (size_t i = 0; i < n; i++) {
            if (mnv_chat_parser_push(p, seq[i]) != MNV_OK) bad++;
            if (t_randint(0, 60) == 0) mnv_chat_parser_finish(p);
        }
        if (mnv_chat_parser_finish(p) != MNV_OK) bad++;
        size_t nm = mnv_chat_parser_n_messages(p);
        if (!col.deltas_match || col.nested || (size_t)col.n_message != nm || nm > n + 1) bad++;
        for (size_t i = 0; i < nm; i++) {
            mnv_chat_message m;
            mnv_chat_parser_message(p, i, &m, NULL);
            if (!valid_utf8((const unsigned char *)m.content, m.content_len)) bad++;
        }
        mnv_chat_parser_free(p);
    }
    CHECKF(bad == 0, "%d problems in 4000 random token streams", bad);
}

/* ---- a random-weight model with the gpt-oss tokenizer: generate, and `minerva chat` ------------- */

static bool copy_file(const char *src, const char *dst) {
    size_t n = 0;
    char *d = read_all(src, &n);
    FILE *f = d ? fopen(dst, "wb") : NULL;
    bool ok = f && fwrite(d, 1, n, f) == n;
    if (f) ok &= fclose(f) == 0;
    free(d);
    return ok;
}

/* A one-layer random llama with the gpt-oss tokenizer. Its vocabulary is the
 * tokenizer's 200019 ids, not gpt-oss's 201088: mnv_generate fails when it
 * samples an id the tokenizer cannot decode (the reserved ids above 200018). */
static bool make_model(const char *dir) {
    char cfg[600], path[600];
    snprintf(cfg, sizeof cfg, "%s.config.json", dir);
    FILE *f = fopen(cfg, "w");
    if (!f) return false;
    fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 16, "
               "\"intermediate_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
               "\"num_key_value_heads\": 1, \"head_dim\": 8, \"vocab_size\": 200019, \"rms_norm_eps\": 1e-05, "
               "\"max_position_embeddings\": 2048, \"rope_theta\": 10000.0, \"tie_word_embeddings\": true, "
               "\"bos_token_id\": 199998, \"eos_token_id\": [200002, 199999, 200012], \"hidden_act\": \"silu\"}\n");
    fclose(f);
    mnv_synth_params sp = mnv_synth_params_default();
    sp.config_path = cfg;
    sp.out_dir = dir;
    sp.seed = 7;
    bool ok = mnv_synthesize(&sp) == MNV_OK;
    if (!ok) fprintf(stderr, "synth: %s\n", mnv_last_error());
    remove(cfg);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ok = ok && copy_file(GPTOSS_TOKENIZER, path);
    return ok;
}

typedef struct {
    mnv_chat_parser *p;
    int n;
} gen_ctx;

static int on_token(void *ud, int32_t token, const char *text, size_t len) {
    gen_ctx *g = ud;
    g->n++;
    return mnv_chat_parser_push(g->p, token) != MNV_OK || mnv_chat_parser_stopped(g->p);
}

static void test_generate(const char *dir) {
    mnv_model *model = NULL;
    mnv_model_params mp = mnv_model_params_default();
    mp.n_threads = 1;
    CHECK(mnv_model_load(dir, &mp, &model) == MNV_OK);
    if (!model) return;
    const mnv_tokenizer *tok = mnv_model_tokenizer(model);
    mnv_session *s = NULL;
    CHECK(tok && mnv_session_create(model, NULL, &s) == MNV_OK);
    mnv_chat *c = new_chat(NULL);
    add(c, MNV_ROLE_USER, NULL, "Hello!");
    size_t n = 0;
    int32_t *ids = render_ids(c, tok, NULL, &n);
    collector col;
    gen_ctx g = {new_parser(tok, 1, &col), 0};
    mnv_chat_tokens t;
    mnv_chat_tokens_lookup(tok, &t);
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = 40;
    gp.eos_ids = t.stop_ids;
    gp.n_eos = 2;
    gp.on_token = on_token;
    gp.user_data = &g;
    mnv_generate_result r;
    CHECK(ids && s && mnv_generate(s, ids, n, &gp, &r) == MNV_OK);
    CHECK(mnv_chat_parser_finish(g.p) == MNV_OK && g.n == r.n_generated && g.n > 0);
    CHECK(mnv_chat_parser_n_messages(g.p) >= 1 && col.deltas_match);
    mnv_chat_parser_free(g.p);
    free(ids);
    mnv_chat_free(c);
    mnv_session_free(s);
    mnv_model_free(model);
}

static int run_cli(const char *cli, const char *args, const char *input, const char *out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "printf '%s' | %s chat %s > %s 2>&1", input, cli, args, out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_cli(const char *dir) {
    const char *cli = getenv("MNV_CLI");
    if (!cli || !exists(cli)) {
        printf("SKIP: minerva chat (MNV_CLI not set)\n");
        return;
    }
    char out[600], args[800];
    snprintf(out, sizeof out, "%s.out", dir);
    snprintf(args, sizeof args, "-m %s -n 12 --seed 3 --temp 1 -t 1 --stats --date 2025-01-01", dir);
    int rc = run_cli(cli, args, "Hello\\n\\n/reset\\nWhat is 2 + 2?\\nAnd 3?\\n/exit\\nnot read\\n", out);
    size_t n = 0;
    char *o = read_all(out, &n);
    CHECKF(rc == 0, "minerva chat exit code %d: %s", rc, o ? o : "");
    int turns = 0;
    for (char *q = o; q && (q = strstr(q, "[prompt ")); q++) turns++;
    CHECKF(turns == 3, "minerva chat: %d turns reported", turns);
    free(o);
    snprintf(args, sizeof args, "-m %s -n 4 --hide-reasoning --reasoning high --developer 'Be brief.' -c 40", dir);
    rc = run_cli(cli, args, "a\\nb\\nc\\nd\\ne\\nf\\ng\\nh\\n", out);
    o = read_all(out, &n);
    CHECKF(rc == 1 && o && strstr(o, "fills the context"), "a full context is reported: rc %d: %s", rc, o ? o : "");
    free(o);
    snprintf(args, sizeof args, "-m %s --reasoning extreme", dir);
    CHECK(run_cli(cli, args, "", out) == 2);
    const char *root = getenv("MNV_ROOT");
    char stories[600];
    snprintf(stories, sizeof stories, "%s/models/stories260K", root ? root : "..");
    if (exists(stories)) {
        snprintf(args, sizeof args, "-m %s", stories);
        rc = run_cli(cli, args, "hi\\n", out);
        o = read_all(out, &n);
        CHECKF(rc == 1 && o && strstr(o, "harmony"), "a tokenizer without harmony tokens is refused: %s", o ? o : "");
        free(o);
    }
    remove(out);
}

static void test_with_tokenizer(void) {
    mnv_tokenizer *tok = NULL;
    if (!exists(GPTOSS_TOKENIZER) || mnv_tokenizer_load(GPTOSS_TOKENIZER, &tok) != MNV_OK) {
        printf("SKIP: gpt-oss tokenizer tests (%s not found)\n", GPTOSS_TOKENIZER);
        return;
    }
    test_ids(tok);
    test_parser_ids(tok);
    test_round_trip(tok);
    test_extends(tok);
    test_fuzz_ids(tok);
    mnv_tokenizer_free(tok);

    char dir[] = "/tmp/mnv_harmony_XXXXXX";
    if (!mkdtemp(dir)) return;
    if (make_model(dir)) {
        test_generate(dir);
        test_cli(dir);
    } else {
        CHECKF(false, "cannot build the random gpt-oss-tokenizer model");
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

int main(void) {
    t_seed();
    test_simple_convos();
    test_system_messages();
    test_tools();
    test_history();
    test_tool_messages();
    test_namespaces();
    test_schemas();
    test_api_errors();
    test_parser_text();
    test_parser_reference_cases();
    test_parser_malformed();
    test_fuzz_text();
    test_parser_header_limit();
    test_parser_header_limit_utf8();
    test_parser_fixtures_chunked();
    test_with_tokenizer();
    return t_done();
}
