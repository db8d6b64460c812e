/*
 * `llmd-worker logits`: the cpu backend's logits for a token sequence, as
 * JSON lines, for the numpy reference test (tests/reference) and for
 * looking at a model by hand.  The prompt is prefilled (in chunks when
 * asked), then greedy decode steps follow; each line is one position:
 *   {"pos": P, "next": ARGMAX, "logits": [...]}
 */

#ifndef LLMD_MODEL_LOGITS_H
#define LLMD_MODEL_LOGITS_H

int model_logits_main(int argc, char **argv);

#endif
