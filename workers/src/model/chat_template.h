/*
 * Chat templates: a GGUF carries its chat format as a Jinja template
 * (tokenizer.chat_template).  Rather than run Jinja, the worker recognises
 * the common families by their marker tokens, as llama.cpp does, and
 * renders them in C.  An unrecognised template is reported, not guessed.
 */

#ifndef LLMD_CHAT_TEMPLATE_H
#define LLMD_CHAT_TEMPLATE_H

#include <stddef.h>

enum chat_family {
    CHAT_UNKNOWN = 0,
    CHAT_LLAMA3,        /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_CHATML,        /* <|im_start|>role\n...<|im_end|>\n  (Qwen2, SmolLM, ...) */
    CHAT_LLAMA2,        /* [INST] <<SYS>>...<</SYS>> ... [/INST] */
    CHAT_GEMMA,         /* <start_of_turn>user\n...<end_of_turn>\n */
    CHAT_PLAIN          /* role: content lines; for models without a format */
};

struct chat_message {
    const char *role;
    size_t      role_len;
    const char *content;
    size_t      content_len;
};

/* The family of a Jinja template, or CHAT_UNKNOWN. */
enum chat_family chat_template_detect(const char *tmpl, size_t len);
/* "llama3", "chatml", ... -> family; CHAT_UNKNOWN for anything else. */
enum chat_family chat_family_by_name(const char *name);

/* The prompt for messages, ending with the opening of the assistant's
 * turn; malloc'd (*len bytes, NUL-terminated), NULL when out of memory. */
char *chat_render(enum chat_family f, const struct chat_message *msgs, int n,
    size_t *len);

#endif
