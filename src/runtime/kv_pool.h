/* The KV block pool: paged K/V memory shared by many sequences.
 *
 * One region of memory, sized up front from a budget, is cut into blocks of
 * B tokens (block_tokens). The pool does the bookkeeping only: the memory is
 * its owner's (the engine allocates it as a backend buffer of
 * stats.bytes_total bytes, on whatever device computes), the pool addresses
 * it by byte offset (mnv_kv_pool_offset) and never reads or writes it; the
 * one copy it needs, copy on write, goes through params.copy. A block holds K
 * and V of B tokens for every layer of one layer group:
 *
 *     block (n_layers_max, K (B, K token bytes) then V (B, V token bytes))
 *
 * where token bytes = n_kv_heads * the row bytes of one head in K's or V's
 * element type (quant/kv_quant.h: elements, or packed values with their
 * scales and biases); K and V may have different types.
 *
 * A model describes its layer groups: Llama has one full-attention group;
 * gpt-oss has a full group and a window-128 group (12 layers each). Every
 * block has room for the largest group's layers, so groups of unequal size
 * leave part of the smaller group's blocks unused (none for the models above).
 *
 * A sequence has one block table per group, indexed by logical block
 * (position / B) and holding physical block ids. Attention reads K/V of
 * position p of layer l (of group g) at byte offset
 *     mnv_kv_pool_offset(pool, table_g[p / B], l, K or V, p % B)
 * of the block memory, with no copy into a dense buffer.
 *
 * Sliding-window groups (window W) keep a ring: before a step appends tokens
 * at positions [n, n + k), the blocks wholly before the first query's window
 * (logical blocks < (n - W + 1) / B) are released and their table entries set
 * to -1, and the pool hands the freed blocks out again. A decoding sequence so
 * holds at most ceil(W / B) + 1 blocks per sliding group; a prefill chunk of k
 * tokens holds ceil((W - 1 + k) / B) + 1 while it runs.
 *
 * Prefix sharing. When a block becomes full (at commit), it is entered in a
 * hash index under (group, chain hash), where chain hash = H(previous
 * block's chain hash, the block's B token ids); the block's tokens and its
 * predecessor's hash are stored and compared on lookup, so a match needs the
 * same tokens in this block and a prefix with the same 64-bit chain hash. A
 * block is reference-counted by the table entries that point to it. A new
 * sequence whose prompt starts with indexed blocks takes them (refcount + 1)
 * and skips those tokens; at least one prompt token is always left to compute
 * (its logits are needed). A block whose refcount drops to 0 stays in the
 * index, cached and evictable; when the free list is empty the least recently
 * released cached block is evicted. A sequence releases its blocks last to
 * first, so the start of a prefix is evicted after its tail.
 *
 * Sliding groups and prefixes: the pool keeps the window's blocks of cached
 * prefixes. Full blocks of sliding groups are indexed like the others and go
 * to the cache, not the free list, when the ring drops them. A prefix of k
 * blocks is reused only if every full group has blocks 0..k-1 and every
 * sliding group has the blocks the next position's window reads; otherwise
 * the match is shortened until both hold. Nothing is recomputed.
 *
 * Copy on write: only a partly filled block can be written to, and it is
 * shared only after mnv_kv_pool_seq_fork. mnv_kv_pool_prepare_append copies
 * a shared partial block to a block of the sequence's own (params.copy,
 * block_bytes from one block's offset to the other's) before the step
 * writes into it.
 *
 * A step: prepare_append(seq, k) for each sequence of the batch (allocates
 * and copies; may fail with MNV_ERR_NOMEM, leaving the sequence as it was),
 * run the graph that writes K/V of the k tokens through the tables, then
 * commit(seq, tokens, k), which records the tokens and indexes the blocks
 * they filled. Blocks are indexed only at commit, so no sequence can match a
 * block whose K/V has not been computed yet.
 *
 * Thread safety: the pool belongs to one thread (the engine's step thread);
 * every call except mnv_kv_pool_stats_get must come from it, and none takes
 * a lock. mnv_kv_pool_stats_get may be called from any thread: it copies a
 * snapshot that each mutating call publishes under a mutex.
 *
 * Allocation: the block records, stored tokens, hash index and
 * partial-block buffers are allocated at create (the block memory by the
 * owner, right after). A block table grows by
 * doubling (a few reallocations over a sequence's life), and seq_start
 * allocates its lookup scratch once per sequence; steps allocate nothing
 * else. */
#ifndef MNV_KV_POOL_H
#define MNV_KV_POOL_H

#include "core/core.h"
#include "quant/kv_quant.h"

#define MNV_KV_MAX_GROUPS 4

typedef struct {
    int32_t n_layers; /* layers in the group (>= 1) */
    int32_t window;   /* 0: full attention; > 0: sliding window of this many tokens */
} mnv_kv_group;

typedef struct {
    mnv_kv_type k_type;      /* element types of K and V (mnv_kv_type, not DEFAULT) */
    mnv_kv_type v_type;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t quant_group;     /* Q8/Q4: elements per scale/bias group (must divide head_dim);
                                0: mnv_kv_default_group(head_dim) */
    int32_t block_tokens;    /* B: tokens per block (default 16) */
    int32_t n_groups;
    mnv_kv_group groups[MNV_KV_MAX_GROUPS];
    uint64_t budget_bytes;   /* memory for blocks; 0: size the pool from max_tokens */
    int64_t max_tokens;      /* with budget_bytes 0: tokens of context all sequences together
                                hold in the full groups (sliding groups get their rings on top) */
    int32_t max_seqs;        /* sequences alive at once (default 16) */
    int64_t max_seq_tokens;  /* context limit of one sequence (default 4096) */
    uint64_t mem_available;  /* 0: the machine's MemAvailable; else this figure (tests) */
    int32_t prefix_cache;    /* 1 (default): seq_start reuses cached prefixes; 0: never */
    /* Required: copy size bytes of block memory from byte offset src to byte
     * offset dst (two distinct blocks) and return the status; ctx is
     * copy_ctx. The engine wires it to the backend's buffer copy. */
    mnv_status (*copy)(void *ctx, uint64_t dst, uint64_t src, uint64_t size);
    void *copy_ctx;
} mnv_kv_pool_params;

typedef struct {
    uint64_t block_bytes;    /* bytes of one block */
    int64_t blocks_total;
    int64_t blocks_used;     /* referenced by at least one table */
    int64_t blocks_cached;   /* refcount 0, indexed: reusable by a prefix, evictable */
    int64_t blocks_free;
    int64_t blocks_peak_used;
    uint64_t bytes_total;    /* blocks_total * block_bytes: the block memory the owner provides */
    uint64_t bytes_used;
    uint64_t bytes_cached;
    uint64_t bytes_free;
    uint64_t meta_bytes;     /* tables, block records, stored tokens, hash index */
    int32_t n_seqs;          /* sequences alive */
    int64_t prefix_hit_tokens; /* tokens taken from cached blocks since creation */
    int64_t evictions;       /* cached blocks evicted for room */
    int64_t cow_copies;      /* partial blocks copied on write */
} mnv_kv_pool_stats;

typedef struct mnv_kv_pool mnv_kv_pool;

mnv_kv_pool_params mnv_kv_pool_params_default(void);

/* Bytes of K plus V (both of this type) of one token in one layer; 0 when
 * the arguments are invalid (non-positive sizes, quant_group not dividing
 * head_dim for Q8/Q4, odd head_dim for Q4; quant_group 0: the default). */
size_t mnv_kv_bytes_per_token_layer(mnv_kv_type type, int32_t n_kv_heads, int32_t head_dim,
                                    int32_t quant_group);

/* The number of blocks a pool of these parameters would have (budget or
 * max_tokens), or -1 with the error set when the parameters are invalid. */
int64_t mnv_kv_pool_plan_blocks(const mnv_kv_pool_params *p);

/* Create a pool: validates p (a copy function is required), checks blocks
 * + metadata against the memory available (MNV_ERR_NOMEM naming both
 * figures), and allocates the metadata. The caller then provides the block
 * memory: stats.bytes_total bytes, offsets as mnv_kv_pool_offset gives them;
 * it need not be cleared. On failure *out is NULL and the error message says
 * why. */
mnv_status mnv_kv_pool_create(const mnv_kv_pool_params *p, mnv_kv_pool **out);
void mnv_kv_pool_free(mnv_kv_pool *pool);

/* Start a sequence with its prompt (n_prompt >= 1 tokens): takes the longest
 * usable cached prefix. *n_cached_out: tokens already in the cache (a
 * multiple of B, < n_prompt); the sequence's length starts there and the
 * caller computes prompt[*n_cached_out ..]. Fails with MNV_ERR_NOMEM when
 * max_seqs sequences are alive. */
mnv_status mnv_kv_pool_seq_start(mnv_kv_pool *pool, const int32_t *prompt, int64_t n_prompt,
                                 int32_t *seq_out, int64_t *n_cached_out);
/* A new sequence sharing every block of src (its partial last block too). */
mnv_status mnv_kv_pool_seq_fork(mnv_kv_pool *pool, int32_t src, int32_t *seq_out);
/* Release every block of seq (finish or cancel); an unknown id is ignored. */
void mnv_kv_pool_seq_free(mnv_kv_pool *pool, int32_t seq);
int64_t mnv_kv_pool_seq_len(const mnv_kv_pool *pool, int32_t seq);

/* Blocks that prepare_append(seq, n) would take from the pool (new blocks
 * and copies, less the ring's releases), for admission; -1 for a bad seq. */
int64_t mnv_kv_pool_blocks_needed(const mnv_kv_pool *pool, int32_t seq, int64_t n);
/* Blocks a new allocation can get now: free plus cached. */
int64_t mnv_kv_pool_blocks_available(const mnv_kv_pool *pool);

/* Make room for n more tokens of seq: recycle ring blocks, copy a shared
 * partial block, allocate blocks (evicting cached ones if needed). On
 * MNV_ERR_NOMEM (pool full) or MNV_ERR_RANGE (past max_seq_tokens) nothing
 * was allocated. When params.copy fails its status is returned: the
 * sequence keeps the blocks it had (the shared one included) and may be
 * prepared again or freed. */
mnv_status mnv_kv_pool_prepare_append(mnv_kv_pool *pool, int32_t seq, int64_t n);
/* After the step wrote K/V of n tokens: record them and index the blocks
 * they filled. n must not exceed what prepare_append made room for. */
mnv_status mnv_kv_pool_commit(mnv_kv_pool *pool, int32_t seq, const int32_t *tokens, int64_t n);

/* The block table of seq for group g: (*n_out) physical ids, -1 for blocks a
 * ring released. Valid until the next call that changes seq. */
const int32_t *mnv_kv_pool_table(const mnv_kv_pool *pool, int32_t seq, int32_t g, int64_t *n_out);
/* Byte offset in the block memory of one token's K (kv = 0) or V (kv = 1)
 * row of layer l (0-based within the block's group) in block b. Rows of one
 * block and layer are consecutive: K's are mnv_kv_pool_token_bytes(pool, 0)
 * apart, V's mnv_kv_pool_token_bytes(pool, 1). */
uint64_t mnv_kv_pool_offset(const mnv_kv_pool *pool, int32_t b, int32_t l, int32_t kv, int32_t t);
size_t mnv_kv_pool_token_bytes(const mnv_kv_pool *pool, int32_t kv);
/* Reference count of block b (tests, debugging). */
int32_t mnv_kv_pool_block_ref(const mnv_kv_pool *pool, int32_t b);

/* Any thread: a consistent snapshot of the counters. */
void mnv_kv_pool_stats_get(mnv_kv_pool *pool, mnv_kv_pool_stats *out);

/* Verify every invariant (refcounts equal table references, the hash index
 * holds exactly the indexed blocks, each block in exactly one of used /
 * cached (LRU) / free, counters match). MNV_ERR_INTERNAL with a message
 * naming the first broken one. For tests and debugging: O(blocks + tables). */
mnv_status mnv_kv_pool_check(const mnv_kv_pool *pool);

/* The chain hash: H(parent, tokens[0..n)). 64-bit, seeded by parent. */
uint64_t mnv_kv_block_hash(uint64_t parent, const int32_t *tokens, int32_t n);

#endif
