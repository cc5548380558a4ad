// conversation.c: parsing and checking one JSONL line (see conversation.h).
#include "conversation.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tokenizer/utf8.h"

// Bytes cJSON accepts but that must not pass: raw control characters (JSON allows only
// space, tab, CR and LF between tokens and none inside strings; cJSON takes any byte
// <= 32 as whitespace), and the escape \u0000, which cJSON decodes into a NUL that would
// silently end the C string. Tab and CR are left to cJSON, which reads them correctly.
static int check_bytes(const char *s, size_t n, char *why) {
    int control = 0;  // a branch-free loop the compiler vectorises; the position only on failure
    for (size_t i = 0; i < n; i++) control |= (unsigned char)s[i] < 0x20 && s[i] != '\t' && s[i] != '\r';
    for (size_t i = 0; control && i < n; i++)
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t' && s[i] != '\r')
            return set_error(why, "invalid JSON: raw control character 0x%02X at byte %zu", (unsigned char)s[i], i + 1);
    for (const char *p = s, *end = s + n; (p = memchr(p, '\\', (size_t)(end - p))) != NULL;) {
        size_t run = 0;  // in a run of backslashes, pairs are literal backslashes; an odd one escapes
        while (p + run < end && p[run] == '\\') run++;
        if (run % 2 && (size_t)(end - p) >= run + 5 && !memcmp(p + run, "u0000", 5))
            return set_error(why, "\\u0000 escape (NUL character) at byte %zu: not supported", (size_t)(p + run - 1 - s) + 1);
        p += run;
    }
    return 0;
}

static int role_of(const char *r, ChatRole *role) {
    if (!strcmp(r, "system")) *role = ROLE_SYSTEM;
    else if (!strcmp(r, "user")) *role = ROLE_USER;
    else if (!strcmp(r, "assistant")) *role = ROLE_ASSISTANT;
    else return -1;
    return 0;
}

// One element of "messages" into c->msgs[k]. Returns 0 or -1 with the reason (no prefix).
static int parse_message(const cJSON *m, ChatMessage *out, char *why) {
    if (!cJSON_IsObject(m)) return set_error(why, "not a JSON object");
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    const cJSON *weight = cJSON_GetObjectItemCaseSensitive(m, "weight");
    if (!cJSON_IsString(role)) return set_error(why, "no string \"role\"");
    if (role_of(role->valuestring, &out->role)) {
        const char *r = role->valuestring;
        int printable = utf8_valid(r, strlen(r)) && strlen(r) < 40;
        return set_error(why, "unknown role \"%s\" (expected system, user or assistant)", printable ? r : "?");
    }
    if (!cJSON_IsString(content)) return set_error(why, "no string \"content\"");
    out->content = content->valuestring;
    out->len = strlen(content->valuestring);
    if (!utf8_valid(out->content, out->len)) return set_error(why, "invalid UTF-8 in \"content\"");
    out->weight = -1.0;
    if (weight) {
        if (!cJSON_IsNumber(weight)) return set_error(why, "\"weight\" is not a number");
        if (weight->valuedouble != 0.0 && weight->valuedouble != 1.0)
            return set_error(why, "\"weight\" must be 0 or 1");
        if (out->role == ROLE_ASSISTANT) out->weight = weight->valuedouble;
    }
    if (out->role == ROLE_ASSISTANT && out->len == 0) return set_error(why, "empty assistant message");
    return 0;
}

int conversation_parse(Conversation *c, const char *line, size_t n, char *why) {
    cJSON_Delete(c->json);
    c->json = NULL;
    c->n = 0;
    c->text = NULL;
    c->text_len = 0;
    if (check_bytes(line, n, why)) return -1;
    const char *end = NULL;
    c->json = cJSON_ParseWithLengthOpts(line, n, &end, 0);
    if (!c->json) return set_error(why, "invalid JSON at byte %zu", end ? (size_t)(end - line) + 1 : (size_t)1);
    // cJSON stops after the first value; anything but whitespace after it is an error
    while (end < line + n && strchr(" \t\r", *end)) end++;
    if (end < line + n) return set_error(why, "invalid JSON: unexpected text after the object at byte %zu", (size_t)(end - line) + 1);
    if (!cJSON_IsObject(c->json)) return set_error(why, "not a JSON object");

    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(c->json, "messages");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(c->json, "text");
    if (messages && text) return set_error(why, "both \"messages\" and \"text\" (a line is one or the other)");
    if (text) {
        c->kind = CONV_TEXT;
        if (!cJSON_IsString(text)) return set_error(why, "\"text\" is not a string");
        c->text = text->valuestring;
        c->text_len = strlen(text->valuestring);
        if (c->text_len == 0) return set_error(why, "empty \"text\"");
        if (!utf8_valid(c->text, c->text_len)) return set_error(why, "invalid UTF-8 in \"text\"");
        return 0;
    }
    c->kind = CONV_CHAT;
    if (!messages) return set_error(why, "no \"messages\" array (and no \"text\")");
    if (!cJSON_IsArray(messages)) return set_error(why, "\"messages\" is not an array");
    size_t count = (size_t)cJSON_GetArraySize(messages);
    if (count + 1 > c->cap) {  // + 1: room for conversation_default_system
        c->cap = count + 1;
        c->msgs = xrealloc(c->msgs, c->cap * sizeof(ChatMessage));
    }
    char reason[ERR_LEN];
    for (const cJSON *m = messages->child; m; m = m->next, c->n++)
        if (parse_message(m, &c->msgs[c->n], reason)) return set_error(why, "messages[%zu]: %s", c->n, reason);
    return 0;
}

int conversation_check_finetuning(const Conversation *c, char *why) {
    if (c->kind != CONV_CHAT) return 0;
    if (c->n == 0) return set_error(why, "\"messages\" is empty");
    int has_assistant = 0;
    for (size_t k = 0; k < c->n; k++) has_assistant |= c->msgs[k].role == ROLE_ASSISTANT;
    if (!has_assistant) return set_error(why, "no assistant message (nothing to train on)");
    ChatRole last = c->msgs[c->n - 1].role;
    if (last != ROLE_ASSISTANT)
        return set_error(why, "messages[%zu]: the last message is a %s message; training needs it to be the assistant's",
                         c->n - 1, last == ROLE_USER ? "user" : "system");
    return 0;
}

void conversation_default_system(Conversation *c, const char *text, size_t len) {
    if (c->kind != CONV_CHAT || len == 0) return;
    for (size_t k = 0; k < c->n; k++)
        if (c->msgs[k].role == ROLE_SYSTEM) return;
    memmove(c->msgs + 1, c->msgs, c->n * sizeof(ChatMessage));  // parse left room for one
    c->msgs[0] = (ChatMessage){ROLE_SYSTEM, text, len, -1.0};
    c->n++;
}

void conversation_free(Conversation *c) {
    cJSON_Delete(c->json);
    free(c->msgs);
    memset(c, 0, sizeof(*c));
}
