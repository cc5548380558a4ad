// strmap.c: see strmap.h.
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

// FNV-1a over the key: short keys dominate, and it mixes well enough for token strings.
static uint32_t strmap_hash(const unsigned char *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h ? h : 1;
}

void strmap_init(StrMap *m, size_t expected) {
    size_t size = 16;
    while (size < expected * 2) size *= 2;
    m->slots = xcalloc(size, sizeof(StrMapSlot));
    m->mask = size - 1;
    m->count = 0;
    m->arena = NULL;
    m->arena_len = m->arena_cap = 0;
}

void strmap_free(StrMap *m) {
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof(*m));
}

static StrMapSlot *strmap_find(const StrMap *m, const void *key, size_t len, uint32_t h) {
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        StrMapSlot *s = &m->slots[i];
        if (s->hash == 0) return s;
        // (an empty key may be all the map holds, with no arena yet: no arithmetic on NULL)
        if (s->hash == h && s->len == len && (len == 0 || memcmp(m->arena + s->off, key, len) == 0)) return s;
    }
}

static void strmap_grow(StrMap *m) {
    size_t size = (m->mask + 1) * 2;
    StrMapSlot *old = m->slots;
    size_t old_size = m->mask + 1;
    m->slots = xcalloc(size, sizeof(StrMapSlot));
    m->mask = size - 1;
    for (size_t i = 0; i < old_size; i++) {
        if (!old[i].hash) continue;
        size_t j = old[i].hash & m->mask;
        while (m->slots[j].hash) j = (j + 1) & m->mask;
        m->slots[j] = old[i];
    }
    free(old);
}

int strmap_put(StrMap *m, const void *key, size_t len, int32_t value) {
    if ((m->count + 1) * 2 > m->mask + 1) strmap_grow(m);
    uint32_t h = strmap_hash(key, len);
    StrMapSlot *s = strmap_find(m, key, len, h);
    if (s->hash) return 1;
    if (m->arena_len + len > m->arena_cap) {
        size_t cap = m->arena_cap ? m->arena_cap : 4096;
        while (m->arena_len + len > cap) cap *= 2;
        m->arena = xrealloc(m->arena, cap);
        m->arena_cap = cap;
    }
    if (len) memcpy(m->arena + m->arena_len, key, len);
    s->hash = h;
    s->len = (uint32_t)len;
    s->off = m->arena_len;
    s->value = value;
    m->arena_len += len;
    m->count++;
    return 0;
}

int32_t strmap_get(const StrMap *m, const void *key, size_t len) {
    const StrMapSlot *s = strmap_find(m, key, len, strmap_hash(key, len));
    return s->hash ? s->value : -1;
}
