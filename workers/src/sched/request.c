/*
 * Request allocation and the stop-string bookkeeping on generated text.
 */

#include "request.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct worker_request *request_new(const int32_t *prompt, int n_prompt,
    const struct gen_params *params, int block_tokens)
{
    struct worker_request *r = calloc(1, sizeof(*r));
    int cap = n_prompt + params->max_tokens;
    int max_blocks = (cap + block_tokens - 1) / block_tokens + 1;

    if (r == NULL)
        return NULL;
    r->params = *params;
    r->tokens = malloc(sizeof(int32_t) * (size_t) cap);
    r->blocks = malloc(sizeof(int32_t) * (size_t) max_blocks);
    r->block_hashes = malloc(sizeof(uint64_t) * (size_t) max_blocks);
    /* a byte-level token is one byte; leave room for wider tokenizers */
    r->text_cap = params->max_tokens * 4 + 16;
    r->text = malloc((size_t) r->text_cap);
    if (params->logprobs > 0)
        r->logprobs = calloc((size_t) params->max_tokens + 1, sizeof(*r->logprobs));
    if (!r->tokens || !r->blocks || !r->block_hashes || !r->text
        || (params->logprobs > 0 && !r->logprobs)) {
        request_free(r);
        return NULL;
    }
    memcpy(r->tokens, prompt, sizeof(int32_t) * (size_t) n_prompt);
    r->n_prompt = r->n_tokens = n_prompt;
    r->heap_pos = -1;
    /* the sampler state: the same prompt and seed give the same text; at
     * temperature 0 (greedy) the seed does not matter */
    r->rng = XXH3_64bits_withSeed(prompt, sizeof(int32_t) * (size_t) n_prompt,
                                  params->temperature > 0 ? params->seed : 0);
    atomic_init(&r->cancel_requested, 0);
    return r;
}

void request_free(struct worker_request *r)
{
    if (r == NULL)
        return;
    free(r->tokens);
    free(r->blocks);
    free(r->block_hashes);
    free(r->text);
    free(r->logprobs);
    free(r->pd_keys);
    free(r->pd_cover);
    free(r);
}
