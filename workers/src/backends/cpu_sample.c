/*
 * Sampling: greedy, temperature, top-p, per-request seeded generator.
 */

#include "cpu_sample.h"

#include <math.h>
#include <stdlib.h>

int32_t argmax(const float *x, int n)
{
    int32_t best = 0;

    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

double sample_uniform(uint64_t *s)
{
    /* splitmix64, top 53 bits -> [0, 1) */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double) (z >> 11) * (1.0 / 9007199254740992.0);
}

static int by_prob_desc(const void *a, const void *b, void *arg)
{
    const float *probs = arg;
    float pa = probs[*(const int32_t *) a], pb = probs[*(const int32_t *) b];

    if (pa != pb)
        return pa < pb ? 1 : -1;
    return *(const int32_t *) a - *(const int32_t *) b;    /* stable order */
}

int32_t sample_token(const float *logits, int n, const struct gen_params *p,
    uint64_t *rng, float *probs, int32_t *order)
{
    float max = logits[argmax(logits, n)];
    double sum = 0, r, acc = 0;
    int m = 0;

    if (p->temperature <= 0)
        return argmax(logits, n);
    for (int i = 0; i < n; i++) {
        probs[i] = expf((float) ((logits[i] - max) / p->temperature));
        sum += probs[i];
    }
    for (int i = 0; i < n; i++)
        probs[i] = (float) (probs[i] / sum);

    if (p->top_p >= 1.0) {
        r = sample_uniform(rng);
        for (int i = 0; i < n; i++) {
            acc += probs[i];
            if (r < acc)
                return i;
        }
        return n - 1;
    }
    /* nucleus: tokens below (1 - top_p) / (n - 1) can never be inside it,
     * which leaves few to sort (llama2.c's trick) */
    {
        float cutoff = (float) ((1.0 - p->top_p) / (n > 1 ? n - 1 : 1));
        double mass = 0;
        int last;

        for (int i = 0; i < n; i++)
            if (probs[i] >= cutoff)
                order[m++] = i;
        qsort_r(order, (size_t) m, sizeof(int32_t), by_prob_desc, probs);
        last = m - 1;
        for (int i = 0; i < m; i++) {
            mass += probs[order[i]];
            if (mass > p->top_p) {
                last = i;
                break;
            }
        }
        r = sample_uniform(rng) * mass;
        acc = 0;
        for (int i = 0; i <= last; i++) {
            acc += probs[order[i]];
            if (r < acc)
                return order[i];
        }
        return order[last];
    }
}

void token_logprobs(const float *logits, int n, int32_t chosen, int top,
    struct token_logprob *out)
{
    float max = logits[argmax(logits, n)];
    double sum = 0;
    float lse;

    for (int i = 0; i < n; i++)
        sum += exp((double) logits[i] - max);
    lse = max + (float) log(sum);
    out->token = chosen;
    out->logprob = logits[chosen] - lse;
    if (top > REQ_MAX_TOP_LOGPROBS)
        top = REQ_MAX_TOP_LOGPROBS;
    out->n_top = 0;
    /* insertion into a short sorted list: top is at most 20 */
    for (int i = 0; i < n; i++) {
        int k = out->n_top;
        if (k == top && (k == 0 || logits[i] <= out->top_logprob[k - 1]))
            continue;
        if (k < top)
            out->n_top++;
        else
            k--;
        while (k > 0 && out->top_logprob[k - 1] < logits[i]) {
            out->top_logprob[k] = out->top_logprob[k - 1];
            out->top_token[k] = out->top_token[k - 1];
            k--;
        }
        out->top_logprob[k] = logits[i];
        out->top_token[k] = i;
    }
    for (int k = 0; k < out->n_top; k++)
        out->top_logprob[k] -= lse;
}
