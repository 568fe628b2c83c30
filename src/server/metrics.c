/* The server's counters and histograms, and /metrics in the Prometheus text
 * format: requests by status, tokens in and out, time to first token and
 * per-token latency, running and waiting requests, the KV pool, prefix-cache
 * hits. */
#include <string.h>

#include "server/server_int.h"

static void hist_init(srv_hist *h, const double *le) {
    memset(h, 0, sizeof *h);
    memcpy(h->le, le, sizeof h->le);
}

static void hist_add(srv_hist *h, double v) {
    int i = 0;
    while (i < SRV_N_BUCKETS && v > h->le[i]) i++;
    h->count[i]++;
    h->sum += v;
    h->n++;
}

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    static const double ttft[SRV_N_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    static const double itl[SRV_N_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.25, 0.5, 1, 2.5};
    hist_init(&m->ttft, ttft);
    hist_init(&m->itl, itl);
}

void srv_metrics_request(srv_metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    if (status >= 0 && status < 600) m->by_status[status]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_tokens(srv_metrics *m, int64_t prompt, int64_t completion, double ttft, double per_token,
                        bool cancelled) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)prompt;
    m->completion_tokens += (uint64_t)completion;
    m->cancelled += cancelled;
    if (completion > 0 && ttft > 0) hist_add(&m->ttft, ttft);
    if (completion > 1 && per_token > 0) hist_add(&m->itl, per_token);
    pthread_mutex_unlock(&m->mu);
}

static void hist_text(srv_buf *b, const char *name, const char *help, const srv_hist *h) {
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < SRV_N_BUCKETS; i++) {
        cum += h->count[i];
        srv_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    srv_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)h->n, name,
                   h->sum, name, (unsigned long long)h->n);
}

static void gauge(srv_buf *b, const char *name, const char *type, const char *help, double v) {
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

void srv_metrics_text(srv_metrics *m, mnv_engine *e, int active, srv_buf *b) {
    mnv_engine_stats es;
    mnv_engine_get_stats(e, &es);
    pthread_mutex_lock(&m->mu);
    srv_buf_puts(b, "# HELP minerva_requests_total HTTP requests answered, by status\n"
                    "# TYPE minerva_requests_total counter\n");
    for (int s = 100; s < 600; s++)
        if (m->by_status[s])
            srv_buf_printf(b, "minerva_requests_total{status=\"%d\"} %llu\n", s, (unsigned long long)m->by_status[s]);
    gauge(b, "minerva_prompt_tokens_total", "counter", "prompt tokens of finished requests", (double)m->prompt_tokens);
    gauge(b, "minerva_generated_tokens_total", "counter", "tokens generated", (double)m->completion_tokens);
    gauge(b, "minerva_requests_cancelled_total", "counter", "generations cancelled (client gone, shutdown)",
          (double)m->cancelled);
    hist_text(b, "minerva_time_to_first_token_seconds", "submission to the first generated token", &m->ttft);
    hist_text(b, "minerva_time_per_output_token_seconds", "mean time between generated tokens of a request", &m->itl);
    pthread_mutex_unlock(&m->mu);
    gauge(b, "minerva_requests_active", "gauge", "generation requests admitted by the server and not answered", active);
    gauge(b, "minerva_requests_running", "gauge", "engine requests holding a sequence", es.n_running);
    gauge(b, "minerva_requests_waiting", "gauge", "engine requests queued for room", es.n_waiting);
    gauge(b, "minerva_kv_blocks_total", "gauge", "blocks of the KV pool", (double)es.kv_blocks_total);
    gauge(b, "minerva_kv_blocks_used", "gauge", "KV blocks held by running sequences", (double)es.kv_blocks_used);
    gauge(b, "minerva_kv_blocks_cached", "gauge", "KV blocks kept for the prefix cache", (double)es.kv_blocks_cached);
    gauge(b, "minerva_kv_blocks_free", "gauge", "free KV blocks", (double)es.kv_blocks_free);
    gauge(b, "minerva_kv_usage_ratio", "gauge", "used share of the KV pool",
          es.kv_blocks_total ? (double)es.kv_blocks_used / (double)es.kv_blocks_total : 0.0);
    gauge(b, "minerva_prefix_cache_hit_tokens_total", "counter", "prompt tokens served by the prefix cache",
          (double)es.prefix_hit_tokens);
    gauge(b, "minerva_prompt_tokens_evaluated_total", "counter", "prompt tokens evaluated", (double)es.tokens_prefilled);
    gauge(b, "minerva_engine_steps_total", "counter", "engine steps", (double)es.steps);
    gauge(b, "minerva_preemptions_total", "counter", "requests sent back to the queue for room", (double)es.preemptions);
}
