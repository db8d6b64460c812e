# Llama-3-8B (BF16) on one NVIDIA H100 SXM 80GB, vLLM-style paged attention.
#
# How the coefficients were derived (nothing here was fitted to a trace of a
# real run; they are first-order estimates from published figures):
#
# Model facts (Meta Llama-3-8B config.json): 8.03e9 parameters (16.06 GB in
# BF16), 32 layers, hidden 4096, 32 query heads, 8 KV heads, head_dim 128,
# context 8192.  KV bytes per token = 2 * 32 layers * 8 heads * 128 * 2 B
# = 131,072 B.
#
# GPU figures: 3.0 TB/s device-to-device copy bandwidth and 798 TFLOP/s BF16
# GEMM, both measured on an H100 SXM and recorded in the project's engine
# notes (the datasheet says 3.35 TB/s and 989 TFLOP/s dense).
#
# Published serving figures used as anchors:
#   - Llama-3.1-8B with vLLM on an A100-40GB at concurrency 1 reaches about
#     77% of the memory-bandwidth roofline (johnmusgrave.com; third party).
#   - Llama-3.1-8B BF16 with vLLM on one H100 80GB reaches about 12,500
#     output tokens/s aggregate at high concurrency (morphllm.com compilation
#     of published results; third party, not verified).
#
# decode_base_us d: one step streams all weights once:
#   16.06 GB / 3.0 TB/s = 5.35 ms; at 77% of roofline = 6.95 ms.
# decode_per_kv_token_us f: each context token's KV is read once per step:
#   131,072 B / 3.0 TB/s / 0.77 = 0.057 us.
# decode_per_seq_us e: from the 12,500 tok/s anchor, assuming it was reached
#   at batch 256 with a mean context of 500 tokens (our assumption; vLLM's
#   ShareGPT benchmark prompts and answers are a few hundred tokens each):
#   step = 256 / 12,500 = 20.5 ms = d + 256 e + 0.057 * 256 * 500
#   -> e = (20.5 - 6.95 - 7.3) ms / 256 = 24 us (sampling, launches, MLP
#   compute growing with the batch).
# prefill_per_token_us b: 2 * 8.03e9 FLOP per token at 50% of the measured
#   798 TFLOP/s = 40 us per token (25,000 prompt tokens/s).
# prefill_per_token_ctx_us c: attention adds 4 * 32 layers * 4096 = 524,288
#   FLOP per (new token, context token) pair, at the same 50%: 0.0013 us.
# prefill_base_us a: the step still streams the weights once: a = d.
name                        llama3-8b-h100
max_model_len               8192
prefill_base_us             6950
prefill_per_token_us        40
prefill_per_token_ctx_us    0.0013
decode_base_us              6950
decode_per_seq_us           24
decode_per_kv_token_us      0.057

# Simulated KV pages stay small (32 bytes per token) so that dozens of
# workers fit on one machine; the bytes are really written and shared.
kv_layers                   2
kv_heads                    2
head_dim                    4
dtype_bytes                 1
