/*
 * Latency profiles for the sim backend.
 *
 * A step that computes prefill chunks and decodes takes
 *   prefill:  a + b * new_tokens + c * sum(new_tokens * context_tokens)
 *   decode:   d + e * batch + f * kv_tokens_in_batch
 * and a step with both pays the fixed part once: prefill + decode - min(a, d)
 * (the weights are read once per step however the batch is made up).
 *
 * A profile is a text file of "key value" lines ('#' starts a comment); the
 * files in workers/profiles/ are also compiled in and can be named without a
 * path (--sim-profile llama3-8b-h100).
 */

#ifndef LLMD_SIM_PROFILE_H
#define LLMD_SIM_PROFILE_H

struct sim_profile {
    char    name[64];
    int     max_model_len;
    /* microseconds */
    double  prefill_base_us;            /* a */
    double  prefill_per_token_us;       /* b */
    double  prefill_per_token_ctx_us;   /* c */
    double  decode_base_us;             /* d */
    double  decode_per_seq_us;          /* e */
    double  decode_per_kv_token_us;     /* f */
    /* geometry of the simulated KV pages (small: bytes are really written) */
    int     kv_layers;
    int     kv_heads;
    int     head_dim;
    int     dtype_bytes;
};

/* Parse profile text; returns 0, or -1 with a reason naming the line. */
int sim_profile_parse(struct sim_profile *p, const char *text,
    char *err, int err_len);

/* Load a profile by built-in name or file path. */
int sim_profile_load(struct sim_profile *p, const char *name_or_path,
    char *err, int err_len);

/* Step time in seconds for a batch, before --speed scaling. */
double sim_profile_step_seconds(const struct sim_profile *p,
    int prefill_tokens, double prefill_attention,
    int n_decode, long decode_kv_tokens);

/* Built-in profiles, generated from workers/profiles/ at build time. */
struct sim_profile_text {
    const char *name;
    const char *text;
};
extern const struct sim_profile_text sim_builtin_profiles[];

#endif
