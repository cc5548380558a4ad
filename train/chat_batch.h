/*
 * chat_batch.h: `chat --batch REQUESTS --out ANSWERS`, many conversations answered at once.
 *
 * Requests are lines of the OpenAI batch input format, as `persona prompts` writes them
 * (data/PERSONA.md): {"custom_id": ID, "body": {"messages": [...], "max_tokens": N,
 * "temperature": T, "top_p": P, "model": NAME}, ...}; the messages end with the user's. Each
 * answer is one line of the OpenAI batch output format, which `persona ingest` reads:
 *   {"id": "chat-ID", "custom_id": ID, "response": {"status_code": 200, "body": {"object":
 *    "chat.completion", "model": NAME, "choices": [{"index": 0, "message": {"role":
 *    "assistant", "content": TEXT}, "finish_reason": "stop"|"length"}], "usage": {...}}},
 *    "error": null}
 * or, for a prompt longer than the context of a model without a window, "response": null
 * and "error": {"code": "context_length_exceeded", "message": ...}.
 *
 * Continuous batching: up to `slots` sequences are decoded together, one step reading for
 * each its next prompt chunk or its last sampled token; a sequence that ends leaves its slot
 * to the next request at once. A request's answer never depends on the others (decode.h)
 * and its random numbers come from seed and its custom_id alone, so the answers are the same
 * whatever the batch, the order or an interruption.
 *
 * Resumable: the answers file is appended one whole line at a time and flushed; ids already
 * in it are skipped, and a last line cut short by a kill is cut off before appending. So a
 * killed run, run again, ends with every id answered exactly once. Progress with an ETA goes
 * to standard error.
 */
#ifndef PERSONA_CHAT_BATCH_H
#define PERSONA_CHAT_BATCH_H

#include <stdint.h>

#include "../tokenizer/chat.h"
#include "decode.h"
#include "model.h"
#include "sample.h"

typedef struct {
    const char *requests, *out;
    int slots;            // sequences decoded together
    int max_tokens;       // for a request that gives none
    SampleConfig sample;  // for a request that gives no temperature / top_p
    int force_max_tokens, force_temperature, force_top_p;  // the command line wins over requests
    uint64_t seed;
    int64_t context;  // positions a model without a window may hold per sequence
} BatchOptions;

typedef struct BatchJob BatchJob;

// Reads and checks the requests (every prompt encoded) and the answers already written (a
// cut last line removed). Returns NULL with `file:line: reason` in err.
BatchJob *batch_job_prepare(const BatchOptions *o, Tokenizer *tok, ChatFormat fmt, char *err);
// Answers what is left. Returns the program's exit status: 0, or 2 (cannot write, reported).
int batch_job_run(BatchJob *job, const Decoder *d);
void batch_job_free(BatchJob *job);

#endif
