/*
 * persona_prompts.h: work for a teacher model (strategies B and C).
 *
 * Chunks. The narrative is cut into chunks of at most --chunk-tokens tokens: whole
 * paragraphs where they fit, a paragraph too long for one chunk cut at sentence ends (a
 * sentence too long for one, at word boundaries). Each chunk after the first in a scene
 * starts with the last units (paragraphs or sentences) of the one before, up to
 * --overlap-tokens, so that no event is only ever seen cut in half. Chunks never cross a
 * scene break (a heading, or blank lines). Tokens are counted with the real tokenizer when
 * --tokenizer is given, otherwise estimated as 1.3 tokens per word (Mistral's tokenizers
 * give 1.2 to 1.4 on English prose). A chunk is kept when the character is present: one of
 * its paragraphs names them (a name, an alias, a phrase learned for them) or holds one of
 * their lines.
 *
 * Requests. Each kept chunk gives one request per task, one JSON line in the OpenAI batch
 * input format, so that any OpenAI-compatible batch tool, or any command that reads such
 * requests as JSONL and writes answers as JSONL (`persona build --teacher`), can answer it:
 *   {"custom_id": "c00042-9f3a61b2:rewrite", "method": "POST", "url": "/v1/chat/completions",
 *    "body": {"model": M, "messages": [{"role": "user", "content": PROMPT}],
 *             "max_tokens": N, "temperature": 0.7},
 *    "persona": {"task": "rewrite"|"qa", "chunk": "c00042-9f3a61b2", "character": NAME,
 *                "names": [NAME, ALIAS...], "story": TITLE, "lines": [FIRST, LAST],
 *                "passage": TEXT, "pairs": K}}
 * The chunk id is the chunk's number and the FNV-1a hash of its text: the same book and
 * options give the same ids, and a changed passage a new one. "persona" is what `persona
 * ingest` needs to join the answers back (a tool that refuses unknown keys can be given the
 * file without it; ingest needs the original). PROMPT is the task's template with
 * {{character}}, {{story}}, {{passage}} and {{pairs}} filled in; a template is a plain
 * file (data/templates/rewrite.txt and qa.txt by default) and may use no other {{...}}.
 * max_tokens: twice the passage's tokens plus 200 for a rewrite, 200 per pair plus 100
 * for Q&A.
 */
#ifndef PERSONA_PROMPTS_H
#define PERSONA_PROMPTS_H

#include <stdio.h>

#include "../tokenizer/tokenizer.h"
#include "persona_dialogue.h"

typedef struct {
    char *text;
    const char *path;
} Template;

// Reads a template and checks its placeholders. Returns 0, or -1 with "path:line: reason".
int template_load(Template *t, const char *path, char *err);
void template_free(Template *t);

typedef struct {
    const char *character;
    const char *const *aliases;
    size_t n_aliases;
    double min_confidence;
    Tokenizer *tokenizer;  // NULL: estimate 1.3 tokens per word
    int chunk_tokens, overlap_tokens, pairs;
    const Template *rewrite, *qa;  // NULL: that task is not asked for
    const char *model;
} PromptOptions;

typedef struct {
    size_t chunks, kept, requests;
    size_t tokens_total;
    int tokens_max;
} PromptStats;

void prompts_write(const Dialogue *d, const PromptOptions *o, FILE *out, PromptStats *st);
// "chunks: N, K with NAME present (mean T tokens, longest L)".
void prompts_report(const PromptStats *st, const char *character, FILE *f);

// What prompts_write needs from files: the tokenizer (optional) and the two templates (each
// NULL when its task is not asked for).
typedef struct {
    Tokenizer tok;
    Tokenizer *tokenizer;  // &tok, or NULL: estimate
    Template rewrite_t, qa_t;
    const Template *rewrite, *qa;
} PromptTools;

// Loads them (any path may be NULL). Returns 0, or -1 with the reason in err (nothing to
// free then).
int prompt_tools_load(PromptTools *t, const char *tokenizer, const char *rewrite, const char *qa, char *err);
void prompt_tools_free(PromptTools *t);

#endif
