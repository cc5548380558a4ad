/*
 * strmap.h: a hash map from byte strings to non-negative int32 values.
 *
 * Both tokenizers look up "is this byte string a token, and which one?" millions of
 * times per megabyte of text, always for short keys. Open addressing with linear
 * probing over a power-of-two table (load <= 1/2), the 32-bit hash kept in the slot so
 * most misses never touch the key bytes, and every key copied once into one arena.
 */
#ifndef PERSONA_STRMAP_H
#define PERSONA_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t hash;   // 0 marks an empty slot (real hashes are forced non-zero)
    uint32_t len;
    size_t off;      // key bytes at arena + off
    int32_t value;
} StrMapSlot;

typedef struct {
    StrMapSlot *slots;
    size_t mask;     // table size - 1
    size_t count;
    char *arena;
    size_t arena_len, arena_cap;
} StrMap;

void strmap_init(StrMap *m, size_t expected);
void strmap_free(StrMap *m);
// Inserts key -> value. If the key is already present the map keeps the first value
// and returns 1; returns 0 when the key was new.
int strmap_put(StrMap *m, const void *key, size_t len, int32_t value);
// The value stored for key, or -1.
int32_t strmap_get(const StrMap *m, const void *key, size_t len);

#endif
