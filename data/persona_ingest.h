/*
 * persona_ingest.h: the teacher's answers back into conversations.
 *
 * Answers are JSONL, one per request, in either form:
 *   OpenAI batch output  {"custom_id": ID, "response": {"status_code": 200, "body":
 *                         {"choices": [{"message": {"content": TEXT}}]}}, "error": null}
 *   plain                {"custom_id": ID, "content": TEXT}
 * and are joined to the requests file (persona_prompts.h) by custom_id.
 *
 * A rewrite (task "rewrite") becomes a first-person recollection answering a question about
 * its passage: {"messages": [{"role": "user", "content": Q}, {"role": "assistant",
 * "content": TEXT}], "meta": {"source": "rewrite", "id": ID}}, Q one of a few phrasings
 * (chosen by the id's hash) naming the story and the passage's first words. A Q&A answer
 * (task "qa") must be strict JSON, {"pairs": [{"question": Q, "answer": A}, ...]} (a bare
 * array of pairs is accepted, and so is one enclosing ``` fence, the habit of chat models);
 * each pair becomes a conversation with "meta": {"source": "qa", "id": ID}.
 *
 * Nothing half-written: an answer is used whole or rejected whole, with one counted reason:
 *   invalid line      the line is not a JSON object with a string "custom_id"
 *   unknown id        no request has that id
 *   duplicate         a second answer for an id
 *   teacher error     "error" is set, or "status_code" is not 200, or no content
 *   empty             the content is blank
 *   not JSON          (qa) the content does not parse as the JSON asked for
 *   bad pairs         (qa) no pairs, more than twice the number asked, or a pair without
 *                     a non-empty string "question" and "answer"
 *   not first person  the text speaks of the character rather than as them: outside
 *                     quotations, fewer than one "I/me/my/mine/myself" per 60 words (a
 *                     rewrite only; a short answer may have none), or the character's name
 *                     more often than once per 4 of those
 *   too long          a rewrite of more than twice the passage's words plus 50, or an
 *                     answer longer than the passage
 */
#ifndef PERSONA_INGEST_H
#define PERSONA_INGEST_H

#include <stdio.h>

#include "persona_jsonl.h"

enum {
    REJECT_INVALID_LINE,
    REJECT_UNKNOWN_ID,
    REJECT_DUPLICATE,
    REJECT_TEACHER_ERROR,
    REJECT_EMPTY,
    REJECT_NOT_JSON,
    REJECT_BAD_PAIRS,
    REJECT_NOT_FIRST_PERSON,
    REJECT_TOO_LONG,
    REJECT_COUNT
};

const char *reject_name(int reason);

typedef struct {
    size_t requests[2];  // rewrite, qa requests read
    size_t answers, accepted[2], conversations[2];
    size_t rejected[REJECT_COUNT];
    size_t unanswered;   // requests with no usable answer
} IngestStats;

typedef struct {
    FILE *narrative, *qa;  // outputs (either may be NULL when no request needs it)
    FILE *rejects;         // optional: each rejected answer with its reason
} IngestOutputs;

typedef struct Requests Requests;

// Reads a requests file. Returns NULL with `file:line: reason` in err if a line is not a
// request that `persona prompts` would write.
Requests *requests_load(const char *path, char *err);
// How many requests of each task (rewrite, qa) the file holds.
size_t requests_count(const Requests *r, int qa);
void requests_free(Requests *r);

// Reads the answers and writes the conversations. Returns -1 with the reason in err when
// the answers file cannot be read or holds no line at all.
int ingest_answers(Requests *r, const char *answers_path, const IngestOutputs *out, IngestStats *st, char *err);

// All of `persona ingest` on files: reads the requests, opens the outputs (outs[0] the
// narrative, outs[1] the Q&A, outs[2] the rejects, each NULL when not wanted; the first two
// are required when the requests ask for their task), reads the answers, commits every
// output together (or none) and prints the report to stdout and errors to stderr. Returns
// the exit status: 0, 1 bad input (nothing usable), 2 a failed write.
int ingest_files(const char *requests, const char *answers, const char *const outs[3], IngestStats *st);
// "requests: ...", "answers: ...", "rejected: ..." lines.
void ingest_report(const IngestStats *st, FILE *f);

#endif
