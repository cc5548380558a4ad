/*
 * chat_session.h: a conversation with the model, as the chat program holds it.
 *
 * The messages (an optional system prompt, then user and assistant turns), the prompt the
 * tokenizer's chat format makes of them (tokenizer/chat.h: exactly what training encodes,
 * ending where the assistant's answer begins), the turns dropped from the prompt when a
 * model without a sliding window runs out of context (the oldest first, never the system
 * prompt; the session keeps them for /save), and the conversation saved as one
 * mistral-finetune JSONL line, so that a chat becomes training data.
 */
#ifndef PERSONA_CHAT_SESSION_H
#define PERSONA_CHAT_SESSION_H

#include <stddef.h>

#include "../tokenizer/chat.h"

// The generation prompt of messages (the last one the user's): the chat format's tokens up
// to where the answer starts. Returns 0 or -1 with the reason in err.
int chat_prompt(Tokenizer *tok, ChatFormat fmt, const ChatMessage *msgs, size_t n, TokenVec *ids, char *err);
// The token that ends an answer in the format: ChatML's <|im_end|>, else the end of sequence.
int32_t chat_stop_token(const Tokenizer *tok, ChatFormat fmt);

typedef struct {
    ChatRole role;
    char *text;  // NUL-terminated, valid UTF-8
} SessionMessage;

typedef struct {
    Tokenizer *tok;
    ChatFormat fmt;
    char *system;          // NULL: none
    SessionMessage *msgs;  // user and assistant turns
    size_t n, cap;
    size_t first;          // msgs[0..first) were dropped from the prompt (context full)
} ChatSession;

void session_init(ChatSession *s, Tokenizer *tok, ChatFormat fmt, const char *system);
void session_free(ChatSession *s);
// Replaces the system prompt (NULL or "" removes it).
void session_set_system(ChatSession *s, const char *text);
// Appends a message; invalid UTF-8 in text[0..len) becomes U+FFFD, NUL bytes are dropped.
void session_add(ChatSession *s, ChatRole role, const char *text, size_t len);
// Removes the last message.
void session_pop(ChatSession *s);
// Forgets every turn (the system prompt stays).
void session_reset(ChatSession *s);
// The generation prompt of the system prompt and msgs[first..n).
int session_prompt(ChatSession *s, TokenVec *ids, char *err);
// Drops the oldest user + assistant turn still in the prompt. Returns 0, or -1 when only
// the last user message is left.
int session_drop_oldest(ChatSession *s);
// Appends the whole conversation (dropped turns included) to path as one JSONL line
// {"messages": [...]}, in a single write. Returns 0 or -1 with the reason in err.
int session_save(const ChatSession *s, const char *path, char *err);

#endif
