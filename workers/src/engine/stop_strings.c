#include "stop_strings.h"

#include <string.h>

bool stop_append(struct worker_request *r, const char *bytes, int n)
{
    const struct gen_params *p = &r->params;
    int old_len = r->text_len;

    if (n > r->text_cap - r->text_len)
        n = r->text_cap - r->text_len;
    memcpy(r->text + r->text_len, bytes, (size_t) n);
    r->text_len += n;

    for (int i = 0; i < p->n_stop; i++) {
        int slen = (int) strlen(p->stop[i]);
        /* only a window that includes new bytes can hold a new match */
        int from = old_len - slen + 1;
        char *hit;

        if (from < 0)
            from = 0;
        hit = memmem(r->text + from, (size_t) (r->text_len - from),
                     p->stop[i], (size_t) slen);
        if (hit != NULL) {
            r->text_len = (int) (hit - r->text);
            return true;
        }
    }
    return false;
}

int stop_sendable(const struct worker_request *r)
{
    const struct gen_params *p = &r->params;
    int hold = 0;

    for (int i = 0; i < p->n_stop; i++) {
        int slen = (int) strlen(p->stop[i]);

        for (int k = slen - 1; k > hold; k--) {
            if (k <= r->text_len
                && memcmp(r->text + r->text_len - k, p->stop[i], (size_t) k) == 0) {
                hold = k;
                break;
            }
        }
    }
    if (r->text_len - hold < r->text_sent)
        return r->text_sent;
    return r->text_len - hold;
}
