// persona_prompts.c: chunks and teacher requests (see persona_prompts.h).
#include "persona_prompts.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "persona_extract.h"
#include "persona_jsonl.h"

static const char *const PLACEHOLDERS[] = {"{{character}}", "{{story}}", "{{passage}}", "{{pairs}}", NULL};

int template_load(Template *t, const char *path, char *err) {
    size_t len;
    t->path = path;
    t->text = read_file(path, &len, err);
    if (!t->text) return -1;
    int line = 1, passage = 0;
    for (size_t i = 0; i < len; i++) {
        line += t->text[i] == '\n';
        if (strncmp(t->text + i, "{{", 2)) continue;
        int known = 0;
        for (int k = 0; PLACEHOLDERS[k]; k++)
            if (!strncmp(t->text + i, PLACEHOLDERS[k], strlen(PLACEHOLDERS[k]))) known = 1, passage |= k == 2;
        if (!known) {
            template_free(t);
            return set_error(
                err,
                "%s:%d: unknown placeholder (expected {{character}}, {{story}}, {{passage}} or {{pairs}})",
                path, line);
        }
    }
    if (!passage) {
        template_free(t);
        return set_error(err, "%s: the template has no {{passage}}", path);
    }
    return 0;
}

void template_free(Template *t) {
    free(t->text);
    t->text = NULL;
}

static void template_fill(const Template *t, const char *const values[4], ByteBuf *out) {
    out->len = 0;
    for (const char *s = t->text; *s;) {
        int k = 0;
        for (; PLACEHOLDERS[k]; k++)
            if (!strncmp(s, PLACEHOLDERS[k], strlen(PLACEHOLDERS[k]))) break;
        if (PLACEHOLDERS[k]) {
            bytebuf_append(out, values[k], strlen(values[k]));
            s += strlen(PLACEHOLDERS[k]);
        } else {
            bytebuf_push(out, *s++);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Story titles: "ADVENTURE I. A SCANDAL IN BOHEMIA" -> "A Scandal in Bohemia",
// "CHAPTER XVIII." -> "Chapter XVIII"

// Whether w[0..n) is a roman numeral written the standard way (XVIII, XLIV; not MIL, DID):
// its value, written back, gives the same letters.
static int is_roman_numeral(const char *w, size_t n) {
    static const char *const digits[4][10] = {
        {"", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX"},
        {"", "X", "XX", "XXX", "XL", "L", "LX", "LXX", "LXXX", "XC"},
        {"", "C", "CC", "CCC", "CD", "D", "DC", "DCC", "DCCC", "CM"},
        {"", "M", "MM", "MMM", "", "", "", "", "", ""}};
    int value = 0;
    for (size_t i = 0; i < n; i++) {
        const char *at = strchr("IVXLCDM", toupper((unsigned char)w[i]));
        if (!at || !w[i]) return 0;
        static const int v[] = {1, 5, 10, 50, 100, 500, 1000};
        int here = v[at - "IVXLCDM"], next = 0;
        if (i + 1 < n) {
            const char *nx = strchr("IVXLCDM", toupper((unsigned char)w[i + 1]));
            next = nx && w[i + 1] ? v[nx - "IVXLCDM"] : 0;
        }
        value += here < next ? -here : here;
    }
    if (value <= 0 || value > 3999) return 0;
    char canon[32] = "";
    for (int p = 3, div = 1000; p >= 0; p--, div /= 10) strcat(canon, digits[p][value / div % 10]);
    if (strlen(canon) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (canon[i] != toupper((unsigned char)w[i])) return 0;
    return 1;
}

static char *story_title(const char *heading) {
    const char *s = heading;
    // drop the numbering: "ADVENTURE I. A SCANDAL", "VII. THE COPPER BEECHES", but keep a
    // heading that is nothing but its number ("CHAPTER XVIII.")
    const char *dot = strchr(s, '.');
    if (dot && dot - s < 20 && dot[1] == ' ') s = dot + 2;
    while (*s == ' ') s++;
    char *t = xstrdup(s);
    char *nl = strchr(t, '\n');
    if (nl) *nl = '\0';
    size_t len = strlen(t);
    while (len && (t[len - 1] == '.' || t[len - 1] == ' ')) t[--len] = '\0';
    int lower = 0;
    for (char *c = t; *c; c++) lower |= islower((unsigned char)*c);
    if (!lower) {  // all capitals: title case, small words lower-case after the first
        static const char *const small[] = {"a",  "an", "and", "the", "of", "in", "on",
                                            "at", "to", "for", "or",  "by", NULL};
        int first = 1;
        for (char *w = t; *w;) {
            char *e = w;
            while (*e && *e != ' ') e++;
            if (!is_roman_numeral(w, (size_t)(e - w))) {
                for (char *c = w; c < e; c++) *c = (char)tolower((unsigned char)*c);
                int is_small = 0;
                for (int k = 0; small[k]; k++)
                    if ((size_t)(e - w) == strlen(small[k]) && !strncmp(w, small[k], (size_t)(e - w))) is_small = 1;
                if (first || !is_small) *w = (char)toupper((unsigned char)*w);
            }
            first = 0;
            w = *e ? e + 1 : e;
        }
    }
    return t;
}

// The title of the story that paragraph p belongs to: the nearest heading before it that
// has words after its number ("I." alone is a part, not a title).
static char *title_before(const Book *b, size_t p) {
    for (size_t q = p + 1; q-- > 0;) {
        if (!b->paras[q].heading) continue;
        char *t = story_title(b->paras[q].text);
        if (strlen(t) > 1 && isalpha((unsigned char)t[0]) && strchr(t, ' ')) return t;
        free(t);
    }
    return xstrdup("the book");
}

// ---------------------------------------------------------------------------------------
// Chunks

typedef struct {
    size_t para, start, end;  // bytes [start, end) of the paragraph's one-line text
    int tokens;
} Unit;

typedef struct {
    Unit *u;
    size_t n, cap;
} Units;

static int count_tokens(const PromptOptions *o, const char *s, size_t n) {
    if (o->tokenizer) {
        TokenVec v = {0};
        tokenizer_encode(o->tokenizer, s, n, &v);
        int k = (int)v.len;
        tokvec_free(&v);
        return k;
    }
    int words = 0;
    for (size_t i = 0; i < n; i++) words += s[i] != ' ' && (i == 0 || s[i - 1] == ' ');
    return (words * 13 + 9) / 10;
}

static void push_unit(Units *u, Unit x) {
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 256;
        u->u = xrealloc(u->u, u->cap * sizeof(Unit));
    }
    u->u[u->n++] = x;
}

// Paragraph p as units that each fit the budget: the paragraph, or its sentences, or
// pieces of a sentence cut between words.
static void paragraph_units(const Dialogue *d, const PromptOptions *o, size_t p, Units *out) {
    const char *s = d->prose[p];
    size_t len = d->prose_len[p];
    int whole = count_tokens(o, s, len);
    if (whole <= o->chunk_tokens) {
        push_unit(out, (Unit){p, 0, len, whole});
        return;
    }
    for (size_t at = 0; at < len;) {
        size_t end = sentence_end(s, at, len);
        int tokens = count_tokens(o, s + at, end - at);
        while (tokens > o->chunk_tokens) {  // a sentence longer than a chunk
            size_t cut = at + (end - at) * (size_t)o->chunk_tokens / (size_t)tokens;
            while (cut > at && s[cut] != ' ') cut--;
            if (cut == at) break;
            push_unit(out, (Unit){p, at, cut, count_tokens(o, s + at, cut - at)});
            at = cut + 1;
            tokens = count_tokens(o, s + at, end - at);
        }
        push_unit(out, (Unit){p, at, end, tokens});
        at = end;
        while (at < len && s[at] == ' ') at++;
    }
}

static void chunk_text(const Dialogue *d, const Unit *u, size_t n, ByteBuf *out) {
    out->len = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            bytebuf_append(out, u[i].para == u[i - 1].para ? " " : "\n\n",
                           u[i].para == u[i - 1].para ? 1 : 2);
        bytebuf_append(out, d->prose[u[i].para] + u[i].start, u[i].end - u[i].start);
    }
}

// Whether the character is in paragraph p: named in it (in speech too), or speaking.
static int name_in(const char *s, const char *name) {
    size_t k = strlen(name);
    for (const char *at = strstr(s, name); k && at; at = strstr(at + 1, name)) {
        int before = at == s || !isalnum((unsigned char)at[-1]);
        int after = !isalnum((unsigned char)at[k]);
        if (before && after) return 1;
    }
    return 0;
}

static char *character_present(const Dialogue *d, const PromptOptions *o) {
    const Book *b = d->book;
    char *present = xcalloc(b->n ? b->n : 1, 1);
    for (size_t k = 0; k < d->n; k++)
        if (extract_is_line(d, k, o->min_confidence))
            for (size_t p = d->turns[k].first_para; p <= d->turns[k].last_para; p++) present[p] = 1;
    for (size_t p = 0; p < b->n; p++) {
        if (!d->prose[p]) continue;
        for (size_t i = 0; i < d->mentions[p].n; i++)
            present[p] |= d->mentions[p].m[i].entity == ENTITY_CHARACTER;
        present[p] |= name_in(d->prose[p], o->character);
        for (size_t a = 0; a < o->n_aliases; a++) present[p] |= name_in(d->prose[p], o->aliases[a]);
    }
    return present;
}

static void write_request(const Dialogue *d, const PromptOptions *o, const char *task, const char *chunk_id,
                          const char *story, const char *passage, const Unit *u, size_t n, int tokens,
                          FILE *out) {
    char pairs[16], custom_id[64];
    snprintf(pairs, sizeof pairs, "%d", o->pairs);
    snprintf(custom_id, sizeof custom_id, "%s:%s", chunk_id, task);
    int qa = !strcmp(task, "qa");
    const char *values[4] = {o->character, story, passage, pairs};
    ByteBuf prompt = {0};
    template_fill(qa ? o->qa : o->rewrite, values, &prompt);

    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "custom_id", custom_id);
    cJSON_AddStringToObject(req, "method", "POST");
    cJSON_AddStringToObject(req, "url", "/v1/chat/completions");
    cJSON *body = cJSON_AddObjectToObject(req, "body");
    cJSON_AddStringToObject(body, "model", o->model);
    cJSON *conv = jsonl_conversation();
    jsonl_add_message(conv, "user", prompt.data);
    cJSON_AddItemToObject(body, "messages", cJSON_DetachItemFromObject(conv, "messages"));
    cJSON_Delete(conv);
    cJSON_AddNumberToObject(body, "max_tokens", qa ? 200 * o->pairs + 100 : 2 * tokens + 200);
    cJSON_AddNumberToObject(body, "temperature", 0.7);
    cJSON *meta = cJSON_AddObjectToObject(req, "persona");
    cJSON_AddStringToObject(meta, "task", task);
    cJSON_AddStringToObject(meta, "chunk", chunk_id);
    cJSON_AddStringToObject(meta, "character", o->character);
    cJSON *names = cJSON_AddArrayToObject(meta, "names");
    cJSON_AddItemToArray(names, cJSON_CreateString(o->character));
    for (size_t a = 0; a < o->n_aliases; a++) cJSON_AddItemToArray(names, cJSON_CreateString(o->aliases[a]));
    cJSON_AddStringToObject(meta, "story", story);
    cJSON *lines = cJSON_AddArrayToObject(meta, "lines");
    cJSON_AddItemToArray(lines, cJSON_CreateNumber(d->book->paras[u[0].para].line));
    cJSON_AddItemToArray(lines, cJSON_CreateNumber(d->book->paras[u[n - 1].para].line));
    cJSON_AddStringToObject(meta, "passage", passage);
    if (qa) cJSON_AddNumberToObject(meta, "pairs", o->pairs);
    jsonl_write(out, req);
    cJSON_Delete(req);
    bytebuf_free(&prompt);
}

void prompts_write(const Dialogue *d, const PromptOptions *o, FILE *out, PromptStats *st) {
    memset(st, 0, sizeof *st);
    const Book *b = d->book;
    char *present = character_present(d, o);
    Units units = {0};
    ByteBuf text = {0};
    for (size_t p = 0; p < b->n;) {
        // one scene: paragraphs from p up to the next scene start
        size_t end = p + 1;
        while (end < b->n && !b->paras[end].scene) end++;
        units.n = 0;
        for (size_t q = p; q < end; q++)
            if (d->prose[q]) paragraph_units(d, o, q, &units);
        for (size_t i = 0; i < units.n;) {
            size_t j = i;
            int tokens = 0;
            while (j < units.n && (j == i || tokens + units.u[j].tokens <= o->chunk_tokens))
                tokens += units.u[j++].tokens;
            st->chunks++;
            int keep = 0;
            for (size_t k = i; k < j; k++) keep |= present[units.u[k].para];
            if (keep) {
                chunk_text(d, units.u + i, j - i, &text);
                char id[32];
                snprintf(id, sizeof id, "c%05zu-%08x", st->chunks,
                         (unsigned)(fnv1a64(text.data, text.len, FNV1A64_INIT) & 0xffffffffu));
                char *story = title_before(b, units.u[i].para);
                if (o->rewrite)
                    write_request(d, o, "rewrite", id, story, text.data, units.u + i, j - i, tokens, out);
                if (o->qa) write_request(d, o, "qa", id, story, text.data, units.u + i, j - i, tokens, out);
                free(story);
                st->kept++;
                st->requests += (o->rewrite != NULL) + (o->qa != NULL);
                st->tokens_total += (size_t)tokens;
                if (tokens > st->tokens_max) st->tokens_max = tokens;
            }
            if (j == units.n) break;
            // the next chunk starts with the last units of this one, up to the overlap
            size_t next = j;
            int overlap = 0;
            while (next - 1 > i && overlap + units.u[next - 1].tokens <= o->overlap_tokens)
                overlap += units.u[--next].tokens;
            i = next;
        }
        p = end;
    }
    bytebuf_free(&text);
    free(units.u);
    free(present);
}

void prompts_report(const PromptStats *st, const char *character, FILE *f) {
    fprintf(f, "chunks: %zu, %zu with %s present (mean %.0f tokens, longest %d)\n", st->chunks, st->kept, character,
            st->kept ? (double)st->tokens_total / (double)st->kept : 0.0, st->tokens_max);
}

int prompt_tools_load(PromptTools *t, const char *tokenizer, const char *rewrite, const char *qa, char *err) {
    memset(t, 0, sizeof *t);
    if ((rewrite && template_load(&t->rewrite_t, rewrite, err)) || (qa && template_load(&t->qa_t, qa, err)) ||
        (tokenizer && tokenizer_load(&t->tok, tokenizer, err))) {
        template_free(&t->rewrite_t);
        template_free(&t->qa_t);
        return -1;
    }
    t->tokenizer = tokenizer ? &t->tok : NULL;
    t->rewrite = rewrite ? &t->rewrite_t : NULL;
    t->qa = qa ? &t->qa_t : NULL;
    return 0;
}

void prompt_tools_free(PromptTools *t) {
    if (t->tokenizer) tokenizer_free(&t->tok);
    template_free(&t->rewrite_t);
    template_free(&t->qa_t);
    memset(t, 0, sizeof *t);
}
