/*
 * The vocabulary table's piece -> id index: see vocab.h.
 */

#include "vocab.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int32_t vocab_find(const struct vocab *v, const char *piece, size_t len)
{
    uint32_t i = (uint32_t) XXH3_64bits(piece, len) & v->slot_mask;

    for (;; i = (i + 1) & v->slot_mask) {
        int32_t id = v->slots[i];
        if (id < 0)
            return -1;
        if ((size_t) v->piece_len[id] == len && memcmp(v->piece[id], piece, len) == 0)
            return id;
    }
}

int vocab_build_index(struct vocab *v)
{
    uint32_t size = 16;

    while (size < (uint32_t) v->n * 2)
        size *= 2;
    v->slots = malloc(sizeof(int32_t) * size);
    if (v->slots == NULL)
        return -1;
    memset(v->slots, 0xff, sizeof(int32_t) * size);
    v->slot_mask = size - 1;
    for (int id = 0; id < v->n; id++) {
        uint32_t i = (uint32_t) XXH3_64bits(v->piece[id], (size_t) v->piece_len[id])
                     & v->slot_mask;
        /* the first of duplicate pieces wins, as in llama.cpp */
        if (vocab_find(v, v->piece[id], (size_t) v->piece_len[id]) >= 0)
            continue;
        while (v->slots[i] >= 0)
            i = (i + 1) & v->slot_mask;
        v->slots[i] = id;
    }
    return 0;
}
