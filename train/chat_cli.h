/*
 * chat_cli.h: the `chat` program (the CPU) and `chat_gpu` (an NVIDIA GPU), all but where the
 * model runs: a ChatBackend loads it and gives the Decoder that runs its steps.
 *
 *   ./chat --model DIR [--adapter DIR] [--system TEXT] [options]
 *   ./chat --model DIR [--adapter DIR] --batch REQUESTS.jsonl --out ANSWERS.jsonl [options]
 *
 * The model is a Hugging Face directory (a base model, a merged one, or a bitsandbytes-4bit
 * checkpoint); the adapter, when given, is applied unmerged, whatever rank, targets and
 * scale its adapter_config.json says (a PEFT adapter directory, or a train_cpu run
 * directory, whose adapter/ is the one training wrote). The conversation is encoded in the
 * chat format the tokenizer implies (tokenizer/chat.h), exactly as training encoded it.
 * Generation uses the KV cache of decode.h (a rolling buffer for sliding-window models),
 * sampling as sample.h says.
 *
 * Interactive: each line typed is a user turn; the answer is printed as it is generated;
 * /system TEXT, /reset, /save FILE, /quit (and /help). Ctrl-C stops the answer being
 * generated, not the program; Ctrl-D leaves. After each answer a line on standard error
 * says why it stopped (end of sequence, the token limit, a full context, interrupted).
 * When standard input is not a terminal each input line is one user turn and only the
 * answers go to standard output, one line each, so chat can be scripted.
 * With --batch, the requests of a file are answered instead (chat_batch.h).
 */
#ifndef PERSONA_CHAT_CLI_H
#define PERSONA_CHAT_CLI_H

#include <stdint.h>
#include <stddef.h>

#include "decode.h"

// What the backend is asked to load.
typedef struct {
    const char *model;    // a Hugging Face directory or a GGUF file
    const char *adapter;  // a PEFT adapter directory, or NULL
    int frozen;           // FROZEN_NF4, FROZEN_BF16 or FROZEN_F32 (what --weights says)
    int threads;          // --threads (0: the default)
    int sequences;        // the most sequences decoded together (1, or --slots with --batch)
    int64_t context;      // positions a sequence may hold when the model has no window
} ChatLoad;

typedef struct {
    const char *program;          // "chat", "chat_gpu"
    const char *where;            // for --help: "on the CPU", ...
    const char *default_weights;  // --weights when not given (NULL: nf4 with an adapter, else bf16)
    // Loads the model (and adapter) and sets *d; info gets a line for the banner (where it
    // runs, the adapter's settings). Returns 0, or 1 (bad input) / 2 with err.
    int (*load)(const ChatLoad *l, Decoder *d, char *info, size_t n, char *err);
    void (*free)(Decoder *d);
} ChatBackend;

// The whole program; returns its exit status.
int chat_main(int argc, char **argv, const ChatBackend *b);

#endif
