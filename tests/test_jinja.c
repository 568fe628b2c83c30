/* The Jinja interpreter and chat templates: unit tests of the language,
 * the peer test cases (llama.cpp's and huggingface.js's chat-template
 * suites) byte for byte, the llama3 and qwen3 templates on a set of requests
 * against outputs of Python Jinja2 with transformers' settings
 * (fixtures/chat/gen_expected.py), and the tool-call parser. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat_template.h"
#include "chat/jinja.h"
#include "chat/tool_calls.h"
#include "core/core.h"
#include "test.h"

/* renders src with vars (JSON text, may be NULL); NULL on error (the
 * message in mnv_last_error) */
static char *render(const char *src, const char *vars_json) {
    mnv__jinja *t = NULL;
    if (mnv__jinja_parse("test", src, strlen(src), &t) != MNV_OK) return NULL;
    cJSON *vars = vars_json ? cJSON_Parse(vars_json) : NULL;
    char *out = NULL;
    mnv__jinja_render(t, vars, NULL, &out);
    cJSON_Delete(vars);
    mnv__jinja_free(t);
    return out;
}

static void expect(const char *src, const char *vars, const char *want, int line) {
    char *got = render(src, vars);
    if (!got) {
        t_fail++;
        fprintf(stderr, "test_jinja.c:%d: %s: error: %s\n", line, src, mnv_last_error());
        return;
    }
    if (strcmp(got, want) != 0) {
        t_fail++;
        fprintf(stderr, "test_jinja.c:%d: %s\n  got:  [%s]\n  want: [%s]\n", line, src, got, want);
    } else {
        t_pass++;
    }
    free(got);
}
#define EXPECT(src, vars, want) expect(src, vars, want, __LINE__)

/* an error whose message contains `needle` */
static void expect_err(const char *src, const char *vars, const char *needle, int line) {
    char *got = render(src, vars);
    if (got) {
        t_fail++;
        fprintf(stderr, "test_jinja.c:%d: %s: expected an error, got [%s]\n", line, src, got);
        free(got);
        return;
    }
    if (!strstr(mnv_last_error(), needle)) {
        t_fail++;
        fprintf(stderr, "test_jinja.c:%d: %s: error [%s] lacks [%s]\n", line, src, mnv_last_error(), needle);
    } else {
        t_pass++;
    }
}
#define EXPECT_ERR(src, vars, needle) expect_err(src, vars, needle, __LINE__)

static void test_language(void) {
    /* output, literals, Python's str() */
    EXPECT("Hello {{ name }}!", "{\"name\": \"World\"}", "Hello World!");
    EXPECT("{{ 1 }} {{ 1.5 }} {{ 2.0 }} {{ true }} {{ none }} {{ 'a' ~ 1 }}", NULL, "1 1.5 2.0 True None a1");
    EXPECT("{{ [1, 'a', none, true] }} {{ {'k': 'v'} }} {{ (1,) }}", NULL, "[1, 'a', None, True] {'k': 'v'} (1,)");
    EXPECT("{{ \"it's\" }}|{{ ['it\\'s'] }}|{{ ['a\"b'] }}", NULL, "it's|[\"it's\"]|['a\"b']");
    EXPECT("{{ 1e20 }} {{ 0.0001 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 123456789012345.0 }}", NULL,
           "1e+20 0.0001 1e-05 0.30000000000000004 1e+16 123456789012345.0");
    EXPECT("{{ undefined_name }}|{{ x.y }}", "{\"x\": {}}", "|");
    /* arithmetic with Python semantics */
    EXPECT("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }}", NULL,
           "3 -4 1 2 3.5 1024 7");
    EXPECT("{{ 'ab' * 3 }} {{ [1] + [2] }} {{ 'a' + 'b' }} {{ -(3) }} {{ 10 - 2 - 3 }}", NULL, "ababab [1, 2] ab -3 5");
    EXPECT("{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'x' in 'xyz' }} {{ 2 not in [1] }}",
           NULL, "True True True False True True");
    EXPECT("{{ 0 or 'b' }} {{ 'a' and 'b' }} {{ not [] }} {{ 'y' if 0 else 'n' }} {{ 'y' if 1 }}", NULL,
           "b b True n y");
    /* precedence and associativity: or < and < not < compare < + - < ~ < * / // % < ** */
    EXPECT("{{ 2 ** 3 ** 2 }} {{ 20 - 2 * 3 // 2 % 4 }} {{ 2 * 3 ~ 4 }} {{ 1 ~ 2 ~ 3 * 2 }} {{ 8 / 2 / 2 }}", NULL,
           "64 17 64 126 2.0");
    EXPECT("{{ not 1 == 2 }} {{ 1 < 2 == 2 }} {{ 'x' not in 'ab' ~ 'x' }} {{ 1 in [1] and not 2 in [1] or 0 }}",
           NULL, "True True False True");
    EXPECT("{{ 0 or 0 and 1 }}|{{ 1 or 0 and 0 }}|{{ not 0 and 0 }}|{{ (1 - 2) - 3 }}|{{ 1 - (2 - 3) }}", NULL,
           "0|1|0|-4|2");
    /* subscripts and slices, by code point */
    EXPECT("{{ s[0] }}{{ s[-1] }}|{{ s[1:3] }}|{{ s[::-1] }}|{{ l[1:] }}|{{ l[::2] }}|{{ l[-2:] }}",
           "{\"s\": \"h\\u00e9llo\", \"l\": [1, 2, 3, 4]}", "ho|\xc3\xa9l|oll\xc3\xa9h|[2, 3, 4]|[1, 3]|[3, 4]");
    EXPECT("{{ d['a'] }}{{ d.a }}{{ d.get('b', 'z') }}{{ l[5] }}", "{\"d\": {\"a\": 1}, \"l\": []}", "11z");
    /* statements */
    EXPECT("{% if a %}A{% elif b %}B{% else %}C{% endif %}", "{\"a\": 0, \"b\": 1}", "B");
    EXPECT("{% for x in l %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
           "{\"l\": [\"a\", \"b\", \"c\"]}", "1a,2b,3c");
    EXPECT("{% for x in l %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.length }} {% endfor %}",
           "{\"l\": [1, 2]}", "02True2 11False2 ");
    EXPECT("{% for x in [] %}a{% else %}empty{% endfor %}", NULL, "empty");
    EXPECT("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
           NULL, "0134");
    EXPECT("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "{\"d\": {\"b\": 1, \"a\": 2}}", "b=1;a=2;");
    EXPECT("{% for x in l if x > 1 %}{{ x }}{{ loop.index }}{% endfor %}", "{\"l\": [1, 2, 3]}", "2132");
    EXPECT("{% for x in 'ab' %}{{ x }}.{% endfor %}{% for k in {'a': 1} %}{{ k }}{% endfor %}", NULL, "a.b.a");
    /* scoping: a loop's sets stay inside it; namespace() carries out */
    EXPECT("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{% endfor %}{{ x }}", NULL, "1");
    EXPECT("{% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}", NULL,
           "4");
    EXPECT("{% if true %}{% set y = 'in' %}{% endif %}{{ y }}", NULL, "in");
    EXPECT("{% set a, b = 1, 2 %}{{ b }}{{ a }}", NULL, "21");
    EXPECT("{% set t %}hi {{ 1 + 1 }}{% endset %}[{{ t }}]", NULL, "[hi 2]");
    EXPECT("{% set t | upper %}abc{% endset %}{{ t }}", NULL, "ABC");
    /* macros and call blocks */
    EXPECT("{% macro g(n, p='!') %}hi {{ n }}{{ p }}{% endmacro %}{{ g('x') }} {{ g('y', p='?') }}", NULL,
           "hi x! hi y?");
    EXPECT("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", NULL, "321");
    EXPECT("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}", NULL, "<in>");
    EXPECT("{% filter upper %}abc{% endfilter %}", NULL, "ABC");
    /* whitespace control and transformers' trim_blocks + lstrip_blocks */
    EXPECT("a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc");
    EXPECT("{% if true %}\nx\n{% endif %}\n", NULL, "x\n");
    EXPECT("  {% if true %}\n  x\n  {% endif %}\ny", NULL, "  x\ny");
    EXPECT("a {{ 'b' }}\nc", NULL, "a b\nc");
    EXPECT("{# comment #}\nx{#- c -#} y", NULL, "xy");
    EXPECT("  {%+ if true %}k{% endif %}", NULL, "  k");
    /* tests */
    EXPECT("{{ x is defined }}{{ y is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}"
           "{{ [] is iterable }}{{ 3 is odd }}{{ 4 is divisibleby 2 }}{{ false is false }}{{ 1 is number }}",
           "{\"x\": 1}", "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrue");
    EXPECT("{{ x is not none }}{{ x is sameas false }}{{ 1 is integer }}{{ 1.0 is float }}{{ 'a' is in 'ab' }}",
           "{\"x\": false}", "TrueTrueTrueTrueTrue");
    /* filters */
    EXPECT("{{ '  a b  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ [1, 2] | length }}|{{ 'h\xc3\xa9' | length }}", NULL,
           "a b|a|2|2");
    EXPECT("{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}{{ [3, 1, 2] | sort | join(',') }}{{ [1, 2] | join }}", NULL,
           "321,2,312");
    EXPECT("{{ users | map(attribute='n') | join(' ') }}|{{ users | selectattr('a') | map(attribute='n') | list }}",
           "{\"users\": [{\"n\": \"x\", \"a\": true}, {\"n\": \"y\", \"a\": false}]}", "x y|['x']");
    EXPECT("{{ users | selectattr('n', 'equalto', 'y') | list | length }}{{ users | rejectattr('a') | list | length }}",
           "{\"users\": [{\"n\": \"x\", \"a\": true}, {\"n\": \"y\", \"a\": false}]}", "11");
    EXPECT("{{ [1, 2, 3, 4] | select('odd') | list }}{{ [1, 0, 2] | reject | list }}{{ ['a', 'b'] | map('upper') | list }}",
           NULL, "[1, 3][0]['A', 'B']");
    EXPECT("{{ x | default('d') }}{{ '' | default('e', true) }}{{ 0 | default('f') }}", NULL, "de0");
    EXPECT("{{ 'hello world' | title }}{{ 'aBc' | upper }}{{ 'aBc' | lower }}{{ 'aBC' | capitalize }}", NULL,
           "Hello WorldABCabcAbc");
    EXPECT("{{ 'aaa' | replace('a', 'b', 2) }}{{ 42 | string }}{{ '12' | int + 1 }}{{ 'x' | int }}{{ 2.7 | int }}", NULL,
           "bba4213" "0" "2");
    EXPECT("{{ {'b': 1, 'a': 2} | dictsort }}{{ {'b': 1} | items | list }}{{ [1, 2, 1] | unique | list }}", NULL,
           "[('a', 2), ('b', 1)][('b', 1)][1, 2]");
    EXPECT("{{ 2.567 | round(2) }}{{ 2.5 | round }}{{ 3.5 | round }}{{ 2.1 | round(0, 'ceil') }}", NULL,
           "2.572.04.03.0");
    EXPECT("{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}", NULL, "a\n  b\n\n  c|  a\n  b");
    EXPECT("{{ [3, 1] | max }}{{ [3, 1] | min }}{{ [1, 2] | sum }}{{ -3 | abs }}{{ 'ab' | reverse }}", NULL, "3133ba");
    EXPECT("{{ '<a>' | e }}{{ '%s-%d' | format('x', 3) }}{{ 'a b' | wordcount }}", NULL, "&lt;a&gt;x-32");
    /* tojson: transformers' settings (no ASCII escaping, Python separators) */
    EXPECT("{{ d | tojson }}", "{\"d\": {\"a\": [1, 2.5, true, null], \"b\": \"\\u00e9\\\"\\n\"}}",
           "{\"a\": [1, 2.5, true, null], \"b\": \"\xc3\xa9\\\"\\n\"}");
    EXPECT("{{ d | tojson(indent=2) }}", "{\"d\": {\"a\": [1], \"b\": {}}}", "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
    EXPECT("{{ d | tojson(sort_keys=true) }}{{ 'x' | tojson }}", "{\"d\": {\"b\": 1, \"a\": 2}}",
           "{\"a\": 2, \"b\": 1}\"x\"");
    EXPECT("{{ '\xc3\xa9' | tojson(true) }}", NULL, "\"\\u00e9\"");
    /* string methods */
    EXPECT("{{ ' a '.strip() }}|{{ 'xa'.lstrip('x') }}|{{ 'a\\n'.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}",
           NULL, "a|a|a|['a', 'b', '', 'c']|['a', 'b']");
    EXPECT("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'ab'.upper() }}{{ 'a-b'.replace('-', '+') }}",
           NULL, "TrueTrueABa+b");
    EXPECT("{{ 'hello world'.title() }}|{{ '{} and {}'.format(1, 'b') }}|{{ '{x}!'.format(x=2) }}|{{ ', '.join(['a', 'b']) }}",
           NULL, "Hello World|1 and b|2!|a, b");
    EXPECT("{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}{{ 'abcb'.count('b') }}{{ 'x.py'.removesuffix('.py') }}",
           NULL, "132x");
    EXPECT("{{ d.keys() | list }}{{ d.values() | list }}{{ d.get('zz') }}", "{\"d\": {\"a\": 1}}", "['a'][1]None");
    /* globals */
    EXPECT("{{ range(3) | list }}{{ range(1, 7, 2) | list }}{{ range(3, 0, -1) | list }}", NULL,
           "[0, 1, 2][1, 3, 5][3, 2, 1]");
    EXPECT("{{ dict(a=1) }}{{ namespace(a=1).a }}", NULL, "{'a': 1}1");
    char *t = render("{{ strftime_now('%Y') }}", NULL);
    CHECK(t && strlen(t) == 4 && t[0] >= '2');
    free(t);
}

static void test_errors(void) {
    EXPECT_ERR("{{ raise_exception('Only user and assistant roles') }}", NULL, "Only user and assistant roles");
    EXPECT_ERR("line1\n{% if x %}\n{{ raise_exception('boom') }}{% endif %}", "{\"x\": 1}", "line 3: boom");
    EXPECT_ERR("{{ 1 + 'a' }}", NULL, "unsupported operand");
    EXPECT_ERR("{{ x.y.z }}", "{\"x\": {}}", "has no attribute 'y'");
    EXPECT_ERR("{{ [].append(1) }}", NULL, "unsafe");
    EXPECT_ERR("{{ 1 | nosuchfilter }}", NULL, "no filter named 'nosuchfilter'");
    EXPECT_ERR("{{ 1 / 0 }}", NULL, "division by zero");
    EXPECT_ERR("{{ range(1000000) }}", NULL, "range too big");
    EXPECT_ERR("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, "nested deeper");
    EXPECT_ERR("{% set l = range(4000) %}{% for i in l %}{% for j in l %}{% endfor %}{% endfor %}", NULL, "iterations");
    EXPECT_ERR("{% set s = 'x' * 1000 %}{% for i in range(100000) %}{{ s }}{% endfor %}", NULL, "output is longer");
    EXPECT_ERR("{{ undefined_fn() }}", NULL, "'undefined_fn' is undefined");
    /* syntax errors name the line */
    EXPECT_ERR("a\n{% if x %}", NULL, "expected 'endif'");
    EXPECT_ERR("{{ 'abc }}", NULL, "line 1: unterminated string");
    EXPECT_ERR("{% for %}{% endfor %}", NULL, "expected a name");
    EXPECT_ERR("x\ny\n{{ 1 + }}", NULL, "line 3");
    EXPECT_ERR("{{ 1\n+ 'a' }}", NULL, "line 2");                /* an operator's line */
    EXPECT_ERR("{{ 1\n< 'a' }}", NULL, "line 1");                /* a comparison's: its first operand's */
    EXPECT_ERR("{% endif %}", NULL, "unexpected statement 'endif'");
    char deep[1200];
    size_t k = (size_t)snprintf(deep, sizeof deep, "{{ ");
    for (int d = 0; d < 300; d++) deep[k++] = '(';
    deep[k++] = '1';
    for (int d = 0; d < 300; d++) deep[k++] = ')';
    snprintf(deep + k, sizeof deep - k, " }}");
    EXPECT_ERR(deep, NULL, "nested too deeply");
}

/* ---- the peer cases: each line {name, chat_template, vars, expected} ---- */
static char *read_all(const char *path) {
    char *data = NULL;
    size_t len;
    if (mnv_read_file(path, &data, &len) != MNV_OK) return NULL;
    return data;
}

static void test_peer_cases(void) {
    char *data = read_all("fixtures/chat/chat_template_cases.jsonl");
    CHECKF(data != NULL, "fixtures/chat/chat_template_cases.jsonl: %s", mnv_last_error());
    if (!data) return;
    int n = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
        const char *tpl = cJSON_GetStringValue(cJSON_GetObjectItem(c, "chat_template"));
        const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(c, "expected"));
        CHECK(name && tpl && want);
        if (!name || !tpl || !want) {
            cJSON_Delete(c);
            continue;
        }
        mnv__jinja *t = NULL;
        char *got = NULL;
        if (mnv__jinja_parse(name, tpl, strlen(tpl), &t) == MNV_OK)
            mnv__jinja_render(t, cJSON_GetObjectItem(c, "vars"), NULL, &got);
        CHECKF(got != NULL, "%s: %s", name, mnv_last_error());
        if (got) CHECKF(strcmp(got, want) == 0, "%s:\n  got:  [%s]\n  want: [%s]", name, got, want);
        free(got);
        mnv__jinja_free(t);
        cJSON_Delete(c);
        n++;
    }
    CHECKF(n >= 10, "only %d peer cases", n);
    free(data);
}

/* ---- jinja_cases.json against jinja_expected.json (Python Jinja2) ---- */
static void test_language_cases(void) {
    char *ct = read_all("fixtures/chat/jinja_cases.json"), *et = read_all("fixtures/chat/jinja_expected.json");
    cJSON *cases = ct ? cJSON_Parse(ct) : NULL, *exp = et ? cJSON_Parse(et) : NULL;
    CHECKF(cJSON_IsArray(cases) && cJSON_IsArray(exp) && cJSON_GetArraySize(cases) == cJSON_GetArraySize(exp),
           "fixtures/chat/jinja_cases.json, jinja_expected.json");
    int i = 0;
    for (const cJSON *c = cases ? cases->child : NULL, *e = exp ? exp->child : NULL; c && e;
         c = c->next, e = e->next, i++) {
        const char *src = cJSON_GetObjectItem(c, "src")->valuestring;
        mnv__jinja *t = NULL;
        char *got = NULL;
        mnv_status st = mnv__jinja_parse("case", src, strlen(src), &t);
        if (st == MNV_OK) st = mnv__jinja_render(t, cJSON_GetObjectItem(c, "vars"), NULL, &got);
        if (cJSON_IsString(e)) {
            CHECKF(st == MNV_OK, "case %d [%s]: %s", i, src, mnv_last_error());
            if (got) CHECKF(strcmp(got, e->valuestring) == 0, "case %d [%s]:\n  got:  [%s]\n  want: [%s]", i, src, got,
                            e->valuestring);
        } else {
            CHECKF(st != MNV_OK && mnv_last_error()[0], "case %d [%s]: an error expected (%s), got [%s]", i, src,
                   cJSON_GetObjectItem(e, "error")->valuestring, got ? got : "");
        }
        free(got);
        mnv__jinja_free(t);
    }
    CHECK(i >= 90);
    cJSON_Delete(cases);
    cJSON_Delete(exp);
    free(ct);
    free(et);
}

/* ---- llama3 and qwen3 on requests.json, against expected.json ---- */
static void test_model_templates(void) {
    char *reqs_text = read_all("fixtures/chat/requests.json");
    char *exp_text = read_all("fixtures/chat/expected.json");
    cJSON *reqs = reqs_text ? cJSON_Parse(reqs_text) : NULL;
    cJSON *exp = exp_text ? cJSON_Parse(exp_text) : NULL;
    CHECKF(cJSON_IsArray(reqs) && cJSON_IsObject(exp), "fixtures/chat/requests.json, expected.json");
    static const char *const models[] = {"llama3", "qwen3"};
    for (int m = 0; m < 2 && reqs && exp; m++) {
        char dir[64];
        snprintf(dir, sizeof dir, "fixtures/chat/%s", models[m]);
        mnv__chat_template *t = NULL;
        mnv_status st = mnv__chat_template_load(dir, &t);
        CHECKF(st == MNV_OK && t, "%s: %s", dir, mnv_last_error());
        if (!t) continue;
        const cJSON *want_all = cJSON_GetObjectItem(exp, models[m]);
        int n = 0;
        for (const cJSON *c = reqs->child; c; c = c->next, n++) {
            const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
            const cJSON *want = cJSON_GetObjectItem(want_all, name);
            int agp = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
            char *got = NULL;
            st = mnv__chat_template_render(t, cJSON_GetObjectItem(c, "request"), agp, &got);
            if (cJSON_IsString(want)) {
                CHECKF(st == MNV_OK && got, "%s %s: %s", models[m], name, mnv_last_error());
                if (got)
                    CHECKF(strcmp(got, want->valuestring) == 0, "%s %s:\n  got:  [%s]\n  want: [%s]", models[m], name,
                           got, want->valuestring);
            } else {
                CHECKF(st == MNV_ERR_INVALID_ARG, "%s %s: an error expected", models[m], name);
            }
            free(got);
        }
        CHECK(n >= 13);
        mnv__chat_template_free(t);
    }
    cJSON_Delete(reqs);
    cJSON_Delete(exp);
    free(reqs_text);
    free(exp_text);
}

static void test_template_loading(void) {
    mnv__chat_template *t = (mnv__chat_template *)1;
    /* a directory without a template: no template, no error */
    CHECK(mnv__chat_template_load("fixtures/chat", &t) == MNV_OK && t == NULL);
    /* a request that is not a chat request */
    CHECK(mnv__chat_template_load("fixtures/chat/qwen3", &t) == MNV_OK && t);
    char *out = (char *)1;
    cJSON *bad = cJSON_Parse("{\"messages\": 3}");
    CHECK(mnv__chat_template_render(t, bad, 1, &out) == MNV_ERR_INVALID_ARG && out == NULL);
    CHECK(strstr(mnv_last_error(), "messages") != NULL);
    cJSON_Delete(bad);
    bad = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}");
    CHECK(mnv__chat_template_render(t, bad, 1, &out) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "messages[0].content[0]") != NULL);
    cJSON_Delete(bad);
    mnv__chat_template_free(t);

    /* chat_template.jinja; a template that concatenates "arguments" as a
     * string gets the string OpenAI sent (the object form fails) */
    CHECKF(mnv__chat_template_load("fixtures/chat/string_args", &t) == MNV_OK && t, "%s", mnv_last_error());
    cJSON *req = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
                             "\"content\": null, \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", "
                             "\"arguments\": \"{\\\"a\\\": 1}\"}}]}]}");
    out = NULL;
    CHECKF(t && mnv__chat_template_render(t, req, 1, &out) == MNV_OK, "%s", mnv_last_error());
    CHECKF(out && strcmp(out, "user;assistant f({\"a\": 1});") == 0, "[%s]", out ? out : "");
    free(out);
    cJSON_Delete(req);
    mnv__chat_template_free(t);
}

/* ---- one loaded template rendered from several threads at once ---- */
typedef struct {
    const mnv__chat_template *t;
    const cJSON *req;
    const char *want;
    int bad;
} render_task;

static void *render_many(void *arg) {
    render_task *k = arg;
    for (int i = 0; i < 40; i++) {
        char *out = NULL;
        if (mnv__chat_template_render(k->t, k->req, 1, &out) != MNV_OK || strcmp(out, k->want)) k->bad++;
        free(out);
    }
    return NULL;
}

static void test_threads(void) {
    mnv__chat_template *t = NULL;
    CHECK(mnv__chat_template_load("fixtures/chat/qwen3", &t) == MNV_OK && t);
    char *rt = read_all("fixtures/chat/requests.json");
    cJSON *reqs = rt ? cJSON_Parse(rt) : NULL;
    const cJSON *req = NULL;
    for (const cJSON *c = reqs ? reqs->child : NULL; c; c = c->next)
        if (!strcmp(cJSON_GetObjectItem(c, "name")->valuestring, "tool_round_trip")) req = cJSON_GetObjectItem(c, "request");
    char *want = NULL;
    CHECK(t && req && mnv__chat_template_render(t, req, 1, &want) == MNV_OK);
    if (want) {
        enum { N = 4 };
        pthread_t th[N];
        render_task tasks[N];
        for (int i = 0; i < N; i++) {
            tasks[i] = (render_task){t, req, want, 0};
            CHECK(pthread_create(&th[i], NULL, render_many, &tasks[i]) == 0);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            CHECKF(tasks[i].bad == 0, "thread %d: %d renders differ", i, tasks[i].bad);
        }
    }
    free(want);
    cJSON_Delete(reqs);
    free(rt);
    mnv__chat_template_free(t);
}

/* ---- tool calls ---- */
static void check_parse(const char *text, const char *want_content, const char *want_reasoning,
                        const char *want_calls, int line) {
    char *content, *reasoning;
    cJSON *calls;
    mnv_status st = mnv__chat_parse_output(text, &content, &reasoning, &calls);
    CHECKF(st == MNV_OK, "line %d", line);
    if (st != MNV_OK) return;
    CHECKF(strcmp(content, want_content) == 0, "line %d: content [%s], want [%s]", line, content, want_content);
    CHECKF(want_reasoning ? reasoning && strcmp(reasoning, want_reasoning) == 0 : reasoning == NULL,
           "line %d: reasoning [%s], want [%s]", line, reasoning ? reasoning : "(null)",
           want_reasoning ? want_reasoning : "(null)");
    char *cs = cJSON_PrintUnformatted(calls);
    CHECKF(strcmp(cs, want_calls) == 0, "line %d: calls %s, want %s", line, cs, want_calls);
    free(cs);
    free(content);
    free(reasoning);
    cJSON_Delete(calls);
}
#define CHECK_PARSE(t, c, r, k) check_parse(t, c, r, k, __LINE__)

static void test_tool_calls(void) {
    CHECK_PARSE("Hello there.", "Hello there.", NULL, "[]");
    CHECK_PARSE("<think>\nLet me see.\n</think>\n\nThe answer is 4.", "The answer is 4.", "Let me see.", "[]");
    CHECK_PARSE("reasoning whose opening tag was in the prompt\n</think>\n\nDone", "Done",
                "reasoning whose opening tag was in the prompt", "[]");
    CHECK_PARSE("<think>\ncut short", "", "cut short", "[]");
    CHECK_PARSE("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "", NULL,
                "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]");
    CHECK_PARSE("<think>t</think>Checking.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
                "<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>",
                "Checking.", "t",
                "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"a\",\"arguments\":\"{}\"}},"
                "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"b\",\"arguments\":\"{\\\"x\\\": 1}\"}}]");
    /* malformed calls stay in the content; good ones around them are taken */
    CHECK_PARSE("<tool_call>{not json}</tool_call> and <tool_call>{\"name\": \"n\"}</tool_call>",
                "<tool_call>{not json}</tool_call> and", NULL,
                "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"n\",\"arguments\":\"{}\"}}]");
    CHECK_PARSE("<tool_call>{\"arguments\": {}}</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>", NULL, "[]");
    /* an unclosed last call (generation stopped at the tag) */
    CHECK_PARSE("<tool_call>\n{\"name\": \"x\", \"arguments\": {\"k\": [1, 2]}}\n", "", NULL,
                "[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"x\",\"arguments\":\"{\\\"k\\\":[1,2]}\"}}]");
    CHECK_PARSE("", "", NULL, "[]");
}

int main(void) {
    test_language();
    test_errors();
    test_peer_cases();
    test_language_cases();
    test_model_templates();
    test_template_loading();
    test_tool_calls();
    test_threads();
    return t_done();
}
