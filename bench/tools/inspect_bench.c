/*
 * Prompt inspection throughput: llmd_request_inspect() over an OpenAI chat
 * body of a given prompt size, against a baseline that only hashes the
 * same bytes into prefix keys (no JSON parsing), measured in the same run.
 *
 *   inspect_bench PROMPT_BYTES ITERATIONS
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmd_request.h"


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


int
main(int argc, char **argv)
{
    size_t           prompt, len, i, iters, sink = 0;
    char            *body, *p;
    double           t0, t_parse, t_scan;
    unsigned char    block[LLMD_PREFIX_BLOCK_DEFAULT];
    uint64_t         keys[LLMD_PREFIX_MAX_BLOCKS_DEFAULT];
    llmd_request_t   rq;
    const char      *words = "the quick brown fox jumps over the lazy dog ";

    prompt = argc > 1 ? strtoul(argv[1], NULL, 10) : 65536;
    iters = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;

    body = malloc(prompt + 256);
    p = body + sprintf(body, "{\"model\":\"m\",\"max_tokens\":64,\"stream\":true,"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (i = 0; i < prompt; i++) {
        *p++ = words[i % 44];
    }
    p += sprintf(p, "\"}]}");
    len = p - body;

    t0 = now();
    for (i = 0; i < iters; i++) {
        if (llmd_request_inspect(&rq, &llmd_libc_allocator, body, len,
                                 sizeof(block), LLMD_PREFIX_MAX_BLOCKS_DEFAULT,
                                 block, keys) != LLMD_REQ_OK)
        {
            fprintf(stderr, "inspect failed: %s\n", rq.error);
            return 1;
        }
        sink += rq.prefix.nkeys;
    }
    t_parse = (now() - t0) / iters;

    t0 = now();
    for (i = 0; i < iters; i++) {
        sink += llmd_prefix_keys(body, len, sizeof(block), keys,
                                 LLMD_PREFIX_MAX_BLOCKS_DEFAULT);
        __asm__ volatile("" : : "r"(keys) : "memory");
    }
    t_scan = (now() - t0) / iters;

    printf("inspect body=%zu bytes: %.2f us/request, %.2f GB/s "
           "(hash-only baseline %.2f GB/s, ratio %.2f) [%zu]\n",
           len, t_parse * 1e6, len / t_parse / 1e9, len / t_scan / 1e9,
           t_parse / t_scan, sink % 7);
    free(body);
    return 0;
}
