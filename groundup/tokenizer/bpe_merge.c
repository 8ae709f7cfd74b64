/* The BPE merge loop of groundup/tokenizer/bpe.py in C: same algorithm, same results as
 * `merge_loop_python`, about two orders of magnitude faster.
 *
 * Input: the distinct pre-split chunks ("words") as bytes with their counts. State: each word as a
 * sequence of token ids, shrunk in place as merges apply; a hash map (left id, right id) -> pair
 * record {count, position in the heap, list of words that may hold the pair}; an indexed binary
 * max-heap of pairs with a count > 0, ordered by count, then by the left token's bytes, then by the
 * right token's bytes (greater first). A merge rewrites only the words on the pair's list, changes
 * only the counts of the pairs next to each merge site, and then moves each pair whose count changed
 * to its new place in the heap.
 *
 * Built by groundup/tokenizer/bpe_native.py with `cc -O2 -shared -fPIC`; called through ctypes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t a, b;
    int64_t count;
    int64_t pending;    /* change to `count` not yet applied (the heap is ordered by `count`) */
    int32_t heap_pos;   /* -1 when not in the heap */
    int32_t touched;    /* on this merge's list of changed pairs */
    int32_t *words;     /* words that may hold the pair (stale and repeated entries allowed) */
    int32_t n_words, cap_words;
} Pair;

typedef struct {
    int64_t off, freq;
    int32_t len;
} Word;

typedef struct {
    /* tokens: bytes of token i are tok_data[tok_off[i] .. tok_off[i] + tok_len[i]) */
    uint8_t *tok_data; int64_t tok_data_len, tok_data_cap;
    int64_t *tok_off; int32_t *tok_len; int32_t n_tok, cap_tok;
    int32_t *tok_slots; int64_t tok_slot_mask;       /* hash: token bytes -> id + 1 */
    Pair *pairs; int32_t n_pairs, cap_pairs;
    int32_t *pair_slots; int64_t pair_slot_mask;     /* hash: (a, b) -> pair index + 1 */
    int32_t *heap; int32_t heap_len;
    int32_t *touched; int32_t n_touched;
} State;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const uint8_t *p, int64_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return mix64(h);
}

static int cmp_tok(const State *s, int32_t x, int32_t y) {
    int32_t lx = s->tok_len[x], ly = s->tok_len[y];
    int c = memcmp(s->tok_data + s->tok_off[x], s->tok_data + s->tok_off[y], (size_t)(lx < ly ? lx : ly));
    if (c) return c;
    return (lx > ly) - (lx < ly);
}

/* 1 when pair x belongs above pair y in the heap */
static int above(const State *s, int32_t x, int32_t y) {
    const Pair *p = &s->pairs[x], *q = &s->pairs[y];
    if (p->count != q->count) return p->count > q->count;
    int c = cmp_tok(s, p->a, q->a);
    if (c) return c > 0;
    return cmp_tok(s, p->b, q->b) > 0;
}

static void heap_set(State *s, int32_t pos, int32_t pi) { s->heap[pos] = pi; s->pairs[pi].heap_pos = pos; }

static void sift_up(State *s, int32_t pos) {
    int32_t pi = s->heap[pos];
    while (pos > 0) {
        int32_t parent = (pos - 1) / 2;
        if (!above(s, pi, s->heap[parent])) break;
        heap_set(s, pos, s->heap[parent]);
        pos = parent;
    }
    heap_set(s, pos, pi);
}

static void sift_down(State *s, int32_t pos) {
    int32_t pi = s->heap[pos];
    for (;;) {
        int32_t l = 2 * pos + 1, r = l + 1, best = pos, best_pi = pi;
        if (l < s->heap_len && above(s, s->heap[l], best_pi)) { best = l; best_pi = s->heap[l]; }
        if (r < s->heap_len && above(s, s->heap[r], best_pi)) { best = r; best_pi = s->heap[r]; }
        if (best == pos) break;
        heap_set(s, pos, best_pi);
        pos = best;
    }
    heap_set(s, pos, pi);
}

static void heap_remove(State *s, int32_t pi) {
    int32_t pos = s->pairs[pi].heap_pos, last = s->heap[--s->heap_len];
    s->pairs[pi].heap_pos = -1;
    if (last == pi) return;
    heap_set(s, pos, last);
    sift_up(s, pos);
    sift_down(s, s->pairs[last].heap_pos);
}

static int grow(void **p, int64_t *cap, int64_t need, size_t item) {
    if (need <= *cap) return 0;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * item);
    if (!q) return -1;
    *p = q; *cap = c;
    return 0;
}

/* ---- tokens ---- */
static int32_t tok_find(const State *s, const uint8_t *p, int32_t n, int64_t *slot_out) {
    int64_t slot = (int64_t)(hash_bytes(p, n) & (uint64_t)s->tok_slot_mask);
    for (;; slot = (slot + 1) & s->tok_slot_mask) {
        int32_t v = s->tok_slots[slot];
        if (!v) { *slot_out = slot; return -1; }
        if (s->tok_len[v - 1] == n && !memcmp(s->tok_data + s->tok_off[v - 1], p, (size_t)n)) return v - 1;
    }
}

/* the id of the byte string of token a followed by token b, adding it if new; -1 on no memory */
static int32_t tok_concat(State *s, int32_t a, int32_t b) {
    int32_t la = s->tok_len[a], lb = s->tok_len[b], n = la + lb;
    int64_t need = s->tok_data_len + n;
    if (grow((void **)&s->tok_data, &s->tok_data_cap, need, 1)) return -1;
    uint8_t *dst = s->tok_data + s->tok_data_len;   /* build it at the end, keep it only if new */
    memcpy(dst, s->tok_data + s->tok_off[a], (size_t)la);
    memcpy(dst + la, s->tok_data + s->tok_off[b], (size_t)lb);
    int64_t slot;
    int32_t found = tok_find(s, dst, n, &slot);
    if (found >= 0) return found;
    int32_t id = s->n_tok++;
    s->tok_off[id] = s->tok_data_len;
    s->tok_len[id] = n;
    s->tok_data_len = need;
    s->tok_slots[slot] = id + 1;
    return id;
}

/* ---- pairs ---- */
static int pair_rehash(State *s) {
    int64_t size = (s->pair_slot_mask + 1) * 2;
    int32_t *slots = calloc((size_t)size, sizeof(int32_t));
    if (!slots) return -1;
    for (int32_t i = 0; i < s->n_pairs; i++) {
        int64_t slot = (int64_t)(mix64(((uint64_t)(uint32_t)s->pairs[i].a << 32) | (uint32_t)s->pairs[i].b) & (uint64_t)(size - 1));
        while (slots[slot]) slot = (slot + 1) & (size - 1);
        slots[slot] = i + 1;
    }
    free(s->pair_slots);
    s->pair_slots = slots;
    s->pair_slot_mask = size - 1;
    return 0;
}

/* the index of pair (a, b), created with count 0 when absent; -1 on no memory */
static int32_t pair_get(State *s, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    int64_t slot = (int64_t)(mix64(key) & (uint64_t)s->pair_slot_mask);
    for (;; slot = (slot + 1) & s->pair_slot_mask) {
        int32_t v = s->pair_slots[slot];
        if (!v) break;
        if (s->pairs[v - 1].a == a && s->pairs[v - 1].b == b) return v - 1;
    }
    if (s->n_pairs + 1 > (s->pair_slot_mask + 1) / 2) {
        if (pair_rehash(s)) return -1;
        return pair_get(s, a, b);
    }
    if (s->n_pairs == s->cap_pairs) {   /* heap and touched list hold at most one entry per pair */
        int64_t cap = s->cap_pairs;
        if (grow((void **)&s->pairs, &cap, s->n_pairs + 1, sizeof(Pair))) return -1;
        int32_t *h = realloc(s->heap, (size_t)cap * sizeof(int32_t));
        if (!h) return -1;
        s->heap = h;
        h = realloc(s->touched, (size_t)cap * sizeof(int32_t));
        if (!h) return -1;
        s->touched = h;
        s->cap_pairs = (int32_t)cap;
    }
    int32_t i = s->n_pairs++;
    Pair *p = &s->pairs[i];
    memset(p, 0, sizeof(*p));
    p->a = a; p->b = b; p->heap_pos = -1;
    s->pair_slots[slot] = i + 1;
    return i;
}

static int pair_add_word(Pair *p, int32_t w) {
    if (p->n_words && p->words[p->n_words - 1] == w) return 0;
    if (p->n_words == p->cap_words) {
        int32_t c = p->cap_words ? p->cap_words * 2 : 4;
        int32_t *q = realloc(p->words, (size_t)c * sizeof(int32_t));
        if (!q) return -1;
        p->words = q; p->cap_words = c;
    }
    p->words[p->n_words++] = w;
    return 0;
}

/* note a change of `delta` to the count of pair (a, b); optionally list word w as holding it */
static int pair_bump(State *s, int32_t a, int32_t b, int64_t delta, int32_t w) {
    int32_t i = pair_get(s, a, b);
    if (i < 0) return -1;
    Pair *p = &s->pairs[i];
    p->pending += delta;
    if (!p->touched) { p->touched = 1; s->touched[s->n_touched++] = i; }
    if (w >= 0 && pair_add_word(p, w)) return -1;
    return 0;
}

/* apply the noted changes one pair at a time, each moved to its place before the next changes,
 * so that every sift runs in an otherwise valid heap */
static void settle_touched(State *s) {
    for (int32_t k = 0; k < s->n_touched; k++) {
        int32_t i = s->touched[k];
        Pair *p = &s->pairs[i];
        p->touched = 0;
        if (!p->pending) continue;
        p->count += p->pending;
        p->pending = 0;
        if (p->count > 0 && p->heap_pos < 0) {
            s->heap_len++;
            heap_set(s, s->heap_len - 1, i);
            sift_up(s, s->heap_len - 1);
        } else if (p->count > 0) {
            sift_up(s, p->heap_pos);
            sift_down(s, p->heap_pos);
        } else if (p->heap_pos >= 0) {
            heap_remove(s, i);
        }
    }
    s->n_touched = 0;
}

static void free_state(State *s, int32_t *seq) {
    for (int32_t i = 0; i < s->n_pairs; i++) free(s->pairs[i].words);
    free(s->pairs); free(s->pair_slots); free(s->heap); free(s->touched);
    free(s->tok_data); free(s->tok_off); free(s->tok_len); free(s->tok_slots);
    free(seq);
}

/* Learn merges until there are n_tokens distinct tokens or no pair is left.
 * words: n_words byte strings, word i = data[offsets[i] .. offsets[i+1]), counted freqs[i] times.
 * out: room for max_merges (left id, right id) pairs. Returns the number of merges, -1 when out of
 * memory, -2 when max_merges was too small. */
int64_t bpe_merge_loop(int64_t n_words, const uint8_t *data, const int64_t *offsets, const int64_t *freqs,
                       int32_t n_tokens, int32_t *out, int64_t max_merges) {
    State st; memset(&st, 0, sizeof(st));
    State *s = &st;
    int64_t total = offsets[n_words];
    int32_t *seq = malloc((size_t)(total > 0 ? total : 1) * sizeof(int32_t));
    int64_t n_merges = 0, result = -1;
    int32_t cap_tok = n_tokens > 256 ? n_tokens : 256;
    int64_t slots = 1;
    while (slots < 2 * (int64_t)cap_tok) slots *= 2;
    s->tok_off = malloc((size_t)cap_tok * sizeof(int64_t));
    s->tok_len = malloc((size_t)cap_tok * sizeof(int32_t));
    s->tok_slots = calloc((size_t)slots, sizeof(int32_t));
    s->tok_slot_mask = slots - 1;
    s->pair_slots = calloc(1024, sizeof(int32_t));
    s->pair_slot_mask = 1023;
    if (!seq || !s->tok_off || !s->tok_len || !s->tok_slots || !s->pair_slots
        || grow((void **)&s->tok_data, &s->tok_data_cap, 256, 1)) goto done;
    for (int32_t i = 0; i < 256; i++) {
        int64_t slot;
        s->tok_data[i] = (uint8_t)i;
        s->tok_off[i] = i; s->tok_len[i] = 1;
        tok_find(s, s->tok_data + i, 1, &slot);
        s->tok_slots[slot] = i + 1;
    }
    s->tok_data_len = 256; s->n_tok = 256;

    /* where, how long and how frequent each word is, side by side: one cache miss per visit */
    Word *word = malloc((size_t)(n_words > 0 ? n_words : 1) * sizeof(Word));
    if (!word) goto done;
    for (int64_t w = 0; w < n_words; w++) {
        int64_t o = offsets[w];
        word[w].off = o; word[w].freq = freqs[w]; word[w].len = (int32_t)(offsets[w + 1] - o);
        for (int32_t i = 0; i < word[w].len; i++) seq[o + i] = data[o + i];
        for (int32_t i = 0; i + 1 < word[w].len; i++)
            if (pair_bump(s, seq[o + i], seq[o + i + 1], freqs[w], (int32_t)w)) { free(word); goto done; }
    }
    settle_touched(s);

    while (s->n_tok < n_tokens && s->heap_len > 0) {
        int32_t top = s->heap[0];
        int32_t a = s->pairs[top].a, b = s->pairs[top].b;
        if (n_merges == max_merges) { result = -2; free(word); goto done; }
        int32_t id = tok_concat(s, a, b);
        if (id < 0) { free(word); goto done; }
        out[2 * n_merges] = a; out[2 * n_merges + 1] = b;
        n_merges++;
        /* take the word list out of the pair: pair records may move while we add new pairs */
        int32_t *words = s->pairs[top].words, n_list = s->pairs[top].n_words;
        s->pairs[top].words = NULL; s->pairs[top].n_words = s->pairs[top].cap_words = 0;
        for (int32_t k = 0; k < n_list; k++) {
            int32_t w = words[k];
            int32_t *q = seq + word[w].off;   /* rewritten in place: the write index m trails i */
            int32_t n = word[w].len, m = 0, i = 0, before = -1;   /* before: the original q[i - 1] */
            int64_t f = word[w].freq;
            int fail = 0;
            while (i < n) {
                if (i + 1 < n && q[i] == a && q[i + 1] == b) {
                    /* only the pairs next to the site change; a pair between two sites (b, a) is
                       handled once, as the left side of the second site */
                    fail |= pair_bump(s, a, b, -f, -1);
                    if (m > 0) {
                        fail |= pair_bump(s, before, a, -f, -1);
                        fail |= pair_bump(s, q[m - 1], id, f, w);
                    }
                    int next_site = i + 3 < n && q[i + 2] == a && q[i + 3] == b;
                    if (i + 2 < n && !next_site) {
                        fail |= pair_bump(s, b, q[i + 2], -f, -1);
                        fail |= pair_bump(s, id, q[i + 2], f, w);
                    }
                    q[m++] = id;
                    before = b;
                    i += 2;
                } else {
                    before = q[i];
                    q[m++] = q[i++];
                }
            }
            word[w].len = m;   /* unchanged when the entry was stale (the word lost the pair earlier) */
            if (fail) { free(words); free(word); goto done; }
        }
        free(words);
        settle_touched(s);
    }
    free(word);
    result = n_merges;
done:
    free_state(s, seq);
    return result;
}
