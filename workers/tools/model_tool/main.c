/*
 * llmd-model-tool: the model tools that stay out of the production worker.
 *
 *   llmd-model-tool mkmodel ...   a generated GGUF test model
 *   llmd-model-tool logits ...    the cpu backend's logits for a token list
 *   llmd-model-tool bench ...     prefill and decode timings of a model
 *
 * `llmd-worker mkmodel|logits|bench` runs this binary from the worker's own
 * directory, so the commands people know keep working.
 */

#include <stdio.h>
#include <string.h>

#include "model_tool/model_bench.h"
#include "model_tool/model_gen.h"
#include "model_tool/model_logits.h"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "mkmodel") == 0)
        return model_gen_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "logits") == 0)
        return model_logits_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "bench") == 0)
        return model_bench_main(argc - 1, argv + 1);
    fputs("usage: llmd-model-tool mkmodel|logits|bench [ARGS...]\n", stderr);
    return 2;
}
