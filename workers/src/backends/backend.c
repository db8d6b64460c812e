#include "backend.h"

#include <string.h>

/* The cpu and cuda backends plug in here. */
static const struct backend_ops *const backends[] = {
    &sim_backend_ops,
    &cpu_backend_ops,
#ifdef LLMD_HAVE_CUDA
    &cuda_backend_ops,
#endif
};

const struct backend_ops *backend_find(const char *name)
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}
