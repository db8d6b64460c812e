/*
 * Prints the prefix keys the gateway computes for an OpenAI request body,
 * one decimal key per line: for tests, and for checking by hand that a
 * worker and the gateway agree.
 *
 *   llmd-prefix-keys [BLOCK_BYTES [MODEL]] < body.json
 *
 * With MODEL, the keys are salted as the gateway's index holds them for
 * that model (what gateways share as placements).
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmd_request.h"


int
main(int argc, char **argv)
{
    size_t           len = 0, cap = 1 << 16, i, block;
    char            *body;
    unsigned char   *scratch;
    uint64_t         keys[LLMD_PREFIX_MAX_BLOCKS_DEFAULT];
    llmd_request_t   rq;

    block = argc > 1 ? strtoul(argv[1], NULL, 10) : LLMD_PREFIX_BLOCK_DEFAULT;
    if (block < LLMD_PREFIX_BLOCK_MIN || block > LLMD_PREFIX_BLOCK_MAX) {
        fprintf(stderr, "block size out of range\n");
        return 2;
    }

    body = malloc(cap);
    scratch = malloc(block);
    if (body == NULL || scratch == NULL) {
        return 1;
    }

    while (!feof(stdin)) {
        if (len == cap && (body = realloc(body, cap *= 2)) == NULL) {
            return 1;
        }
        len += fread(body + len, 1, cap - len, stdin);
    }

    if (llmd_request_inspect(&rq, &llmd_libc_allocator, body, len, block,
                             LLMD_PREFIX_MAX_BLOCKS_DEFAULT, scratch, keys)
        != LLMD_REQ_OK)
    {
        fprintf(stderr, "%s\n", rq.error);
        return 1;
    }

    if (argc > 2) {
        llmd_prefix_salt(keys, rq.prefix.nkeys,
                         llmd_prefix_model_salt(argv[2], strlen(argv[2])));
    }

    for (i = 0; i < rq.prefix.nkeys; i++) {
        printf("%" PRIu64 "\n", keys[i]);
    }

    free(body);
    free(scratch);
    return 0;
}
