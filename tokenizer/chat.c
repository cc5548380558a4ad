// chat.c: Mistral instruct formats and loss masks (see chat.h for the layouts).
#include "chat.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bytelevel.h"

ChatFormat chat_format_for(const Tokenizer *t) {
    if (t->kind == TOKENIZER_BYTELEVEL) return CHAT_CHATML;
    return t->version >= 7 ? CHAT_V7 : t->version >= 3 ? CHAT_V3 : t->version == 2 ? CHAT_V2 : CHAT_V1;
}

int chat_format_parse(const char *name, ChatFormat *f) {
    if (strcasecmp(name, "chatml") == 0) {
        *f = CHAT_CHATML;
        return 0;
    }
    if (tolower((unsigned char)name[0]) == 'v') name++;
    static const ChatFormat all[] = {CHAT_V1, CHAT_V2, CHAT_V3, CHAT_V7};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (atoi(name) == (int)all[i] && name[0] >= '0' && name[0] <= '9' && name[1] == '\0') {
            *f = all[i];
            return 0;
        }
    return -1;
}

const char *chat_format_name(ChatFormat f) {
    return f == CHAT_V1 ? "v1" : f == CHAT_V2 ? "v2" : f == CHAT_V3 ? "v3" : f == CHAT_V7 ? "v7" : "chatml";
}

// A message after normalisation: its text owned here, joined from one or more inputs.
typedef struct {
    ChatRole role;
    ByteBuf text;
    double weight;
    size_t first;  // index of the first input message it was joined from, for messages
} Turn;

static int trained(double weight) { return weight < 0 || weight == 1.0; }

// Messages group while role and weight agree (a user or system message has no weight).
static int same_group(const ChatMessage *a, const ChatMessage *b) {
    if (a->role != b->role) return 0;
    return a->role != ROLE_ASSISTANT || a->weight == b->weight ||
           (a->weight < 0 && b->weight < 0);
}

// Joins the non-empty contents of msgs[from..to) with "\n\n", as mistral-common does.
static void join_contents(const ChatMessage *msgs, size_t from, size_t to, ChatRole role, ByteBuf *out) {
    for (size_t k = from; k < to; k++) {
        if (msgs[k].role != role || msgs[k].len == 0) continue;
        if (out->len) bytebuf_append(out, "\n\n", 2);
        bytebuf_append(out, msgs[k].content, msgs[k].len);
    }
    if (!out->data) bytebuf_append(out, "", 0);  // an empty but valid string
}

// mistral-common's request normalisation. Returns the number of turns written to turns
// (room for n + 1) and, before V7, the joined system prompt in *system (len 0: none).
static size_t normalize(ChatFormat f, const ChatMessage *msgs, size_t n, Turn *turns, ByteBuf *system) {
    size_t count = 0;
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && same_group(&msgs[i], &msgs[j]); j++) {}
        if (msgs[i].role == ROLE_SYSTEM) {
            if (f != CHAT_V7) continue;  // folded into the system prompt below
            for (size_t k = i; k < j; k++) {  // V7 keeps every system message in place
                turns[count] = (Turn){ROLE_SYSTEM, {0}, -1, k};
                join_contents(msgs, k, k + 1, ROLE_SYSTEM, &turns[count++].text);
            }
            continue;
        }
        turns[count] = (Turn){msgs[i].role, {0}, msgs[i].role == ROLE_ASSISTANT ? msgs[i].weight : -1, i};
        join_contents(msgs, i, j, msgs[i].role, &turns[count++].text);
    }
    if (count == 0 || (f != CHAT_V7 && turns[0].role != ROLE_USER)) {
        memmove(turns + 1, turns, count * sizeof(Turn));
        turns[0] = (Turn){ROLE_USER, {0}, -1, 0};
        bytebuf_append(&turns[0].text, "", 0);
        count++;
    }
    if (f != CHAT_V7) join_contents(msgs, 0, n, ROLE_SYSTEM, system);
    return count;
}

// Appends ids[from..] to mask with the given value.
static void mask_to_end(ByteBuf *mask, const TokenVec *ids, char value) {
    while (mask->len < ids->len) bytebuf_push(mask, value);
}

static int special(Tokenizer *t, ChatFormat f, const char *piece, int32_t *id, char *err) {
    *id = tokenizer_special_id(t, piece);
    if (*id >= 0) return 0;
    return set_error(err, "chat format %s needs the special token %s, which this tokenizer does not define",
                     chat_format_name(f), piece);
}

static int encode_turns(Tokenizer *t, ChatFormat f, const Turn *turns, size_t count,
                        const ByteBuf *system, TokenVec *ids, ByteBuf *mask, char *err) {
    int32_t inst = -1, end_inst = -1, sys = -1, end_sys = -1;
    if (f != CHAT_V1 && (special(t, f, "[INST]", &inst, err) || special(t, f, "[/INST]", &end_inst, err)))
        return -1;
    size_t first_user = count, last_user = 0;
    for (size_t k = 0; k < count; k++)
        if (turns[k].role == ROLE_USER) {
            if (first_user == count) first_user = k;
            last_user = k;
        }
    ByteBuf text = {0};
    tokvec_push(ids, t->bos_id);
    mask_to_end(mask, ids, 0);
    int rc = 0;
    for (size_t k = 0; k < count && rc == 0; k++) {
        const Turn *m = &turns[k];
        text.len = 0;
        if (m->role == ROLE_USER) {
            // V1 prepends the system prompt to the first user message, V2/V3 to the last.
            int with_system = system->len && (f == CHAT_V1 ? k == first_user : k == last_user);
            if (f == CHAT_V1) bytebuf_append(&text, "[INST] ", 7);
            if (with_system && f != CHAT_V7) {
                bytebuf_append(&text, system->data, system->len);
                bytebuf_append(&text, "\n\n", 2);
            }
            bytebuf_append(&text, m->text.data, m->text.len);
            if (f == CHAT_V1) {
                bytebuf_append(&text, " [/INST]", 8);
                tokenizer_encode(t, text.data, text.len, ids);
            } else {
                tokvec_push(ids, inst);
                tokenizer_encode(t, text.data, text.len, ids);
                tokvec_push(ids, end_inst);
            }
            mask_to_end(mask, ids, 0);
        } else if (m->role == ROLE_ASSISTANT) {
            if (m->text.len == 0) {
                rc = set_error(err, "messages[%zu]: empty assistant message", m->first);
                break;
            }
            size_t len = m->text.len;
            if (f != CHAT_V1)  // V2+ strip trailing spaces (only spaces) from the answer
                while (len && m->text.data[len - 1] == ' ') len--;
            tokenizer_encode(t, m->text.data, len, ids);
            tokvec_push(ids, t->eos_id);
            mask_to_end(mask, ids, (char)trained(m->weight));
        } else {  // a system message; only V7 keeps them (see normalize)
            if (sys < 0 && (special(t, f, "[SYSTEM_PROMPT]", &sys, err) ||
                            special(t, f, "[/SYSTEM_PROMPT]", &end_sys, err))) {
                rc = -1;
                break;
            }
            tokvec_push(ids, sys);
            tokenizer_encode(t, m->text.data, m->text.len, ids);
            tokvec_push(ids, end_sys);
            mask_to_end(mask, ids, 0);
        }
    }
    bytebuf_free(&text);
    return rc;
}

// One ChatML turn: <|im_start|> encode(role + "\n" + content) <|im_end|> encode("\n"), the
// content tokens and <|im_end|> marked `trained`. The role header and the content are one
// encode (as the template's text is), so the mask starts at the first token that holds
// content bytes.
static void chatml_turn(Tokenizer *t, int32_t start, int32_t end, const char *role, const char *content, size_t len,
                        int trained, int closed, TokenVec *ids, ByteBuf *mask) {
    ByteBuf text = {0};
    tokvec_push(ids, start);
    mask_to_end(mask, ids, 0);
    bytebuf_append(&text, role, strlen(role));
    bytebuf_push(&text, '\n');
    size_t header = text.len, at = 0;
    bytebuf_append(&text, content, len);
    size_t first = ids->len;
    tokenizer_encode(t, text.data, text.len, ids);
    for (size_t i = first; i < ids->len; i++) {  // a token ending past the header holds content
        const char *piece;
        at += tokenizer_piece(t, ids->ids[i], &piece);
        bytebuf_push(mask, (char)(trained && at > header));
    }
    if (closed) {
        tokvec_push(ids, end);
        bytebuf_push(mask, (char)trained);
        tokenizer_encode(t, "\n", 1, ids);
        mask_to_end(mask, ids, 0);
    }
    bytebuf_free(&text);
}

static int encode_chatml(Tokenizer *t, const ChatMessage *msgs, size_t n, TokenVec *ids, ByteBuf *mask, char *err) {
    int32_t start, end;
    if (special(t, CHAT_CHATML, "<|im_start|>", &start, err) || special(t, CHAT_CHATML, "<|im_end|>", &end, err)) return -1;
    size_t sys_len = 0;
    const char *sys = t->kind == TOKENIZER_BYTELEVEL ? bytelevel_default_system(t->bytelevel, &sys_len) : NULL;
    if (sys && (n == 0 || msgs[0].role != ROLE_SYSTEM)) chatml_turn(t, start, end, "system", sys, sys_len, 0, 1, ids, mask);
    static const char *const roles[] = {[ROLE_SYSTEM] = "system", [ROLE_USER] = "user", [ROLE_ASSISTANT] = "assistant"};
    for (size_t k = 0; k < n; k++)
        chatml_turn(t, start, end, roles[msgs[k].role], msgs[k].content, msgs[k].len,
                    msgs[k].role == ROLE_ASSISTANT && trained(msgs[k].weight), 1, ids, mask);
    if (n && msgs[n - 1].role == ROLE_USER) chatml_turn(t, start, end, "assistant", "", 0, 0, 0, ids, mask);
    return 0;
}

int chat_encode(Tokenizer *t, ChatFormat f, const ChatMessage *msgs, size_t n, TokenVec *ids,
                ByteBuf *mask, char *err) {
    if (ids->len != mask->len)
        return set_error(err, "chat_encode: ids (%zu) and mask (%zu) differ in length", ids->len, mask->len);
    if (f == CHAT_CHATML) {
        size_t ids_before = ids->len, mask_before = mask->len;
        int rc = encode_chatml(t, msgs, n, ids, mask, err);
        if (rc) ids->len = ids_before, mask->len = mask_before;
        return rc;
    }
    Turn *turns = xcalloc(n + 1, sizeof(Turn));
    ByteBuf system = {0};
    size_t count = normalize(f, msgs, n, turns, &system);
    size_t ids_before = ids->len, mask_before = mask->len;
    int rc = encode_turns(t, f, turns, count, &system, ids, mask, err);
    if (rc) {  // leave the outputs as they were
        ids->len = ids_before;
        mask->len = mask_before;
    }
    for (size_t k = 0; k < count; k++) bytebuf_free(&turns[k].text);
    free(turns);
    bytebuf_free(&system);
    return rc;
}
