/*
 * Latency profiles: parsing, lookup and the step-time formula.
 */

#include "sim_profile.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum field_type { F_INT, F_DOUBLE, F_NAME };

static const struct {
    const char      *key;
    enum field_type  type;
    size_t           offset;
} fields[] = {
    { "name",                   F_NAME,   offsetof(struct sim_profile, name) },
    { "max_model_len",          F_INT,    offsetof(struct sim_profile, max_model_len) },
    { "prefill_base_us",        F_DOUBLE, offsetof(struct sim_profile, prefill_base_us) },
    { "prefill_per_token_us",   F_DOUBLE, offsetof(struct sim_profile, prefill_per_token_us) },
    { "prefill_per_token_ctx_us", F_DOUBLE, offsetof(struct sim_profile, prefill_per_token_ctx_us) },
    { "decode_base_us",         F_DOUBLE, offsetof(struct sim_profile, decode_base_us) },
    { "decode_per_seq_us",      F_DOUBLE, offsetof(struct sim_profile, decode_per_seq_us) },
    { "decode_per_kv_token_us", F_DOUBLE, offsetof(struct sim_profile, decode_per_kv_token_us) },
    { "kv_layers",              F_INT,    offsetof(struct sim_profile, kv_layers) },
    { "kv_heads",               F_INT,    offsetof(struct sim_profile, kv_heads) },
    { "head_dim",               F_INT,    offsetof(struct sim_profile, head_dim) },
    { "dtype_bytes",            F_INT,    offsetof(struct sim_profile, dtype_bytes) },
};

static int set_field(struct sim_profile *p, const char *key, const char *val)
{
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        char *where = (char *) p + fields[i].offset;
        char *end;

        if (strcmp(fields[i].key, key) != 0)
            continue;
        errno = 0;
        switch (fields[i].type) {
        case F_NAME:
            if (strlen(val) >= sizeof(p->name))
                return -1;
            strcpy(where, val);
            return 0;
        case F_INT: {
            long v = strtol(val, &end, 10);
            if (errno || *end || v < 1 || v > 1 << 24)
                return -1;
            *(int *) where = (int) v;
            return 0;
        }
        case F_DOUBLE: {
            double v = strtod(val, &end);
            if (errno || *end || v < 0 || v > 1e9)
                return -1;
            *(double *) where = v;
            return 0;
        }
        }
    }
    return -1;
}

int sim_profile_parse(struct sim_profile *p, const char *text,
    char *err, int err_len)
{
    int lineno = 0;

    memset(p, 0, sizeof(*p));
    p->max_model_len = 8192;
    p->kv_layers = 2;
    p->kv_heads = 2;
    p->head_dim = 4;
    p->dtype_bytes = 1;

    while (*text) {
        const char *eol = strchr(text, '\n');
        size_t len = eol ? (size_t) (eol - text) : strlen(text);
        char line[256], key[64], val[128], extra[2];
        int n;

        lineno++;
        if (len >= sizeof(line)) {
            snprintf(err, (size_t) err_len, "profile line %d is too long", lineno);
            return -1;
        }
        memcpy(line, text, len);
        line[len] = '\0';
        text += len + (eol ? 1 : 0);
        if (strchr(line, '#'))
            *strchr(line, '#') = '\0';
        n = sscanf(line, "%63s %127s %1s", key, val, extra);
        if (n <= 0)
            continue;
        if (n != 2 || set_field(p, key, val) != 0) {
            snprintf(err, (size_t) err_len,
                     "profile line %d: bad or unknown setting '%s'", lineno, line);
            return -1;
        }
    }
    return 0;
}

int sim_profile_load(struct sim_profile *p, const char *name_or_path,
    char *err, int err_len)
{
    FILE *f;
    char *text;
    long size;
    int rc;

    for (const struct sim_profile_text *b = sim_builtin_profiles; b->name; b++)
        if (strcmp(b->name, name_or_path) == 0)
            return sim_profile_parse(p, b->text, err, err_len);

    f = fopen(name_or_path, "rb");
    if (f == NULL) {
        snprintf(err, (size_t) err_len,
                 "--sim-profile '%s': no built-in profile or readable file "
                 "by that name", name_or_path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);
    if (size < 0 || size > 1 << 20 || (text = calloc(1, (size_t) size + 1)) == NULL) {
        fclose(f);
        snprintf(err, (size_t) err_len, "--sim-profile '%s': unreadable", name_or_path);
        return -1;
    }
    if (fread(text, 1, (size_t) size, f) != (size_t) size) {
        free(text);
        fclose(f);
        snprintf(err, (size_t) err_len, "--sim-profile '%s': read error", name_or_path);
        return -1;
    }
    fclose(f);
    rc = sim_profile_parse(p, text, err, err_len);
    free(text);
    return rc;
}

double sim_profile_step_seconds(const struct sim_profile *p,
    int prefill_tokens, double prefill_attention,
    int n_decode, long decode_kv_tokens)
{
    double us = 0, prefill = 0, decode = 0;

    if (prefill_tokens > 0)
        prefill = p->prefill_base_us
                  + p->prefill_per_token_us * prefill_tokens
                  + p->prefill_per_token_ctx_us * prefill_attention;
    if (n_decode > 0)
        decode = p->decode_base_us + p->decode_per_seq_us * n_decode
                 + p->decode_per_kv_token_us * (double) decode_kv_tokens;
    us = prefill + decode;
    if (prefill_tokens > 0 && n_decode > 0)
        us -= p->prefill_base_us < p->decode_base_us ? p->prefill_base_us
                                                     : p->decode_base_us;
    return us * 1e-6;
}
