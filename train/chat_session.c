// chat_session.c: the conversation the chat program holds (see chat_session.h).
#include "chat_session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/persona_jsonl.h"
#include "../tokenizer/utf8.h"

int chat_prompt(Tokenizer *tok, ChatFormat fmt, const ChatMessage *msgs, size_t n, TokenVec *ids, char *err) {
    if (n == 0 || msgs[n - 1].role != ROLE_USER) return set_error(err, "the last message must be the user's");
    ByteBuf mask = {0};
    ids->len = 0;
    int rc = chat_encode(tok, fmt, msgs, n, ids, &mask, err);
    bytebuf_free(&mask);
    return rc;
}

int32_t chat_stop_token(const Tokenizer *tok, ChatFormat fmt) {
    int32_t end = fmt == CHAT_CHATML ? tokenizer_special_id(tok, "<|im_end|>") : -1;
    return end >= 0 ? end : tok->eos_id;
}

void session_init(ChatSession *s, Tokenizer *tok, ChatFormat fmt, const char *system) {
    memset(s, 0, sizeof(*s));
    s->tok = tok;
    s->fmt = fmt;
    session_set_system(s, system);
}

void session_reset(ChatSession *s) {
    for (size_t i = 0; i < s->n; i++) free(s->msgs[i].text);
    s->n = s->first = 0;
}

void session_free(ChatSession *s) {
    session_reset(s);
    free(s->msgs);
    free(s->system);
    memset(s, 0, sizeof(*s));
}

// text[0..len) as a NUL-terminated string of valid UTF-8 without NUL bytes.
static char *clean_text(const char *text, size_t len) {
    ByteBuf b = {0};
    utf8_replace_invalid(text, len, &b);
    size_t k = 0;
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i]) b.data[k++] = b.data[i];
    bytebuf_push(&b, '\0');
    return b.data;
}

void session_set_system(ChatSession *s, const char *text) {
    free(s->system);
    s->system = text && *text ? clean_text(text, strlen(text)) : NULL;
}

void session_add(ChatSession *s, ChatRole role, const char *text, size_t len) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->msgs = xrealloc(s->msgs, s->cap * sizeof(SessionMessage));
    }
    s->msgs[s->n++] = (SessionMessage){role, clean_text(text, len)};
}

void session_pop(ChatSession *s) {
    if (s->n == 0) return;
    free(s->msgs[--s->n].text);
    if (s->first > s->n) s->first = s->n;
}

// The system prompt and msgs[from..n) as chat messages (contents pointing into s).
static size_t as_messages(const ChatSession *s, size_t from, ChatMessage *out) {
    size_t k = 0;
    if (s->system) out[k++] = (ChatMessage){ROLE_SYSTEM, s->system, strlen(s->system), -1.0};
    for (size_t i = from; i < s->n; i++)
        out[k++] = (ChatMessage){s->msgs[i].role, s->msgs[i].text, strlen(s->msgs[i].text), -1.0};
    return k;
}

int session_prompt(ChatSession *s, TokenVec *ids, char *err) {
    ChatMessage *m = xmalloc((s->n + 1) * sizeof(ChatMessage));
    int rc = chat_prompt(s->tok, s->fmt, m, as_messages(s, s->first, m), ids, err);
    free(m);
    return rc;
}

int session_drop_oldest(ChatSession *s) {
    size_t next = s->first + 1;  // the oldest turn: a user message and the answers after it
    while (next < s->n && s->msgs[next].role != ROLE_USER) next++;
    if (next >= s->n) return -1;
    s->first = next;
    return 0;
}

int session_save(const ChatSession *s, const char *path, char *err) {
    cJSON *c = jsonl_conversation();
    ChatMessage *m = xmalloc((s->n + 1) * sizeof(ChatMessage));
    size_t k = as_messages(s, 0, m);
    static const char *roles[] = {"system", "user", "assistant"};
    for (size_t i = 0; i < k; i++) jsonl_add_message(c, roles[m[i].role], m[i].content);
    free(m);
    char *json = jsonl_print(c);
    cJSON_Delete(c);
    ByteBuf line = {0};
    bytebuf_append(&line, json, strlen(json));
    bytebuf_push(&line, '\n');
    free(json);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644), rc = 0;
    if (fd < 0 || write(fd, line.data, line.len) != (ssize_t)line.len || fsync(fd))
        rc = set_error(err, "%s: cannot append: %s", path, strerror(errno));
    if (fd >= 0 && close(fd) && rc == 0) rc = set_error(err, "%s: cannot close: %s", path, strerror(errno));
    bytebuf_free(&line);
    return rc;
}
