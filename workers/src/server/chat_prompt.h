/*
 * Request prompts for a backend with a real model: the completion prompt is
 * encoded with the model's tokenizer (BOS added when the model wants it),
 * and chat messages are rendered with the model's chat format first.
 */

#ifndef LLMD_MODEL_PROMPT_H
#define LLMD_MODEL_PROMPT_H

#include <jansson.h>
#include <stdint.h>

#include "model/chat_template.h"
#include "openai_api.h"
#include "model/tokenizer_vocab.h"

struct model_prompt {
    const struct vocab *vocab;
    int                 vocab_size;     /* prompt ids must be below it */
    enum chat_family    chat;           /* CHAT_UNKNOWN: chat requests fail */
};

/* chat_override ("" or a family name) wins over the model's template. */
void model_prompt_init(struct model_prompt *mp, const struct vocab *v,
    int vocab_size, const char *chat_override);

/* Token ids for a parsed body; 0, or -1 with a 400 in err.  *ids is
 * malloc'd. */
int model_prompt_build(const struct model_prompt *mp, enum api_kind kind,
    json_t *root, int32_t **ids, int *n, struct api_error *err);

#endif
