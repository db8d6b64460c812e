/*
 * Metrics: histogram buckets as vLLM codes them, and the text rendering.
 */

#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double ttft_bounds[] = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0
};
static const double itl_bounds[] = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0
};
static const double transfer_bounds[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0
};
static const double request_bounds[] = {
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0
};

#define NBOUNDS(a) ((int) (sizeof(a) / sizeof((a)[0])))

static void hist_init(struct histogram *h, const char *name, const char *help,
    const double *bounds, int n)
{
    h->name = name;
    h->help = help;
    h->bounds = bounds;
    h->n_bounds = n;
}

void metrics_init(struct worker_metrics *m, uint64_t kv_blocks, int block_tokens)
{
    memset(m, 0, sizeof(*m));
    m->kv_total_blocks = kv_blocks;
    m->block_tokens = block_tokens;
    hist_init(&m->ttft, "vllm:time_to_first_token_seconds",
              "Histogram of time to first token in seconds.",
              ttft_bounds, NBOUNDS(ttft_bounds));
    hist_init(&m->itl, "vllm:inter_token_latency_seconds",
              "Histogram of inter-token latency in seconds.",
              itl_bounds, NBOUNDS(itl_bounds));
    hist_init(&m->e2e, "vllm:e2e_request_latency_seconds",
              "Histogram of end to end request latency in seconds.",
              request_bounds, NBOUNDS(request_bounds));
    hist_init(&m->queue_time, "vllm:request_queue_time_seconds",
              "Histogram of time spent waiting before the first schedule, in seconds.",
              request_bounds, NBOUNDS(request_bounds));
    hist_init(&m->pd_exposed, "llmd:kv_transfer_exposed_seconds",
              "Remote prefill: from the prefill worker's last layer to the "
              "decode worker being able to schedule the request.",
              transfer_bounds, NBOUNDS(transfer_bounds));
}

void histogram_observe(struct histogram *h, double seconds)
{
    int i = 0;

    if (seconds < 0)
        seconds = 0;
    while (i < h->n_bounds && seconds > h->bounds[i])
        i++;
    counter_add(&h->counts[i], 1);
    counter_add(&h->sum_ns, (uint64_t) (seconds * 1e9));
}

/* ------------------------------------------------------------------------ */

static uint64_t load(atomic_uint_fast64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* A label value with \, " and newline escaped. */
static void escape_label(char *out, size_t size, const char *in)
{
    size_t o = 0;

    for (; *in && o + 3 < size; in++) {
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
}

static void render_histogram(FILE *f, struct histogram *h, const char *label)
{
    uint64_t cumulative = 0;

    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    for (int i = 0; i < h->n_bounds; i++) {
        cumulative += load(&h->counts[i]);
        fprintf(f, "%s_bucket{%s,le=\"%g\"} %llu\n", h->name, label,
                h->bounds[i], (unsigned long long) cumulative);
    }
    cumulative += load(&h->counts[h->n_bounds]);
    fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", h->name, label,
            (unsigned long long) cumulative);
    fprintf(f, "%s_sum{%s} %.9f\n", h->name, label, load(&h->sum_ns) * 1e-9);
    fprintf(f, "%s_count{%s} %llu\n", h->name, label,
            (unsigned long long) cumulative);
}

static void render_scalar(FILE *f, const char *name, const char *type,
    const char *help, const char *label, double value)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %.17g\n",
            name, help, name, type, name, label, value);
}

char *metrics_render(struct worker_metrics *m, const char *model_name,
    size_t *len)
{
    static const char *reasons[SUCCESS_KINDS] = { "stop", "length", "abort" };
    char escaped[300], label[340];
    char *buf = NULL;
    double usage;
    FILE *f = open_memstream(&buf, len);

    if (f == NULL)
        return NULL;
    escape_label(escaped, sizeof(escaped), model_name);
    snprintf(label, sizeof(label), "model_name=\"%s\"", escaped);
    usage = m->kv_total_blocks
            ? (double) load(&m->kv_used_blocks) / (double) m->kv_total_blocks : 0;

    render_scalar(f, "vllm:num_requests_running", "gauge",
                  "Number of requests in model execution batches.", label,
                  (double) atomic_load(&m->running));
    render_scalar(f, "vllm:num_requests_waiting", "gauge",
                  "Number of requests waiting to be processed.", label,
                  (double) atomic_load(&m->waiting));
    render_scalar(f, "llmd:num_prefill_tokens_queued", "gauge",
                  "Prompt tokens of waiting and running requests not yet "
                  "computed: the prefill backlog autoscalers act on.", label,
                  (double) load(&m->queued_prefill_tokens));
    render_scalar(f, "vllm:kv_cache_usage_perc", "gauge",
                  "KV-cache usage. 1 means 100 percent usage.", label, usage);
    render_scalar(f, "vllm:gpu_cache_usage_perc", "gauge",
                  "KV-cache usage (older name of vllm:kv_cache_usage_perc).",
                  label, usage);
    fprintf(f, "# HELP vllm:cache_config_info Information of the KV cache config.\n"
               "# TYPE vllm:cache_config_info gauge\n"
               "vllm:cache_config_info{%s,block_size=\"%d\",num_gpu_blocks=\"%llu\"} 1\n",
            label, m->block_tokens, (unsigned long long) m->kv_total_blocks);

    render_scalar(f, "vllm:prompt_tokens_total", "counter",
                  "Number of prefill tokens processed.", label,
                  (double) load(&m->prompt_tokens));
    render_scalar(f, "vllm:generation_tokens_total", "counter",
                  "Number of generation tokens processed.", label,
                  (double) load(&m->generation_tokens));
    render_scalar(f, "vllm:prefix_cache_queries_total", "counter",
                  "Prefix cache queries, in tokens.", label,
                  (double) load(&m->prefix_queries));
    render_scalar(f, "vllm:prefix_cache_hits_total", "counter",
                  "Prefix cache hits, in tokens.", label,
                  (double) load(&m->prefix_hits));
    render_scalar(f, "vllm:num_preemptions_total", "counter",
                  "Cumulative number of preemptions.", label,
                  (double) load(&m->preemptions));
    fprintf(f, "# HELP vllm:request_success_total Count of finished requests.\n"
               "# TYPE vllm:request_success_total counter\n");
    for (int i = 0; i < SUCCESS_KINDS; i++)
        fprintf(f, "vllm:request_success_total{%s,finished_reason=\"%s\"} %llu\n",
                label, reasons[i], (unsigned long long) load(&m->success[i]));

    fprintf(f, "# HELP llmd:kv_transfers_total Remote prefills, by how they "
               "ended on this decode worker.\n# TYPE llmd:kv_transfers_total counter\n"
               "llmd:kv_transfers_total{%s,outcome=\"landed\"} %llu\n"
               "llmd:kv_transfers_total{%s,outcome=\"recomputed\"} %llu\n"
               "llmd:kv_transfers_total{%s,outcome=\"failed\"} %llu\n",
            label, (unsigned long long) load(&m->pd_landed),
            label, (unsigned long long) load(&m->pd_recomputed),
            label, (unsigned long long) load(&m->pd_failed));
    fprintf(f, "# HELP llmd:kv_transfers_served_total Prefills computed here "
               "for a decode worker, by outcome.\n"
               "# TYPE llmd:kv_transfers_served_total counter\n"
               "llmd:kv_transfers_served_total{%s,outcome=\"done\"} %llu\n"
               "llmd:kv_transfers_served_total{%s,outcome=\"failed\"} %llu\n",
            label, (unsigned long long) load(&m->pd_served),
            label, (unsigned long long) load(&m->pd_served_failed));
    fprintf(f, "# HELP llmd:kv_transfer_bytes_total KV page bytes moved.\n"
               "# TYPE llmd:kv_transfer_bytes_total counter\n"
               "llmd:kv_transfer_bytes_total{%s,direction=\"sent\"} %llu\n"
               "llmd:kv_transfer_bytes_total{%s,direction=\"received\"} %llu\n",
            label, (unsigned long long) load(&m->pd_bytes_out),
            label, (unsigned long long) load(&m->pd_bytes_in));
    render_scalar(f, "llmd:kv_transfer_early_bytes_total", "counter",
                  "Received KV bytes that had arrived here before the prefill "
                  "worker computed its last layer (streamed behind the compute).",
                  label, (double) load(&m->pd_bytes_early));
    render_histogram(f, &m->pd_exposed, label);
    render_histogram(f, &m->ttft, label);
    render_histogram(f, &m->itl, label);
    render_histogram(f, &m->e2e, label);
    render_histogram(f, &m->queue_time, label);
    fclose(f);
    return buf;
}
