#include "flags.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
"usage: llmd-bench --url http://HOST:PORT/v1/chat/completions --workload NAME\n"
"                  (--rate R | --concurrency-burst N) [options]\n"
"  --url URL                OpenAI endpoint (chat/completions or completions)\n"
"  --workload NAME          shared-prefix, mixed, multi-turn, hot-spot, bursty,\n"
"                           uniform\n"
"  --trace FILE             replay a JSONL trace instead of a workload\n"
"  --dump-trace FILE        write the requests as a trace and exit\n"
"  --seed N                 workload seed (1)\n"
"  --rate R                 Poisson arrivals, requests/s\n"
"  --duration S             arrivals during S seconds\n"
"  --requests N             this many requests (1000; hot-spot 4096)\n"
"  --concurrency-burst N    N requests at once, the next N when all ended\n"
"  --bursts K               bursts in burst mode (bursty: 3)\n"
"  --groups N --users N     shared-prefix groups and users per group\n"
"  --system-tokens N        shared system prompt (shared-prefix, hot-spot,\n"
"                           multi-turn)\n"
"  --question-tokens N      per-user question / per-turn message\n"
"  --input-tokens N         prompt of uniform and bursty\n"
"  --output-tokens N        max_tokens of every request\n"
"  --turns N --think-time S multi-turn sessions (think time: mean, exponential)\n"
"  --long-fraction F --long-steps N --long-min-tokens N --long-max-tokens N\n"
"  --long-output-tokens N --tool-tokens N --short-max-tokens N\n"
"  --short-max-output N     mixed workload shape\n"
"  --model NAME             model field of the bodies (llmd-sim)\n"
"  --ignore-eos             add ignore_eos (vLLM) so lengths are exact\n"
"  --header 'Name: value'   extra request header (up to 8)\n"
"  --out FILE               one JSON line per request\n"
"  --summary FILE           the summary as JSON\n"
"  --slo-ttft MS --slo-itl MS  SLO for attainment and goodput (ITL: per\n"
"                           request, time per output token after the first)\n"
"  --max-connections N      connection pool size (10000)\n"
"  --timeout S              fail a request after S seconds of silence (600)\n"
"  --help                   this text\n";

enum {
    O_URL = 256, O_WORKLOAD, O_TRACE, O_DUMP, O_SEED, O_RATE, O_DURATION,
    O_REQUESTS, O_BURST, O_BURSTS, O_GROUPS, O_USERS, O_SYSTEM, O_QUESTION,
    O_INPUT, O_OUTPUT, O_TURNS, O_THINK, O_LONG_FRACTION, O_LONG_STEPS,
    O_LONG_MIN, O_LONG_MAX, O_LONG_OUT, O_TOOL, O_SHORT_MAX, O_SHORT_OUT,
    O_MODEL, O_IGNORE_EOS, O_HEADER, O_OUT, O_SUMMARY, O_SLO_TTFT, O_SLO_ITL,
    O_MAX_CONNS, O_TIMEOUT, O_HELP,
};

static const struct option options[] = {
    { "url", required_argument, NULL, O_URL },
    { "workload", required_argument, NULL, O_WORKLOAD },
    { "trace", required_argument, NULL, O_TRACE },
    { "dump-trace", required_argument, NULL, O_DUMP },
    { "seed", required_argument, NULL, O_SEED },
    { "rate", required_argument, NULL, O_RATE },
    { "duration", required_argument, NULL, O_DURATION },
    { "requests", required_argument, NULL, O_REQUESTS },
    { "concurrency-burst", required_argument, NULL, O_BURST },
    { "bursts", required_argument, NULL, O_BURSTS },
    { "groups", required_argument, NULL, O_GROUPS },
    { "users", required_argument, NULL, O_USERS },
    { "system-tokens", required_argument, NULL, O_SYSTEM },
    { "question-tokens", required_argument, NULL, O_QUESTION },
    { "input-tokens", required_argument, NULL, O_INPUT },
    { "output-tokens", required_argument, NULL, O_OUTPUT },
    { "turns", required_argument, NULL, O_TURNS },
    { "think-time", required_argument, NULL, O_THINK },
    { "long-fraction", required_argument, NULL, O_LONG_FRACTION },
    { "long-steps", required_argument, NULL, O_LONG_STEPS },
    { "long-min-tokens", required_argument, NULL, O_LONG_MIN },
    { "long-max-tokens", required_argument, NULL, O_LONG_MAX },
    { "long-output-tokens", required_argument, NULL, O_LONG_OUT },
    { "tool-tokens", required_argument, NULL, O_TOOL },
    { "short-max-tokens", required_argument, NULL, O_SHORT_MAX },
    { "short-max-output", required_argument, NULL, O_SHORT_OUT },
    { "model", required_argument, NULL, O_MODEL },
    { "ignore-eos", no_argument, NULL, O_IGNORE_EOS },
    { "header", required_argument, NULL, O_HEADER },
    { "out", required_argument, NULL, O_OUT },
    { "summary", required_argument, NULL, O_SUMMARY },
    { "slo-ttft", required_argument, NULL, O_SLO_TTFT },
    { "slo-itl", required_argument, NULL, O_SLO_ITL },
    { "max-connections", required_argument, NULL, O_MAX_CONNS },
    { "timeout", required_argument, NULL, O_TIMEOUT },
    { "help", no_argument, NULL, O_HELP },
    { NULL, 0, NULL, 0 },
};

static int parse_long(const char *name, const char *v, long lo, long hi, long *out,
                      char *err, size_t errlen)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi) {
        snprintf(err, errlen, "--%s: expected an integer in %ld..%ld, got '%s'",
                 name, lo, hi, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int parse_double(const char *name, const char *v, double lo, double hi,
                        double *out, char *err, size_t errlen)
{
    char *end;
    double x;

    errno = 0;
    x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
        snprintf(err, errlen, "--%s: expected a number in %g..%g, got '%s'",
                 name, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_url(struct bench_config *c, char *err, size_t errlen)
{
    const char *u = c->url, *hostp, *slash, *colon;
    size_t hlen;

    if (strncmp(u, "http://", 7) != 0) {
        snprintf(err, errlen, "--url: expected http://HOST[:PORT]/PATH, got '%s'", u);
        return -1;
    }
    hostp = u + 7;
    slash = strchr(hostp, '/');
    if (slash == NULL)
        slash = hostp + strlen(hostp);
    colon = memchr(hostp, ':', (size_t) (slash - hostp));
    hlen = (size_t) ((colon ? colon : slash) - hostp);
    if (hlen == 0 || hlen >= sizeof(c->host)
        || (colon && (slash - colon - 1 < 1 || (size_t) (slash - colon) > sizeof(c->port)))
        || strlen(slash) >= sizeof(c->path)) {
        snprintf(err, errlen, "--url: expected http://HOST[:PORT]/PATH, got '%s'", u);
        return -1;
    }
    memcpy(c->host, hostp, hlen);
    c->host[hlen] = '\0';
    if (colon)
        snprintf(c->port, sizeof(c->port), "%.*s", (int) (slash - colon - 1), colon + 1);
    else
        strcpy(c->port, "80");
    snprintf(c->path, sizeof(c->path), "%s", *slash ? slash : "/v1/chat/completions");
    /* /v1/completions takes a prompt; everything else gets messages */
    size_t pl = strlen(c->path);
    int completions = pl >= 15 && strcmp(c->path + pl - 15, "/v1/completions") == 0;

    c->wp.api = completions ? API_COMPLETIONS : API_CHAT;
    c->run.body.api = c->wp.api;
    return 0;
}

int flags_parse(int argc, char **argv, struct bench_config *c, char *err, size_t errlen)
{
    struct workload_params *p = &c->wp;
    long n;
    int opt;

    memset(c, 0, sizeof(*c));
    workload_params_init(p);
    c->run.body.model = "llmd-sim";
    c->run.body.stream = 1;
    c->run.max_conns = 10000;
    c->run.timeout_s = 600;
    opterr = 0;
    optind = 1;

#define LONG(field, lo, hi) \
    do { \
        if (parse_long(options[opt - O_URL].name, optarg, lo, hi, &n, err, errlen)) \
            return -1; \
        field = n; \
    } while (0)
#define DOUBLE(field, lo, hi) \
    do { if (parse_double(options[opt - O_URL].name, optarg, lo, hi, &field, err, errlen)) \
             return -1; } while (0)

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case O_URL: c->url = optarg; break;
        case O_WORKLOAD: p->name = optarg; break;
        case O_TRACE: c->trace = optarg; break;
        case O_DUMP: c->dump_trace = optarg; break;
        case O_SEED: LONG(p->seed, 0, 0x7fffffffffffffffL); break;
        case O_RATE: DOUBLE(p->rate, 1e-6, 1e7); break;
        case O_DURATION: DOUBLE(p->duration, 1e-3, 1e7); break;
        case O_REQUESTS: LONG(p->requests, 1, 100000000); break;
        case O_BURST: LONG(p->burst, 1, 1000000); break;
        case O_BURSTS: LONG(p->bursts, 1, 1000000); break;
        case O_GROUPS: LONG(p->groups, 1, 1000000); break;
        case O_USERS: LONG(p->users, 1, 1000000); break;
        case O_SYSTEM: LONG(p->system_tokens, 16, 10000000); break;
        case O_QUESTION: LONG(p->question_tokens, 16, 10000000); break;
        case O_INPUT: LONG(p->input_tokens, 16, 10000000); break;
        case O_OUTPUT: LONG(p->output_tokens, 1, 10000000); break;
        case O_TURNS: LONG(p->turns, 1, 10000); break;
        case O_THINK: DOUBLE(p->think_time, 0, 86400); break;
        case O_LONG_FRACTION: DOUBLE(p->long_fraction, 0, 1); break;
        case O_LONG_STEPS: LONG(p->long_steps, 1, 10000); break;
        case O_LONG_MIN: LONG(p->long_min_tokens, 16, 10000000); break;
        case O_LONG_MAX: LONG(p->long_max_tokens, 16, 10000000); break;
        case O_LONG_OUT: LONG(p->long_output_tokens, 1, 10000000); break;
        case O_TOOL: LONG(p->tool_tokens, 16, 10000000); break;
        case O_SHORT_MAX: LONG(p->short_max_tokens, 64, 10000000); break;
        case O_SHORT_OUT: LONG(p->short_max_output, 4, 10000000); break;
        case O_MODEL: c->run.body.model = optarg; break;
        case O_IGNORE_EOS: c->run.body.ignore_eos = 1; break;
        case O_HEADER:
            if (c->run.n_headers == RUNNER_MAX_HEADERS || !strchr(optarg, ':')
                || strpbrk(optarg, "\r\n")) {
                snprintf(err, errlen, "--header: expected 'Name: value' (at most %d), got '%s'",
                         RUNNER_MAX_HEADERS, optarg);
                return -1;
            }
            c->run.headers[c->run.n_headers++] = optarg;
            break;
        case O_OUT: c->out = optarg; break;
        case O_SUMMARY: c->summary = optarg; break;
        case O_SLO_TTFT: DOUBLE(c->slo_ttft_ms, 1e-3, 1e9); break;
        case O_SLO_ITL: DOUBLE(c->slo_itl_ms, 1e-3, 1e9); break;
        case O_MAX_CONNS: LONG(c->run.max_conns, 1, 1000000); break;
        case O_TIMEOUT: DOUBLE(c->run.timeout_s, 1e-3, 1e6); break;
        case O_HELP: fputs(usage, stdout); return 1;
        default:
            snprintf(err, errlen, "unknown or incomplete flag '%s' (see --help)",
                     argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
        return -1;
    }
    if (c->url == NULL && c->dump_trace == NULL) {
        snprintf(err, errlen, "--url is required (or --dump-trace FILE)");
        return -1;
    }
    if (c->url && parse_url(c, err, errlen))
        return -1;
    if (c->trace && p->name) {
        snprintf(err, errlen, "--trace and --workload exclude each other");
        return -1;
    }
    if (c->trace == NULL) {
        if (p->name == NULL) {
            snprintf(err, errlen, "--workload is required (%s) or --trace FILE",
                     workload_names());
            return -1;
        }
        if (workload_params_finish(p, err, errlen))
            return -1;
    }
    c->run.host = c->host;
    c->run.port = c->port;
    c->run.path = c->path;
    c->run.burst = p->burst;
    return 0;
}
