// shard.c: writing and checking token shards (see shard.h for the format).
#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char *section_name[SHARD_SECTIONS] = {"index", "tokens", "mask"};

int shard_fingerprint_file(const char *path, uint64_t *fingerprint, char *err) {
    size_t len;
    char *data = read_file(path, &len, err);
    if (!data) return -1;
    uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64: offset basis, then xor and multiply
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)data[i]) * 0x100000001b3ULL;
    free(data);
    *fingerprint = h;
    return 0;
}

static uint32_t crc_of(const void *p, uint64_t n) {
    // zlib's crc32 takes a uInt length, so feed it in chunks
    uLong crc = crc32(0L, Z_NULL, 0);
    const Bytef *b = p;
    for (uint64_t done = 0; done < n;) {
        uInt chunk = n - done > (1u << 30) ? (1u << 30) : (uInt)(n - done);
        crc = crc32(crc, b + done, chunk);
        done += chunk;
    }
    return (uint32_t)crc;
}

// The sizes of the three sections implied by the counts, in file order.
static void layout(ShardHeader *h) {
    uint64_t size[SHARD_SECTIONS] = {8 * (h->n_conversations + 1), h->token_bytes * h->n_tokens, h->n_tokens};
    uint64_t offset = SHARD_HEADER_BYTES;
    for (int k = 0; k < SHARD_SECTIONS; k++) {
        h->section[k].offset = offset;
        h->section[k].size = size[k];
        offset += size[k];
    }
}

// ---- header bytes ---------------------------------------------------------------------

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void header_encode(const ShardHeader *h, uint8_t *b) {
    memset(b, 0, SHARD_HEADER_BYTES);
    memcpy(b, SHARD_MAGIC, 8);
    put32(b + 8, SHARD_VERSION);
    put32(b + 12, SHARD_HEADER_BYTES);
    put32(b + 16, h->token_bytes);
    put32(b + 20, h->vocab_size);
    put64(b + 24, h->fingerprint);
    put32(b + 32, h->chat_format);
    put64(b + 40, h->n_tokens);
    put64(b + 48, h->n_conversations);
    put64(b + 56, h->n_trained);
    memcpy(b + 64, &h->weight, 8);
    memcpy(b + 72, h->source, SHARD_NAME_BYTES);
    for (int k = 0; k < SHARD_SECTIONS; k++) {
        put64(b + 136 + 24 * k, h->section[k].offset);
        put64(b + 144 + 24 * k, h->section[k].size);
        put32(b + 152 + 24 * k, h->section[k].crc32);
    }
    put32(b + 252, crc_of(b, 252));
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

// Decodes and checks the header of a file of file_len bytes whose first bytes are b.
static int header_decode(ShardHeader *h, const uint8_t *b, uint64_t file_len, const char *path, char *err) {
    if (file_len < 8 || memcmp(b, SHARD_MAGIC, 8))
        return set_error(err, "%s: not a token shard (bad magic; expected \"%s\")", path, SHARD_MAGIC);
    if (file_len < 12) return set_error(err, "%s: truncated: %llu bytes, a shard header is %d", path, (unsigned long long)file_len, SHARD_HEADER_BYTES);
    h->version = get32(b + 8);
    if (h->version != SHARD_VERSION)
        return set_error(err, "%s: shard version %u, this program reads version %d (re-run prep)", path, h->version, SHARD_VERSION);
    if (file_len < SHARD_HEADER_BYTES)
        return set_error(err, "%s: truncated: %llu bytes, a shard header is %d", path, (unsigned long long)file_len, SHARD_HEADER_BYTES);
    if (get32(b + 12) != SHARD_HEADER_BYTES)
        return set_error(err, "%s: header size %u, expected %d", path, get32(b + 12), SHARD_HEADER_BYTES);
    if (get32(b + 252) != crc_of(b, 252))
        return set_error(err, "%s: header CRC32 mismatch (stored %08x, computed %08x): the header is corrupt", path, get32(b + 252), crc_of(b, 252));
    h->token_bytes = get32(b + 16);
    h->vocab_size = get32(b + 20);
    h->fingerprint = get64(b + 24);
    h->chat_format = get32(b + 32);
    h->n_tokens = get64(b + 40);
    h->n_conversations = get64(b + 48);
    h->n_trained = get64(b + 56);
    memcpy(&h->weight, b + 64, 8);
    memcpy(h->source, b + 72, SHARD_NAME_BYTES);
    for (int k = 0; k < SHARD_SECTIONS; k++) {
        h->section[k].offset = get64(b + 136 + 24 * k);
        h->section[k].size = get64(b + 144 + 24 * k);
        h->section[k].crc32 = get32(b + 152 + 24 * k);
        if (get32(b + 156 + 24 * k)) return set_error(err, "%s: reserved bytes of the %s section entry are not 0", path, section_name[k]);
    }
    // A header with a valid CRC was written by a writer; these catch a writer's bugs.
    if (h->vocab_size == 0 || h->token_bytes != (h->vocab_size <= 65536 ? 2u : 4u))
        return set_error(err, "%s: token width %u bytes does not fit vocab size %u", path, h->token_bytes, h->vocab_size);
    if (h->chat_format != 1 && h->chat_format != 2 && h->chat_format != 3 && h->chat_format != 7 && h->chat_format != 100)
        return set_error(err, "%s: unknown chat format %u", path, h->chat_format);
    if (!(h->weight > 0) || h->weight > 1e300) return set_error(err, "%s: source weight %g is not a positive number", path, h->weight);
    if (!memchr(h->source, 0, SHARD_NAME_BYTES)) return set_error(err, "%s: source name is not NUL-terminated", path);
    if (get32(b + 36) || !all_zero(b + 208, 44)) return set_error(err, "%s: reserved header bytes are not 0", path);
    if (h->n_trained > h->n_tokens || h->n_conversations > h->n_tokens)
        return set_error(err, "%s: counts do not add up (%llu tokens, %llu trained, %llu conversations)", path,
                         (unsigned long long)h->n_tokens, (unsigned long long)h->n_trained, (unsigned long long)h->n_conversations);
    // The counts fix the layout: n_tokens <= 2^62 keeps every size below in range.
    if (h->n_tokens > (1ULL << 40))
        return set_error(err, "%s: %llu tokens is more than a shard may hold", path, (unsigned long long)h->n_tokens);
    ShardHeader want = *h;
    layout(&want);
    for (int k = 0; k < SHARD_SECTIONS; k++)
        if (want.section[k].offset != h->section[k].offset || want.section[k].size != h->section[k].size)
            return set_error(err, "%s: %s section at %llu (+%llu bytes), the counts put it at %llu (+%llu)", path,
                             section_name[k], (unsigned long long)h->section[k].offset, (unsigned long long)h->section[k].size,
                             (unsigned long long)want.section[k].offset, (unsigned long long)want.section[k].size);
    uint64_t end = h->section[SHARD_MASK].offset + h->section[SHARD_MASK].size;
    if (file_len < end)
        return set_error(err, "%s: truncated: %llu bytes, the header describes %llu", path, (unsigned long long)file_len, (unsigned long long)end);
    if (file_len > end)
        return set_error(err, "%s: %llu bytes, the header describes %llu (extra bytes at the end)", path, (unsigned long long)file_len, (unsigned long long)end);
    return 0;
}

// ---- reading --------------------------------------------------------------------------

// The contents that no CRC can vouch for (a writer could have computed the CRC of wrong
// data): the index must cut the tokens into non-empty conversations, ids must be in the
// vocabulary, mask bytes 0 or 1 and their sum n_trained.
static int check_contents(const Shard *s, char *err) {
    const ShardHeader *h = &s->h;
    if (s->index[0] != 0 || s->index[h->n_conversations] != h->n_tokens)
        return set_error(err, "%s: index starts at %llu and ends at %llu, expected 0 and %llu", s->path,
                         (unsigned long long)s->index[0], (unsigned long long)s->index[h->n_conversations], (unsigned long long)h->n_tokens);
    for (uint64_t j = 0; j < h->n_conversations; j++)
        if (s->index[j + 1] <= s->index[j])
            return set_error(err, "%s: index: conversation %llu is empty or negative", s->path, (unsigned long long)j);
    uint64_t trained = 0;
    for (uint64_t i = 0; i < h->n_tokens; i++) {
        if (shard_token(s, i) >= h->vocab_size)
            return set_error(err, "%s: token %llu: id %u outside the vocabulary (%u)", s->path, (unsigned long long)i, shard_token(s, i), h->vocab_size);
        if (s->mask[i] > 1) return set_error(err, "%s: mask of token %llu is %u, expected 0 or 1", s->path, (unsigned long long)i, s->mask[i]);
        trained += s->mask[i];
    }
    if (trained != h->n_trained)
        return set_error(err, "%s: the mask trains %llu tokens, the header says %llu", s->path, (unsigned long long)trained, (unsigned long long)h->n_trained);
    return 0;
}

int shard_open(Shard *s, const char *path, uint64_t fingerprint, char *err) {
    memset(s, 0, sizeof(*s));
    int fd = open(path, O_RDONLY);
    if (fd < 0) return set_error(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return set_error(err, "%s: not a regular file", path);
    }
    uint8_t head[SHARD_HEADER_BYTES] = {0};
    ssize_t got = pread(fd, head, sizeof(head), 0);
    if (got < 0 || (got < (ssize_t)sizeof(head) && got < st.st_size)) {
        close(fd);
        return set_error(err, "%s: read error: %s", path, got < 0 ? strerror(errno) : "short read");
    }
    s->path = xstrdup(path);
    if (header_decode(&s->h, head, (uint64_t)st.st_size, path, err)) {
        close(fd);
        shard_close(s);
        return -1;
    }
    if (fingerprint && s->h.fingerprint != fingerprint) {
        close(fd);
        set_error(err, "%s: made with a different tokenizer (fingerprint %016llx, the tokenizer in use has %016llx): re-run prep with it",
                  path, (unsigned long long)s->h.fingerprint, (unsigned long long)fingerprint);
        shard_close(s);
        return -1;
    }
    s->map_len = (size_t)st.st_size;
    void *map = mmap(NULL, s->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        set_error(err, "%s: cannot map: %s", path, strerror(errno));
        s->map_len = 0;
        shard_close(s);
        return -1;
    }
    s->map = map;
    for (int k = 0; k < SHARD_SECTIONS; k++) {
        const ShardSection *sec = &s->h.section[k];
        uint32_t crc = crc_of(s->map + sec->offset, sec->size);
        if (crc != sec->crc32) {
            set_error(err, "%s: %s section CRC32 mismatch (stored %08x, computed %08x): the data is corrupt", path,
                      section_name[k], sec->crc32, crc);
            shard_close(s);
            return -1;
        }
    }
    s->index = (const uint64_t *)(s->map + s->h.section[SHARD_INDEX].offset);
    s->tokens = s->map + s->h.section[SHARD_TOKENS].offset;
    s->mask = s->map + s->h.section[SHARD_MASK].offset;
    if (check_contents(s, err)) {
        shard_close(s);
        return -1;
    }
    return 0;
}

void shard_close(Shard *s) {
    if (s->map) munmap((void *)s->map, s->map_len);
    free(s->path);
    memset(s, 0, sizeof(*s));
}

// ---- writing --------------------------------------------------------------------------

// A scratch file in the output's directory, unlinked at once: it lives until closed.
static FILE *scratch_file(const char *tmp_path, int k, char *err) {
    size_t n = strlen(tmp_path) + 16;
    char *name = xmalloc(n);
    snprintf(name, n, "%s.%d", tmp_path, k);
    int fd = open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    FILE *f = NULL;
    if (fd < 0) set_error(err, "%s: cannot create: %s", name, strerror(errno));
    else {
        unlink(name);
        f = fdopen(fd, "w+b");
        if (!f) {
            set_error(err, "%s: %s", name, strerror(errno));
            close(fd);
        }
    }
    free(name);
    return f;
}

// Appends to section k's scratch file, keeping its running CRC; errors surface at finish.
static void stage_write(ShardWriter *w, int k, const void *p, size_t n) {
    w->crc[k] = (uint32_t)crc32(w->crc[k], p, (uInt)n);
    fwrite(p, 1, n, w->stage[k]);
}

int shard_writer_open(ShardWriter *w, const char *path, const ShardHeader *meta, char *err) {
    memset(w, 0, sizeof(*w));
    w->h = *meta;
    w->h.version = SHARD_VERSION;
    w->h.token_bytes = meta->vocab_size <= 65536 ? 2 : 4;
    w->h.n_tokens = w->h.n_conversations = w->h.n_trained = 0;
    w->h.source[SHARD_NAME_BYTES - 1] = '\0';
    w->path = xstrdup(path);
    size_t n = strlen(path) + 32;
    w->tmp_path = xmalloc(n);
    snprintf(w->tmp_path, n, "%s.tmp%ld", path, (long)getpid());
    for (int k = 0; k < SHARD_SECTIONS; k++) {
        w->crc[k] = (uint32_t)crc32(0L, Z_NULL, 0);
        if (!(w->stage[k] = scratch_file(w->tmp_path, k, err))) {
            shard_writer_close(w);
            return -1;
        }
    }
    uint64_t zero = 0;  // index[0]: the first conversation starts at token 0
    stage_write(w, SHARD_INDEX, &zero, 8);
    return 0;
}

int shard_writer_add(ShardWriter *w, const int32_t *ids, const uint8_t *mask, size_t n, char *err) {
    if (n == 0) return set_error(err, "%s: an empty conversation cannot be written", w->path);
    size_t width = w->h.token_bytes;
    if (n * width > w->buf_cap) {
        w->buf_cap = n * width;
        w->buf = xrealloc(w->buf, w->buf_cap);
    }
    uint64_t trained = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= w->h.vocab_size)
            return set_error(err, "%s: id %d outside the vocabulary (%u)", w->path, ids[i], w->h.vocab_size);
        if (mask[i] > 1) return set_error(err, "%s: mask value %u is not 0 or 1", w->path, mask[i]);
        trained += mask[i];
        if (width == 2) ((uint16_t *)w->buf)[i] = (uint16_t)ids[i];
        else ((uint32_t *)w->buf)[i] = (uint32_t)ids[i];
    }
    stage_write(w, SHARD_TOKENS, w->buf, n * width);
    stage_write(w, SHARD_MASK, mask, n);
    w->h.n_tokens += n;
    w->h.n_conversations++;
    w->h.n_trained += trained;
    stage_write(w, SHARD_INDEX, &w->h.n_tokens, 8);
    return 0;
}

int shard_writer_finish(ShardWriter *w, char *err) {
    for (int k = 0; k < SHARD_SECTIONS; k++)
        if (fflush(w->stage[k]) || ferror(w->stage[k]))
            return set_error(err, "%s: writing the %s section: %s", w->tmp_path, section_name[k], strerror(errno));
    layout(&w->h);
    for (int k = 0; k < SHARD_SECTIONS; k++) w->h.section[k].crc32 = w->crc[k];
    uint8_t head[SHARD_HEADER_BYTES];
    header_encode(&w->h, head);
    int fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return set_error(err, "%s: cannot create: %s", w->tmp_path, strerror(errno));
    FILE *out = fdopen(fd, "wb");
    if (!out) {
        close(fd);
        return set_error(err, "%s: %s", w->tmp_path, strerror(errno));
    }
    int bad = fwrite(head, 1, sizeof(head), out) != sizeof(head);
    char chunk[1 << 16];
    for (int k = 0; k < SHARD_SECTIONS && !bad; k++) {
        rewind(w->stage[k]);
        size_t got;
        while ((got = fread(chunk, 1, sizeof(chunk), w->stage[k])) > 0 && !bad)
            bad = fwrite(chunk, 1, got, out) != got;
        bad |= ferror(w->stage[k]);
    }
    bad |= fflush(out) != 0 || fsync(fileno(out)) != 0;
    int saved = errno;
    bad |= fclose(out) != 0;
    if (bad) return set_error(err, "%s: write failed: %s", w->tmp_path, strerror(saved ? saved : errno));
    return 0;
}

int shard_writer_commit(ShardWriter *w, char *err) {
    if (rename(w->tmp_path, w->path))
        return set_error(err, "%s: cannot rename into place: %s", w->path, strerror(errno));
    return 0;
}

void shard_writer_close(ShardWriter *w) {
    for (int k = 0; k < SHARD_SECTIONS; k++)
        if (w->stage[k]) fclose(w->stage[k]);
    if (w->tmp_path) unlink(w->tmp_path);  // fails harmlessly once committed
    free(w->path);
    free(w->tmp_path);
    free(w->buf);
    memset(w, 0, sizeof(*w));
}
