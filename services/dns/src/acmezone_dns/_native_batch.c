/*
 * acmezone_dns._native_batch: the UDP hot loop in C (recvmmsg, pre-packed answer, sendmmsg).
 *
 * Why: with answers pre-packed and datagrams batched through ctypes (datagram_batch.py), the
 * Python work left was about 12k instructions a query: the loop over the batch, the fast-path
 * checks and splice in Responder.answer, and two ctypes calls a batch. At the bench's paced
 * load (75% of NSD's rate) batches are small, that work kept the server near a full core and a
 * hiccup of the host then left a backlog; the p99 target was met in only 3 of 5 runs. Here the
 * same work is a few hundred instructions a query.
 *
 * What it does, and nothing more: `NativeBatch.exchange(fd, handle, tables)` reads up to
 * `capacity` datagrams with one recvmmsg and answers the commonest shapes itself, exactly as
 * Responder.answer does over UDP (see there; `tables` is its `FastTables`): a standard query
 * with one question and nothing else, or with one option-less OPT record whose 11 bytes are a
 * key of `edns`, or one whose only option is a COOKIE (a client cookie, alone or with a 16-byte
 * server cookie) and whose option-less form is a key: those get our OPT with a fresh RFC 9018
 * server cookie for the sender's address (Responder._cookie_shortcut). The lower-cased
 * question is looked up in `answers` (the snapshot's pre-packed table, as the shards of a
 * ShardedTable); on a miss, as Responder._not_prepacked does, the name in `defaults` (NODATA or the
 * CNAME chain) or, walking its labels, the closest zone in `fallbacks` (NXDOMAIN), else
 * `refused`. The reply is the query's ID, the Packed head for its RD/CD bits, its own question
 * bytes (0x20 case kept) and the body (and the OPT), and the answer is counted in `counts`.
 * With DNSSEC signing on (`signed` not None), a query whose OPT has the DO bit is looked up in
 * `signed` instead, and a miss goes to Python, which signs (Responder._signed_fast).
 * Every other datagram goes to `handle(index, data)`, the Python path that answers everything
 * (it also tries the same shortcuts, so the two paths cannot disagree on what they answer:
 * only on who answers). With `tables` None every datagram goes to `handle`, which makes the
 * class a drop-in for datagram_batch.DatagramBatch. Before answering, a batch's plain
 * queries are looked up once with prefetching (warm_batch): at a million names that is what
 * keeps the QPS level with a thousand.
 *
 * Safety: every length is checked before a copy; a value of an unexpected type in the tables
 * sends the datagram to `handle` instead of failing; Python errors from `handle` propagate after
 * the replies already staged are sent. Linux only (recvmmsg, sendmmsg); the GIL is held, as
 * both calls are non-blocking. Not thread-safe: one batch belongs to one socket's reader.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The batch warm-up (warm_batch) prefetches inside the answer tables' dicts, which needs
 * CPython 3.11's dict layout and its internal headers; otherwise it prefetches only the
 * answers it finds through the public API. It never writes, and what it reads inside a dict
 * serves only as prefetch addresses: a wrong guess costs a wasted prefetch, not an answer. */
#if defined(__GNUC__) && defined(__has_include) && PY_VERSION_HEX >= 0x030B0000 && \
    PY_VERSION_HEX < 0x030C0000
#if __has_include("internal/pycore_dict.h") /* some builds install no internal headers */
#define DICT_PREFETCH 1
#define Py_BUILD_CORE
#include "internal/pycore_dict.h"
#undef Py_BUILD_CORE
#endif
#endif

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define SOCKADDR_SIZE ((socklen_t)sizeof(struct sockaddr_in6))
#define PLAIN_UDP_SIZE 512
#define OPT_LEN 11
#define MIN_QUERY 17 /* header, root name, type, class */
#define MAX_QUESTION (255 + 4) /* the longest name, type, class */

static const unsigned char PLAIN_SECTIONS[8] = {0, 1, 0, 0, 0, 0, 0, 0};
static const unsigned char OPT_SECTIONS[8] = {0, 1, 0, 0, 0, 0, 0, 1};

static PyObject *str_heads;
static PyObject *str_heads_edns;
static PyObject *str_body;
static PyObject *str_stat;

typedef struct {
    PyObject_HEAD
    int family;
    unsigned int capacity;
    Py_ssize_t slot;
    unsigned int flush_every;
    socklen_t send_namelen;
    unsigned char *in;
    unsigned char *out;
    unsigned char *names;
    struct iovec *in_iov;
    struct iovec *out_iov;
    struct mmsghdr *in_hdrs;
    struct mmsghdr *out_hdrs;
    unsigned int last_count; /* datagrams the last read filled */
} NativeBatch;

static void NativeBatch_dealloc(NativeBatch *self) {
    PyMem_Free(self->in);
    PyMem_Free(self->out);
    PyMem_Free(self->names);
    PyMem_Free(self->in_iov);
    PyMem_Free(self->out_iov);
    PyMem_Free(self->in_hdrs);
    PyMem_Free(self->out_hdrs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int NativeBatch_init(NativeBatch *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"family", "capacity", "slot", "flush_every", NULL};
    int family;
    int capacity = 64;
    Py_ssize_t slot = 4096;
    int flush_every = 16;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|ini", keywords, &family, &capacity, &slot,
                                     &flush_every)) {
        return -1;
    }
    if (self->in != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "NativeBatch is already initialised");
        return -1;
    }
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "family must be AF_INET or AF_INET6");
        return -1;
    }
    if (capacity < 1 || capacity > 1024) {
        PyErr_SetString(PyExc_ValueError, "capacity must be between 1 and 1024");
        return -1;
    }
    if (slot < 12 || slot > 65535) {
        PyErr_SetString(PyExc_ValueError, "slot must be between 12 and 65535 bytes");
        return -1;
    }
    self->family = family;
    self->capacity = (unsigned int)capacity;
    self->slot = slot;
    self->flush_every = (unsigned int)(flush_every < 1 ? 1 : (flush_every > capacity ? capacity : flush_every));
    self->send_namelen = family == AF_INET ? (socklen_t)sizeof(struct sockaddr_in) : SOCKADDR_SIZE;
    self->in = PyMem_Calloc((size_t)capacity, (size_t)slot);
    self->out = PyMem_Calloc((size_t)capacity, (size_t)slot);
    self->names = PyMem_Calloc((size_t)capacity, SOCKADDR_SIZE);
    self->in_iov = PyMem_Calloc((size_t)capacity, sizeof(struct iovec));
    self->out_iov = PyMem_Calloc((size_t)capacity, sizeof(struct iovec));
    self->in_hdrs = PyMem_Calloc((size_t)capacity, sizeof(struct mmsghdr));
    self->out_hdrs = PyMem_Calloc((size_t)capacity, sizeof(struct mmsghdr));
    if (!self->in || !self->out || !self->names || !self->in_iov || !self->out_iov ||
        !self->in_hdrs || !self->out_hdrs) {
        PyErr_NoMemory();
        return -1;
    }
    for (unsigned int i = 0; i < self->capacity; i++) {
        self->in_iov[i].iov_base = self->in + (size_t)i * (size_t)slot;
        self->in_iov[i].iov_len = (size_t)slot;
        self->out_iov[i].iov_base = self->out + (size_t)i * (size_t)slot;
        self->in_hdrs[i].msg_hdr.msg_name = self->names + (size_t)i * SOCKADDR_SIZE;
        self->in_hdrs[i].msg_hdr.msg_namelen = SOCKADDR_SIZE;
        self->in_hdrs[i].msg_hdr.msg_iov = &self->in_iov[i];
        self->in_hdrs[i].msg_hdr.msg_iovlen = 1;
        self->out_hdrs[i].msg_hdr.msg_namelen = self->send_namelen;
        self->out_hdrs[i].msg_hdr.msg_iov = &self->out_iov[i];
        self->out_hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

/* Read a batch without blocking: the number read, 0 when none waits, -1 with OSError set. */
static int receive(NativeBatch *self, int fd) {
    /* The kernel shortens msg_namelen of the entries it fills: restore those of the last read. */
    for (unsigned int i = 0; i < self->last_count; i++) {
        self->in_hdrs[i].msg_hdr.msg_namelen = SOCKADDR_SIZE;
    }
    self->last_count = 0;
    for (;;) {
        int count = recvmmsg(fd, self->in_hdrs, self->capacity, MSG_DONTWAIT, NULL);
        if (count >= 0) {
            self->last_count = (unsigned int)count;
            return count;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        /* OSError(errno, text), as socket methods raise it: callers can read .errno */
        int code = errno;
        PyObject *err = Py_BuildValue("(iN)", code, PyUnicode_FromFormat("recvmmsg: %s", strerror(code)));
        if (err != NULL) {
            PyErr_SetObject(PyExc_OSError, err);
            Py_DECREF(err);
        }
        return -1;
    }
}

/* Write the first `staged` replies; returns how many the kernel refused. A refused datagram
 * is skipped, as a lost UDP packet, and the rest still go. */
static unsigned int send_staged(NativeBatch *self, int fd, unsigned int staged) {
    unsigned int sent = 0;
    unsigned int failed = 0;
    while (sent < staged) {
        int count = sendmmsg(fd, self->out_hdrs + sent, staged - sent, 0);
        if (count > 0) {
            sent += (unsigned int)count;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return failed + staged - sent; /* the send buffer is full: the rest would fail too */
        }
        sent += 1;
        failed += 1;
    }
    return failed;
}

/* Count one answer in the list `counts[index]`; 0 on success, -1 when it cannot be counted
 * there. */
static int count_answer(PyObject *counts, Py_ssize_t index) {
    if (index < 0 || index >= PyList_GET_SIZE(counts)) {
        return -1;
    }
    PyObject *old = PyList_GET_ITEM(counts, index);
    if (!PyLong_CheckExact(old)) {
        return -1;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *new_value = one ? PyNumber_Add(old, one) : NULL;
    Py_XDECREF(one);
    if (new_value == NULL) {
        PyErr_Clear();
        return -1;
    }
    PyList_SetItem(counts, index, new_value); /* steals new_value, releases old */
    return 0;
}

/* The fields of Responder.FastTables, in order; `exchange` checks their types once per batch
 * (valid_tables), so the per-query code below only reads them. */
enum {
    T_ANSWERS,
    T_EDNS,
    T_COUNTS,
    T_DEFAULTS,
    T_FALLBACKS,
    T_REFUSED,
    T_QTYPE_INDEX,
    T_QTYPE_OTHER,
    T_RCODE_SLOTS,
    T_COOKIE_SECRET,
    T_COOKIE_TIME,
    T_SIGNED,
    T_SIZE
};

#define COOKIE_REPLY_OPT 39 /* OPT header, then COOKIE: code, length 24, client 8, server 16 */

/* A dict lookup by raw bytes: a new reference to the value, NULL when absent (no error set)
 * or, with an error set, when the key could not be made. */
static PyObject *lookup(PyObject *dict, const unsigned char *key, Py_ssize_t size) {
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, size);
    if (k == NULL) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(dict, k); /* borrowed */
    Py_DECREF(k);
    Py_XINCREF(value);
    return value;
}

/* A question's table key: its bytes lower-cased as bytes.lower() does (ASCII only). */
static void lower_question(unsigned char *key, const unsigned char *question, Py_ssize_t size) {
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = question[i];
        key[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
    }
}

/* The dict of a ShardedTable's shards (shards.py) that holds `k`: its hash masked to the shard
 * count, a power of two, as ShardedTable.shard_of picks it; `*hash` gets the hash (cached in
 * `k`, so the dict lookup does not hash again). NULL with an error set when `k` does not hash
 * or the shard is not a dict. */
static PyObject *shard_of(PyObject *shards, PyObject *k, Py_hash_t *hash) {
    *hash = PyObject_Hash(k);
    if (*hash == -1) {
        return NULL;
    }
    Py_uhash_t mask = (Py_uhash_t)PyTuple_GET_SIZE(shards) - 1;
    PyObject *shard = PyTuple_GET_ITEM(shards, (Py_ssize_t)((Py_uhash_t)*hash & mask));
    if (!PyDict_CheckExact(shard)) {
        PyErr_SetString(PyExc_TypeError, "a table shard is not a dict");
        return NULL;
    }
    return shard;
}

/* A lookup in a ShardedTable's shards: the same contract as `lookup`; a shard that is not a
 * dict is an error. */
static PyObject *lookup_sharded(PyObject *shards, const unsigned char *key, Py_ssize_t size) {
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, size);
    if (k == NULL) {
        return NULL;
    }
    Py_hash_t hash;
    PyObject *shard = shard_of(shards, k, &hash);
    PyObject *value = shard == NULL ? NULL : PyDict_GetItemWithError(shard, k); /* borrowed */
    Py_DECREF(k);
    Py_XINCREF(value);
    return value;
}

/* Whether either byte of a query type is an ASCII letter (wire.folds_with_case). */
static int folds_with_case(unsigned int qtype) {
    unsigned int high = ((qtype >> 8) & 0xFF) | 0x20;
    unsigned int low = (qtype & 0xFF) | 0x20;
    return (high >= 'a' && high <= 'z') || (low >= 'a' && low <= 'z');
}

/* The answer for a well-formed plain query the table has no exact entry for, as
 * Responder._not_prepacked finds it: a new reference, or NULL (no error set) when the query
 * must go to Python; `*counter` gets the qtype part of its counter slot. */
static PyObject *not_prepacked(PyObject *tables, const unsigned char *name, Py_ssize_t size,
                               unsigned int qtype, Py_ssize_t *counter) {
    PyObject *defaults = PyTuple_GET_ITEM(tables, T_DEFAULTS);
    PyObject *fallbacks = PyTuple_GET_ITEM(tables, T_FALLBACKS);
    PyObject *qtype_index = PyTuple_GET_ITEM(tables, T_QTYPE_INDEX);
    PyObject *found = lookup_sharded(defaults, name, size);
    if (found == NULL && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (found != NULL) {
        if (folds_with_case(qtype)) {
            Py_DECREF(found); /* the name may hold this type: it was left out of the table */
            return NULL;
        }
    } else {
        /* Labels of 1..63 bytes ending in the root label exactly at the last byte; the
         * closest enclosing zone on the way. */
        Py_ssize_t last = size - 1;
        Py_ssize_t i = 0;
        while (i < last) {
            unsigned int length = name[i];
            if (length > 63 || length == 0) {
                Py_XDECREF(found);
                return NULL;
            }
            if (found == NULL) {
                found = lookup(fallbacks, name + i, size - i);
                if (found == NULL && PyErr_Occurred()) {
                    PyErr_Clear();
                    return NULL;
                }
            }
            i += (Py_ssize_t)length + 1;
        }
        if (i != last || name[last] != 0) {
            Py_XDECREF(found);
            return NULL;
        }
        if (found == NULL) {
            found = PyTuple_GET_ITEM(tables, T_REFUSED);
            Py_INCREF(found);
        }
    }
    PyObject *qtype_key = PyLong_FromUnsignedLong(qtype);
    if (qtype_key == NULL) {
        PyErr_Clear();
        Py_DECREF(found);
        return NULL;
    }
    PyObject *index = PyDict_GetItemWithError(qtype_index, qtype_key); /* borrowed */
    Py_DECREF(qtype_key);
    if (index == NULL) {
        if (PyErr_Occurred()) {
            PyErr_Clear();
            Py_DECREF(found);
            return NULL;
        }
        index = PyTuple_GET_ITEM(tables, T_QTYPE_OTHER);
    }
    Py_ssize_t slots = PyLong_AsSsize_t(PyTuple_GET_ITEM(tables, T_RCODE_SLOTS));
    Py_ssize_t qtype_slot = PyLong_AsSsize_t(index);
    if ((slots == -1 || qtype_slot == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        Py_DECREF(found);
        return NULL;
    }
    *counter = qtype_slot * slots;
    return found;
}

/* SipHash-2-4 (Aumasson and Bernstein), for RFC 9018 server cookies: the same function as
 * cookies.siphash24, which falls back to Python where this module was not built. */
#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                 \
    do {                                                                         \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);            \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                                 \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                                 \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);            \
    } while (0)

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t siphash24(const unsigned char key[16], const unsigned char *in, size_t len) {
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = ((uint64_t)len) << 56;
    for (size_t i = 0; i < len % 8; i++) {
        b |= ((uint64_t)in[whole + i]) << (8 * i);
    }
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The length of the one COOKIE option ending a query's OPT record in the two shapes the fast
 * path takes, a client cookie alone (12 bytes with code and length) or with a 16-byte server
 * cookie (28), tried in that order as Responder._cookie_shortcut does; 0 for anything else. */
static Py_ssize_t cookie_shape(const unsigned char *data, Py_ssize_t n) {
    static const Py_ssize_t sizes[2] = {12, 28};
    for (int i = 0; i < 2; i++) {
        Py_ssize_t size = sizes[i];
        Py_ssize_t start = n - size - OPT_LEN;
        if (start < MIN_QUERY) {
            continue;
        }
        const unsigned char *opt = data + start;
        if (opt[9] == 0 && opt[10] == size && opt[11] == 0 && opt[12] == 10 && opt[13] == 0 &&
            opt[14] == size - 4) {
            return size;
        }
    }
    return 0;
}

/* The address bytes a server cookie covers (cookies.client_ip): 4 for IPv4 and IPv4-mapped
 * IPv6, 16 for IPv6. */
static Py_ssize_t client_address(const unsigned char *name, unsigned char out[16]) {
    const struct sockaddr *sa = (const struct sockaddr *)name;
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)name)->sin_addr, 4);
        return 4;
    }
    const unsigned char *a6 = (const unsigned char *)&((const struct sockaddr_in6 *)name)->sin6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a6, mapped, 12) == 0) {
        memcpy(out, a6 + 12, 4);
        return 4;
    }
    memcpy(out, a6, 16);
    return 16;
}

/* The fast path for datagram `data[:n]`: writes the reply into `reply` (room for `room`
 * bytes) and returns its length, or returns 0 when the datagram must go to the Python path.
 * Returns -1 only with a Python error set (out of memory). */
static Py_ssize_t answer_fast(const unsigned char *data, Py_ssize_t n, PyObject *tables,
                              const unsigned char *peer, unsigned char *reply, Py_ssize_t room) {
    if (n < MIN_QUERY || (data[2] & 0xF8)) {
        return 0; /* too short for a question, a response, or an opcode other than QUERY */
    }
    PyObject *answers = PyTuple_GET_ITEM(tables, T_ANSWERS);
    PyObject *edns = PyTuple_GET_ITEM(tables, T_EDNS);
    Py_ssize_t qend;
    Py_ssize_t limit;
    PyObject *opt = NULL;
    PyObject *edns_entry = NULL;
    const unsigned char *client_cookie = NULL; /* a COOKIE query: its 8-byte client cookie */
    int signed_query = 0; /* DO=1 while signing: a miss goes to Python, which signs */
    if (memcmp(data + 4, PLAIN_SECTIONS, 8) == 0) {
        qend = n;
        limit = PLAIN_UDP_SIZE;
    } else if (memcmp(data + 4, OPT_SECTIONS, 8) == 0 && n >= MIN_QUERY + OPT_LEN) {
        Py_ssize_t cookie_size = 0;
        edns_entry = lookup(edns, data + n - OPT_LEN, OPT_LEN);
        if (edns_entry == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            /* A COOKIE as the OPT's only option: the option-less key of the same OPT. */
            cookie_size = cookie_shape(data, n);
            if (cookie_size == 0) {
                return 0;
            }
            unsigned char bare[OPT_LEN];
            memcpy(bare, data + n - cookie_size - OPT_LEN, OPT_LEN - 2);
            bare[OPT_LEN - 2] = bare[OPT_LEN - 1] = 0;
            edns_entry = lookup(edns, bare, OPT_LEN);
            if (edns_entry == NULL) {
                return PyErr_Occurred() ? -1 : 0;
            }
            client_cookie = data + n - cookie_size + 4;
        }
        if (!PyTuple_CheckExact(edns_entry) || PyTuple_GET_SIZE(edns_entry) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(edns_entry, 0)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(edns_entry, 1))) {
            Py_DECREF(edns_entry);
            return 0;
        }
        opt = PyTuple_GET_ITEM(edns_entry, 0);
        limit = PyLong_AsSsize_t(PyTuple_GET_ITEM(edns_entry, 1));
        if (limit < 0) {
            PyErr_Clear();
            Py_DECREF(edns_entry);
            return 0;
        }
        qend = n - OPT_LEN - cookie_size;
        if (client_cookie && PyBytes_GET_SIZE(opt) != OPT_LEN) {
            Py_DECREF(edns_entry);
            return 0;
        }
        PyObject *signed_answers = PyTuple_GET_ITEM(tables, T_SIGNED);
        if (signed_answers != Py_None && PyBytes_GET_SIZE(opt) >= OPT_LEN &&
            (PyBytes_AS_STRING(opt)[7] & 0x80)) {
            answers = signed_answers; /* DO=1 while signing: signed answers only */
            signed_query = 1;
        }
    } else {
        return 0;
    }
    /* The key: the question (name, type, class) lower-cased as bytes.lower() does (ASCII). */
    Py_ssize_t qlen = qend - 12;
    unsigned char key[MAX_QUESTION];
    Py_ssize_t length = 0;
    PyObject *packed = NULL;
    PyObject *heads = NULL;
    PyObject *body = NULL;
    PyObject *stat = NULL;
    if (qlen > MAX_QUESTION) {
        goto done; /* longer than any name: the Python path says FORMERR */
    }
    const unsigned char *q = data + 12;
    lower_question(key, q, qlen);
    Py_ssize_t counter = 0; /* the qtype part of the counter slot; the table's are in stat */
    packed = lookup_sharded(answers, key, qlen);
    if (packed == NULL) {
        if (PyErr_Occurred()) {
            length = -1;
            goto done;
        }
        if (signed_query) {
            goto done;
        }
        /* Not pre-packed: NODATA, NXDOMAIN or REFUSED, for class IN and the types
         * Responder._not_prepacked takes (not OPT, TKEY, TSIG, IXFR, AXFR, MAILB, MAILA, ANY). */
        unsigned int qtype = ((unsigned int)q[qlen - 4] << 8) | q[qlen - 3];
        if (q[qlen - 2] != 0 || q[qlen - 1] != 1 || qtype == 41 || (qtype >= 249 && qtype <= 255)) {
            goto done;
        }
        packed = not_prepacked(tables, key, qlen - 4, qtype, &counter);
        if (packed == NULL) {
            goto done;
        }
    }
    heads = PyObject_GetAttr(packed, opt ? str_heads_edns : str_heads);
    body = PyObject_GetAttr(packed, str_body);
    stat = PyObject_GetAttr(packed, str_stat);
    if (heads == NULL || body == NULL || stat == NULL) {
        PyErr_Clear();
        goto done;
    }
    Py_ssize_t flag_index = (data[2] & 1) | ((data[3] & 0x10) >> 3);
    if (!PyTuple_CheckExact(heads) || PyTuple_GET_SIZE(heads) != 4 || !PyBytes_CheckExact(body) ||
        !PyLong_CheckExact(stat)) {
        goto done;
    }
    PyObject *head = PyTuple_GET_ITEM(heads, flag_index);
    if (!PyBytes_CheckExact(head) || PyBytes_GET_SIZE(head) != 10) {
        goto done;
    }
    Py_ssize_t body_size = PyBytes_GET_SIZE(body);
    Py_ssize_t opt_size = client_cookie ? COOKIE_REPLY_OPT : opt ? PyBytes_GET_SIZE(opt) : 0;
    Py_ssize_t total = qend + body_size + opt_size;
    if ((client_cookie ? total : n + body_size) > limit || total > room) {
        goto done; /* does not fit: the Python path sets TC or answers in full */
    }
    Py_ssize_t base = PyLong_AsSsize_t(stat);
    if (base == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto done;
    }
    if (count_answer(PyTuple_GET_ITEM(tables, T_COUNTS), base + counter) < 0) {
        goto done;
    }
    memcpy(reply, data, 2);
    memcpy(reply + 2, PyBytes_AS_STRING(head), 10);
    memcpy(reply + 12, data + 12, (size_t)qlen);
    memcpy(reply + qend, PyBytes_AS_STRING(body), (size_t)body_size);
    if (client_cookie) {
        /* Our OPT with the COOKIE answer (RFC 9018): client cookie, version 1, reserved,
         * timestamp, SipHash-2-4 over those, and the client address, as cookies.py makes it. */
        unsigned char *o = reply + qend + body_size;
        memcpy(o, PyBytes_AS_STRING(opt), OPT_LEN - 2);
        o[9] = 0;
        o[10] = 28;
        o[11] = 0;
        o[12] = 10;
        o[13] = 0;
        o[14] = 24;
        unsigned char input[8 + 8 + 16];
        memcpy(input, client_cookie, 8);
        unsigned long long now = PyLong_AsUnsignedLongLongMask(
            PyTuple_GET_ITEM(tables, T_COOKIE_TIME));
        input[8] = 1;
        input[9] = input[10] = input[11] = 0;
        for (int i = 0; i < 4; i++) {
            input[12 + i] = (unsigned char)(now >> (24 - 8 * i));
        }
        Py_ssize_t ip_size = client_address(peer, input + 16);
        uint64_t hash = siphash24(
            (const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(tables, T_COOKIE_SECRET)),
            input, (size_t)(16 + ip_size));
        memcpy(o + 15, input, 16);
        for (int i = 0; i < 8; i++) {
            o[31 + i] = (unsigned char)(hash >> (8 * i));
        }
    } else if (opt) {
        memcpy(reply + qend + body_size, PyBytes_AS_STRING(opt), (size_t)opt_size);
    }
    length = total;
done:
    Py_XDECREF(heads);
    Py_XDECREF(body);
    Py_XDECREF(stat);
    Py_XDECREF(packed);
    Py_XDECREF(edns_entry);
    return length;
}

/* Whether `table` is a ShardedTable's shards: a tuple of a power of two entries (each is
 * checked to be a dict when it is read, in lookup_sharded). */
static int valid_shards(PyObject *table) {
    if (!PyTuple_CheckExact(table)) {
        return 0;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(table);
    return count > 0 && (count & (count - 1)) == 0;
}

/* Whether `tables` has the shape of a Responder.FastTables. */
static int valid_tables(PyObject *tables) {
    if (!PyTuple_Check(tables) || PyTuple_GET_SIZE(tables) != T_SIZE) {
        return 0;
    }
    if (!valid_shards(PyTuple_GET_ITEM(tables, T_ANSWERS)) ||
        !valid_shards(PyTuple_GET_ITEM(tables, T_DEFAULTS))) {
        return 0;
    }
    static const int dicts[] = {T_EDNS, T_FALLBACKS, T_QTYPE_INDEX};
    for (size_t i = 0; i < sizeof(dicts) / sizeof(dicts[0]); i++) {
        if (!PyDict_CheckExact(PyTuple_GET_ITEM(tables, dicts[i]))) {
            return 0;
        }
    }
    PyObject *secret = PyTuple_GET_ITEM(tables, T_COOKIE_SECRET);
    PyObject *signed_answers = PyTuple_GET_ITEM(tables, T_SIGNED);
    if (signed_answers != Py_None && !valid_shards(signed_answers)) {
        return 0;
    }
    return PyList_CheckExact(PyTuple_GET_ITEM(tables, T_COUNTS)) &&
           PyLong_CheckExact(PyTuple_GET_ITEM(tables, T_QTYPE_OTHER)) &&
           PyLong_CheckExact(PyTuple_GET_ITEM(tables, T_RCODE_SLOTS)) &&
           PyBytes_CheckExact(secret) && PyBytes_GET_SIZE(secret) == 16 &&
           PyLong_CheckExact(PyTuple_GET_ITEM(tables, T_COOKIE_TIME));
}

#define WARM_CHUNK 64

/* Prefetch the bodies of `found` answers (new references, released here). */
static void warm_bodies(PyObject **found, int count) {
    for (int j = 0; j < count; j++) {
        PyObject *body = PyObject_GetAttr(found[j], str_body); /* the Packed is in cache now */
        if (body == NULL) {
            PyErr_Clear();
        } else {
            if (PyBytes_CheckExact(body)) {
                const char *bytes = PyBytes_AS_STRING(body);
                __builtin_prefetch(bytes);
                __builtin_prefetch(bytes + 64);
            }
            Py_DECREF(body);
        }
        Py_DECREF(found[j]);
    }
}

/* One query of a batch being warmed: its key, the key's hash and the shard that holds it. */
typedef struct {
    PyObject *key;  /* new reference */
    Py_hash_t hash;
    PyObject *shard; /* borrowed, from the tables */
} Warming;

#ifdef DICT_PREFETCH
/* The entry a dict's first probe for `hash` lands on, or NULL (empty slot, another kind of
 * dict). Reads the index slot, which the caller prefetched. */
static PyDictKeyEntry *first_probe(PyObject *shard, Py_hash_t hash) {
    PyDictKeysObject *keys = ((PyDictObject *)shard)->ma_keys;
    if (keys->dk_kind != DICT_KEYS_GENERAL) {
        return NULL;
    }
    size_t slot = (size_t)hash & (((size_t)1 << keys->dk_log2_size) - 1);
    int width = keys->dk_log2_index_bytes - keys->dk_log2_size; /* log2 of the index width */
    Py_ssize_t ix;
    if (width == 0) {
        ix = ((const int8_t *)keys->dk_indices)[slot];
    } else if (width == 1) {
        ix = ((const int16_t *)keys->dk_indices)[slot];
    } else if (width == 2) {
        ix = ((const int32_t *)keys->dk_indices)[slot];
    } else {
        ix = (Py_ssize_t)((const int64_t *)keys->dk_indices)[slot];
    }
    if (ix < 0 || ix >= keys->dk_nentries) {
        return NULL;
    }
    return &DK_ENTRIES(keys)[ix];
}

static void prefetch_index_slot(PyObject *shard, Py_hash_t hash) {
    PyDictKeysObject *keys = ((PyDictObject *)shard)->ma_keys;
    size_t slot = (size_t)hash & (((size_t)1 << keys->dk_log2_size) - 1);
    int width = keys->dk_log2_index_bytes - keys->dk_log2_size;
    __builtin_prefetch(keys->dk_indices + (slot << width));
}
#endif

/* Look up the answer of every plain query of the batch before any is answered, prefetching
 * each step. At a million names the tables are far larger than the CPU caches and one answer
 * is a chain of dependent memory reads (the dict's index slot, its entry, the stored key, the
 * Packed, its body); taken one query at a time those stalls add up, taken a step at a time
 * over the whole batch the stalls of different queries overlap, and answer_fast then finds
 * everything in cache. It only reads; a miss or any other shape is left to answer_fast. */
static void warm_batch(NativeBatch *self, int count, PyObject *tables) {
    PyObject *answers = PyTuple_GET_ITEM(tables, T_ANSWERS);
    Warming warming[WARM_CHUNK];
    unsigned char key[MAX_QUESTION];
    int first = 0;
    while (first < count) {
        int held = 0;
        int i = first;
        for (; i < count && held < WARM_CHUNK; i++) {
            const unsigned char *data = self->in + (size_t)i * (size_t)self->slot;
            Py_ssize_t n = (Py_ssize_t)self->in_hdrs[i].msg_len;
            Py_ssize_t qend;
            if (n < MIN_QUERY || (data[2] & 0xF8)) {
                continue;
            }
            if (memcmp(data + 4, PLAIN_SECTIONS, 8) == 0) {
                qend = n;
            } else if (memcmp(data + 4, OPT_SECTIONS, 8) == 0 && n >= MIN_QUERY + OPT_LEN) {
                qend = n - OPT_LEN;
            } else {
                continue;
            }
            Py_ssize_t qlen = qend - 12;
            if (qlen > MAX_QUESTION) {
                continue;
            }
            lower_question(key, data + 12, qlen);
            PyObject *k = PyBytes_FromStringAndSize((const char *)key, qlen);
            if (k == NULL) {
                PyErr_Clear();
                continue;
            }
            Py_hash_t hash;
            PyObject *shard = shard_of(answers, k, &hash);
            if (shard == NULL) {
                PyErr_Clear(); /* answer_fast meets the same error and raises it */
                Py_DECREF(k);
                continue;
            }
#ifdef DICT_PREFETCH
            prefetch_index_slot(shard, hash);
#endif
            warming[held].key = k;
            warming[held].hash = hash;
            warming[held].shard = shard;
            held++;
        }
        first = i;
#ifdef DICT_PREFETCH
        PyDictKeyEntry *entries[WARM_CHUNK];
        for (int j = 0; j < held; j++) {
            entries[j] = first_probe(warming[j].shard, warming[j].hash);
            if (entries[j] != NULL) {
                __builtin_prefetch(entries[j]);
            }
        }
        for (int j = 0; j < held; j++) {
            PyDictKeyEntry *entry = entries[j];
            if (entry != NULL && entry->me_hash == warming[j].hash && entry->me_key != NULL) {
                __builtin_prefetch(entry->me_key);
                __builtin_prefetch(entry->me_value);
            }
        }
#endif
        PyObject *found[WARM_CHUNK];
        int packed_count = 0;
        for (int j = 0; j < held; j++) {
            PyObject *value = PyDict_GetItemWithError(warming[j].shard, warming[j].key);
            Py_DECREF(warming[j].key);
            if (value == NULL) {
                PyErr_Clear();
                continue;
            }
            Py_INCREF(value);
            __builtin_prefetch(value);
            found[packed_count++] = value;
        }
        warm_bodies(found, packed_count);
    }
}

static PyObject *NativeBatch_exchange(NativeBatch *self, PyObject *const *args,
                                      Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "exchange(fd, handle, tables=None) takes 2 or 3 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fd must be a file descriptor");
        return NULL;
    }
    PyObject *handle = args[1];
    PyObject *tables = nargs == 3 ? args[2] : Py_None;
    if (self->in == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "NativeBatch is not initialised");
        return NULL;
    }
    if (tables != Py_None && !valid_tables(tables)) {
        PyErr_SetString(PyExc_TypeError,
                        "tables must be a Responder.FastTables: answers and defaults as "
                        "shards (a tuple of 2^k dicts), edns, fallbacks and qtype_index "
                        "dicts, counts a list, qtype_other and rcode_slots ints, a 16-byte "
                        "cookie secret, an int cookie time and signed answers (shards or "
                        "None)");
        return NULL;
    }
    int count = receive(self, (int)fd);
    if (count < 0) {
        return NULL;
    }
    if (tables != Py_None && count > 1) {
        warm_batch(self, count, tables);
    }
    unsigned int staged = 0;
    unsigned int lost = 0;
    int failed = 0; /* handle raised: what was staged is still sent, then the error re-raised */
    for (int i = 0; i < count; i++) {
        const unsigned char *data = self->in + (size_t)i * (size_t)self->slot;
        Py_ssize_t n = (Py_ssize_t)self->in_hdrs[i].msg_len;
        unsigned char *reply = self->out + (size_t)staged * (size_t)self->slot;
        Py_ssize_t size = 0;
        if (tables != Py_None) {
            size = answer_fast(data, n, tables, self->names + (size_t)i * SOCKADDR_SIZE, reply,
                               self->slot);
            if (size < 0) {
                failed = 1;
                break;
            }
        }
        if (size == 0) {
            PyObject *result = PyObject_CallFunction(handle, "iy#", i, (const char *)data, n);
            if (result == NULL) {
                failed = 1;
                break;
            }
            if (result == Py_None) {
                Py_DECREF(result);
                continue;
            }
            char *bytes;
            Py_ssize_t length;
            if (PyBytes_AsStringAndSize(result, &bytes, &length) < 0) {
                Py_DECREF(result);
                failed = 1;
                break;
            }
            if (length > self->slot) {
                lost += 1;
                Py_DECREF(result);
                continue;
            }
            memcpy(reply, bytes, (size_t)length);
            size = length;
            Py_DECREF(result);
        }
        self->out_iov[staged].iov_len = (size_t)size;
        self->out_hdrs[staged].msg_hdr.msg_name = self->in_hdrs[i].msg_hdr.msg_name;
        staged += 1;
        if (staged == self->flush_every) {
            lost += send_staged(self, (int)fd, staged);
            staged = 0;
        }
    }
    if (staged) {
        /* Sent even when handle raised: those queries were answered. */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        lost += send_staged(self, (int)fd, staged);
        PyErr_Restore(type, value, traceback);
    }
    if (failed) {
        return NULL;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong(count));
    PyTuple_SET_ITEM(result, 1, PyLong_FromUnsignedLong(lost));
    if (PyTuple_GET_ITEM(result, 0) == NULL || PyTuple_GET_ITEM(result, 1) == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

static PyObject *NativeBatch_raw_peer(NativeBatch *self, PyObject *arg) {
    Py_ssize_t index = PyLong_AsSsize_t(arg);
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->names == NULL || index < 0 || index >= (Py_ssize_t)self->capacity) {
        PyErr_SetString(PyExc_IndexError, "no such datagram in the batch");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)self->names + (size_t)index * SOCKADDR_SIZE,
                                     SOCKADDR_SIZE);
}

/* The buffer protocol exposes the peer table (28 bytes per datagram), writable: tests use it
 * to inject a failing send. */
static int NativeBatch_getbuffer(NativeBatch *self, Py_buffer *view, int flags) {
    if (self->names == NULL) {
        PyErr_SetString(PyExc_BufferError, "NativeBatch is not initialised");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->names,
                          (Py_ssize_t)self->capacity * SOCKADDR_SIZE, 0, flags) < 0) {
        return -1;
    }
    return 0;
}

static PyBufferProcs NativeBatch_as_buffer = {
    (getbufferproc)NativeBatch_getbuffer,
    NULL,
};

static PyObject *NativeBatch_get_capacity(NativeBatch *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLong(self->capacity);
}

static PyObject *native_siphash24(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "siphash24(key: bytes, message: bytes)");
        return NULL;
    }
    if (PyBytes_GET_SIZE(args[0]) != 16) {
        PyErr_SetString(PyExc_ValueError, "a SipHash key is 16 bytes");
        return NULL;
    }
    uint64_t h = siphash24((const unsigned char *)PyBytes_AS_STRING(args[0]),
                           (const unsigned char *)PyBytes_AS_STRING(args[1]),
                           (size_t)PyBytes_GET_SIZE(args[1]));
    unsigned char out[8];
    for (int i = 0; i < 8; i++) {
        out[i] = (unsigned char)(h >> (8 * i));
    }
    return PyBytes_FromStringAndSize((const char *)out, 8);
}

static PyMethodDef module_methods[] = {
    {"siphash24", (PyCFunction)(void (*)(void))native_siphash24, METH_FASTCALL,
     "siphash24(key, message, /) -> bytes: SipHash-2-4 of message under a 16-byte key, as 8\n"
     "little-endian bytes (RFC 9018 server cookies)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef NativeBatch_methods[] = {
    {"exchange", (PyCFunction)(void (*)(void))NativeBatch_exchange, METH_FASTCALL,
     "exchange(fd, handle, tables=None, /) -> (read, lost)\n\n"
     "Read up to `capacity` datagrams without blocking and answer each: from `tables` (a\n"
     "Responder.FastTables) when it is a plain query with a pre-packed answer, else with\n"
     "`handle(index, data)` (bytes, or None for no reply). Returns (datagrams read, replies\n"
     "lost)."},
    {"raw_peer", (PyCFunction)NativeBatch_raw_peer, METH_O,
     "raw_peer(index) -> bytes: the sockaddr datagram `index` came from (28 bytes)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef NativeBatch_getset[] = {
    {"capacity", (getter)NativeBatch_get_capacity, NULL, "Datagrams read per call at most.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject NativeBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "acmezone_dns._native_batch.NativeBatch",
    .tp_doc = "Up to `capacity` UDP datagrams read with one recvmmsg, answered, and the replies "
              "written with sendmmsg, `flush_every` at a time.",
    .tp_basicsize = sizeof(NativeBatch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)NativeBatch_init,
    .tp_dealloc = (destructor)NativeBatch_dealloc,
    .tp_methods = NativeBatch_methods,
    .tp_getset = NativeBatch_getset,
    .tp_as_buffer = &NativeBatch_as_buffer,
};

static struct PyModuleDef native_batch_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "acmezone_dns._native_batch",
    .m_doc = "The UDP hot loop in C: recvmmsg, pre-packed answers, sendmmsg.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native_batch(void) {
    str_heads = PyUnicode_InternFromString("heads");
    str_heads_edns = PyUnicode_InternFromString("heads_edns");
    str_body = PyUnicode_InternFromString("body");
    str_stat = PyUnicode_InternFromString("stat");
    if (!str_heads || !str_heads_edns || !str_body || !str_stat) {
        return NULL;
    }
    if (PyType_Ready(&NativeBatchType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&native_batch_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&NativeBatchType);
    if (PyModule_AddObject(module, "NativeBatch", (PyObject *)&NativeBatchType) < 0) {
        Py_DECREF(&NativeBatchType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
