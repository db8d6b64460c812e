# A fast, made-up profile for tests and demos on small machines: 1 ms per
# decode step plus small per-token costs.  Not derived from any real model.
name                        tiny-fast
max_model_len               4096
prefill_base_us             1000
prefill_per_token_us        2
prefill_per_token_ctx_us    0
decode_base_us              1000
decode_per_seq_us           5
decode_per_kv_token_us      0.01
kv_layers                   2
kv_heads                    2
head_dim                    4
dtype_bytes                 1
