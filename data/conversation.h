/*
 * conversation.h: one line of mistral-finetune JSONL, parsed and checked.
 *
 * A line is one JSON object of one of two kinds (mistral-finetune's README, data formats):
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": "...", "weight": 0|1}, ...]}
 *       a conversation; "weight" (assistant messages) 0 = no loss on that turn
 *   {"text": "..."}
 *       plain pretraining text
 * Other top-level keys are ignored, as mistral-finetune ignores them.
 *
 * conversation_parse() refuses, with a precise reason, what mistral-common would refuse
 * for any use of the data (ValidationMode.finetuning, validator.py), and what cJSON would
 * otherwise let through silently:
 *   - invalid JSON (position given), trailing characters after the object, a raw control
 *     character, a "\u0000" escape (cJSON would cut the string there), not an object;
 *   - neither "messages" nor "text", or both; "messages" not an array, "text" not a string
 *     or empty;
 *   - a message that is not an object, has no string "role" or an unknown role (tools are
 *     not supported), no string "content", a "weight" that is not 0 or 1 (mistral-common:
 *     "Assistant message weight must be either 0 or 1"), an empty assistant message
 *     (mistral-common: "Assistant message must have either content or tool_calls");
 *   - invalid UTF-8 in any string used (cJSON copies bytes unchecked; Python would not
 *     even read the file).
 * conversation_check_finetuning() adds the rules that only training needs (a prompt for
 * inference may end with a user turn): at least one assistant message, and the last
 * message must be an assistant's (mistral-common's _validate_last_message in finetuning
 * mode, applied like mistral-common to the messages as written).
 *
 * The parsed strings belong to the Conversation and stay valid until the next parse or
 * conversation_free(); a Conversation is reused from line to line without reallocating.
 */
#ifndef PERSONA_CONVERSATION_H
#define PERSONA_CONVERSATION_H

#include <stddef.h>

#include "../tokenizer/chat.h"

typedef enum { CONV_CHAT = 1, CONV_TEXT = 2 } ConvKind;

typedef struct {
    ConvKind kind;
    ChatMessage *msgs;  // CONV_CHAT: the messages, contents pointing into json
    size_t n, cap;
    const char *text;   // CONV_TEXT: the text, pointing into json
    size_t text_len;
    struct cJSON *json;
} Conversation;

// Parses line[0..n). Returns 0, or -1 with the reason (no file or line, the caller knows
// them) in why, e.g. `messages[2]: unknown role "tool" (expected system, user or assistant)`.
int conversation_parse(Conversation *c, const char *line, size_t n, char *why);
// The finetuning rules above. Returns 0 or -1 with the reason in why.
int conversation_check_finetuning(const Conversation *c, char *why);
// A default system prompt: prepends a system message text[0..len) to a conversation that
// has none (text must outlive the Conversation's use). Does nothing to "text" lines.
void conversation_default_system(Conversation *c, const char *text, size_t len);
void conversation_free(Conversation *c);

#endif
