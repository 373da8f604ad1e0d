/*
 * regfd.scan._wordset: which words and word pairs of a fixed vocabulary occur in a text.
 *
 * The message model (message_model.py) weighs ~30 000 words and word pairs, read in every
 * scanned message. The reference implementation (wordindex.HyperscanWords) joins the text's
 * tokens by single spaces and finds " word " and " word pair " with one Hyperscan literal
 * database: 0.12 ms on 10 KB, and its 3.9 MB database evicts the evidence signals' databases
 * from the cache (0.19 ms of a 0.52 ms scan, measured). This does the same with one hash
 * lookup per token and per pair of neighbouring tokens, in a table of about 0.5 MB.
 *
 * The answer is the reference's, by construction and by test (tests/test_wordindex.py, on the
 * whole development corpus): a token is a maximal run of ASCII letters, digits and the
 * apostrophe (capitals lowered, every digit read as 0: the model weighs a figure's shape, "00m",
 * not the figure); every other character, any non-ASCII one included, separates.
 * The GIL is released while the text is read.
 *
 * compact(): the evidence signals' compact text (evidence.Compact), the other per-message pass
 * over every character: 0.024 ms on 10 KB as encode + translate + re.sub, 0.010 ms here.
 * separator_runs() and sentence_ends(): its offset maps and where its sentences end (evidence.Compact and
 * evidence._Breaks), for text with a topic or phrase hit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL


/* The token byte of an ASCII character (capitals lowered, digits read as '0'), 0 for a separator. */
static unsigned char TOKEN[128];

typedef struct {
    uint64_t hash;
    uint32_t off; /* into `text` */
    uint32_t len;
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *entries;
    Py_ssize_t size;
    uint64_t *slots; /* the hash's high 32 bits, then entry index + 1; 0 is an empty slot */
    size_t mask;
    char *text; /* every literal's bytes, one after the other */
    size_t max_len;
} WordSet;

static inline uint64_t fnv(uint64_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * FNV_PRIME;
    return h;
}

static inline Py_ssize_t lookup(const WordSet *ws, uint64_t h, const char *p, size_t n) {
    if (n > ws->max_len)
        return -1;
    /* Most lookups miss: the tag in the slot settles them without reading the entry. */
    uint64_t tag = h >> 32 << 32;
    for (size_t slot = (size_t)h & ws->mask;; slot = (slot + 1) & ws->mask) {
        uint64_t v = ws->slots[slot];
        if (v == 0)
            return -1;
        if ((v & 0xFFFFFFFF00000000ULL) != tag)
            continue;
        const Entry *e = &ws->entries[(uint32_t)v - 1];
        if (e->hash == h && e->len == n && memcmp(ws->text + e->off, p, n) == 0)
            return (Py_ssize_t)(uint32_t)v - 1;
    }
}

static void WordSet_dealloc(WordSet *self) {
    PyMem_RawFree(self->entries);
    PyMem_RawFree(self->slots);
    PyMem_RawFree(self->text);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A literal is one token or two separated by one space. */
static int valid_literal(const char *p, Py_ssize_t n) {
    if (n == 0 || p[0] == ' ' || p[n - 1] == ' ')
        return 0;
    int spaces = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == ' ')
            spaces++;
        else if (c >= 128 || TOKEN[c] != c)
            return 0;
    }
    return spaces <= 1;
}

static int WordSet_init(WordSet *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"literals", NULL};
    PyObject *arg;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:WordSet", kwlist, &arg))
        return -1;
    if (self->entries != NULL) { /* another thread may be reading the table with the GIL released */
        PyErr_SetString(PyExc_TypeError, "a WordSet cannot be initialized twice");
        return -1;
    }
    PyObject *seq = PySequence_Fast(arg, "WordSet() takes a sequence of str");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t len;
        const char *p = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &len) : NULL;
        if (p == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "WordSet literal %zd is not a str", i);
            Py_DECREF(seq);
            return -1;
        }
        if (!valid_literal(p, len)) {
            PyErr_Format(PyExc_ValueError, "WordSet literal %R is not one word or a pair of words "
                         "(lower-case ASCII letters, apostrophes and the digit 0, which stands for any digit; "
                         "one space between)", item);
            Py_DECREF(seq);
            return -1;
        }
        total += (size_t)len;
    }
    if (total > UINT32_MAX || n > (Py_ssize_t)(UINT32_MAX / 4)) {
        PyErr_SetString(PyExc_ValueError, "WordSet: too many literals");
        Py_DECREF(seq);
        return -1;
    }
    size_t nslots = 16;
    while (nslots < 2 * (size_t)n)
        nslots <<= 1;
    self->entries = PyMem_RawMalloc(sizeof(Entry) * (size_t)(n ? n : 1));
    self->slots = PyMem_RawCalloc(nslots, sizeof(uint64_t));
    self->text = PyMem_RawMalloc(total ? total : 1);
    self->size = 0;
    self->mask = nslots - 1;
    self->max_len = 0;
    if (self->entries == NULL || self->slots == NULL || self->text == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    size_t off = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *p = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        uint64_t h = fnv(FNV_OFFSET, p, (size_t)len);
        if (lookup(self, h, p, (size_t)len) >= 0) {
            PyErr_Format(PyExc_ValueError, "WordSet literal %R is given twice", PySequence_Fast_GET_ITEM(seq, i));
            Py_DECREF(seq);
            return -1;
        }
        memcpy(self->text + off, p, (size_t)len);
        self->entries[i] = (Entry){h, (uint32_t)off, (uint32_t)len};
        size_t slot = (size_t)h & self->mask;
        while (self->slots[slot])
            slot = (slot + 1) & self->mask;
        self->slots[slot] = (h >> 32 << 32) | ((uint64_t)i + 1);
        off += (size_t)len;
        if ((size_t)len > self->max_len)
            self->max_len = (size_t)len;
        self->size = i + 1;
    }
    Py_DECREF(seq);
    return 0;
}

static inline void mark(const WordSet *ws, uint64_t *seen, uint64_t h, const char *p, size_t n) {
    Py_ssize_t id = lookup(ws, h, p, n);
    if (id >= 0)
        seen[id >> 6] |= 1ULL << (id & 63);
}

/* Marks in `seen` the literals that occur in `text`: each token and each pair of neighbouring tokens is
 * looked up as it ends. `buf` receives the tokens joined by single spaces (a pair's bytes, for the
 * comparison that confirms a hash); the hashes are computed as the characters come. */
static void find(const WordSet *ws, int kind, const void *data, Py_ssize_t n, char *buf, uint64_t *seen) {
    size_t p = 0, start = 0, prev_start = 0;
    uint64_t h = 0, h_pair = 0, h_prev = 0;
    int in_token = 0, has_prev = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        Py_UCS4 c = i == n ? ' ' : kind == PyUnicode_1BYTE_KIND ? ((const Py_UCS1 *)data)[i] : PyUnicode_READ(kind, data, i);
        unsigned char t = c < 128 ? TOKEN[c] : 0;
        if (t) {
            if (!in_token) {
                if (has_prev)
                    buf[p++] = ' ';
                start = p;
                h = FNV_OFFSET;
                h_pair = (h_prev ^ ' ') * FNV_PRIME;
                in_token = 1;
            }
            buf[p++] = (char)t;
            h = (h ^ t) * FNV_PRIME;
            h_pair = (h_pair ^ t) * FNV_PRIME;
        } else if (in_token) {
            mark(ws, seen, h, buf + start, p - start);
            if (has_prev)
                mark(ws, seen, h_pair, buf + prev_start, p - prev_start);
            has_prev = 1;
            prev_start = start;
            h_prev = h;
            in_token = 0;
        }
    }
}

/* Whether `text` is a str ready to read; if not, the exception is set. */
static int ready_str(PyObject *text, const char *caller) {
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "%s() takes a str, not %.100s", caller, Py_TYPE(text)->tp_name);
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0)
        return 0;
#endif
    return 1;
}

static PyObject *WordSet_ids(WordSet *self, PyObject *text) {
    if (self->slots == NULL) {
        PyErr_SetString(PyExc_TypeError, "WordSet not initialized");
        return NULL;
    }
    if (!ready_str(text, "ids"))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    size_t words = (size_t)self->size / 64 + 1;
    char *buf = PyMem_RawMalloc((size_t)n + 1); /* the joined tokens are never longer than the text */
    uint64_t *seen = PyMem_RawCalloc(words, sizeof(uint64_t));
    PyObject *out = NULL;
    if (buf == NULL || seen == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    find(self, kind, data, n, buf, seen);
    Py_END_ALLOW_THREADS
    out = PySet_New(NULL);
    for (size_t w = 0; out != NULL && w < words; w++) {
        for (uint64_t bits = seen[w]; bits; bits &= bits - 1) {
            PyObject *id = PyLong_FromSize_t(w * 64 + (size_t)__builtin_ctzll(bits));
            if (id == NULL || PySet_Add(out, id) < 0)
                Py_CLEAR(out);
            Py_XDECREF(id);
            if (out == NULL)
                break;
        }
    }
done:
    PyMem_RawFree(buf);
    PyMem_RawFree(seen);
    return out;
}

static Py_ssize_t WordSet_len(WordSet *self) { return self->size; }

/* Each Latin-1 character's byte in the compact text: what a space in a lexicon pattern stands for
 * (evidence._TO_SPACE) a space, any other ASCII character itself, the rest "?" (as encode("ascii",
 * "replace") writes them). */
static char COMPACT[256];

static PyObject *compact(PyObject *Py_UNUSED(module), PyObject *text) {
    if (!ready_str(text, "compact"))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    Py_ssize_t k = 0;
    char last = 0;
    if (kind == PyUnicode_1BYTE_KIND) { /* most mail: one byte per character, read without a switch */
        const Py_UCS1 *in = data;
        for (Py_ssize_t i = 0; i < n; i++) {
            char b = COMPACT[in[i]];
            if (b == ' ' && last == ' ')
                continue; /* a run of separators is one space */
            o[k++] = last = b;
        }
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            char b = c < 256 ? COMPACT[c] : '?';
            if (b == ' ' && last == ' ')
                continue;
            o[k++] = last = b;
        }
    }
    if (k < n && _PyBytes_Resize(&out, k) < 0)
        return NULL;
    return out;
}

/* Appends v to list; 0, or -1 with the exception set. */
static int append_index(PyObject *list, Py_ssize_t v) {
    PyObject *o = PyLong_FromSsize_t(v);
    if (o == NULL)
        return -1;
    int r = PyList_Append(list, o);
    Py_DECREF(o);
    return r;
}

/* The offset maps of evidence.Compact (`separator_runs` there is the reference): each run of two or more
 * separators of `text` (the characters compact() makes a space): its start and end in text, its space in
 * the compact text, the characters removed up to and including it, and the compact offsets of the runs
 * that hold two line ends or more (a blank line). 0.03 ms on 10 KB in Python, 0.011 ms here, for every
 * text part with a topic or phrase hit. */
static PyObject *separator_runs(PyObject *Py_UNUSED(module), PyObject *text) {
    if (!ready_str(text, "separator_runs"))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *lists[5] = {PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0)};
    PyObject *out = NULL;
    for (int k = 0; k < 5; k++)
        if (lists[k] == NULL)
            goto done;
    Py_ssize_t removed = 0, i = 0;
#define IS_SEPARATOR(c) ((c) < 128 && COMPACT[c] == ' ')
    while (i < n) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (!IS_SEPARATOR(c)) {
            i++;
            continue;
        }
        Py_ssize_t j = i + 1, lines = c == '\n';
        for (; j < n; j++) {
            Py_UCS4 d = PyUnicode_READ(kind, data, j);
            if (!IS_SEPARATOR(d))
                break;
            lines += d == '\n';
        }
        if (j - i >= 2) {
            if (append_index(lists[0], i) < 0 || append_index(lists[1], j) < 0 || append_index(lists[2], i - removed) < 0
                || (lines >= 2 && append_index(lists[4], i - removed) < 0))
                goto done;
            removed += j - i - 1;
            if (append_index(lists[3], removed) < 0)
                goto done;
        }
        i = j;
    }
#undef IS_SEPARATOR
    out = PyTuple_Pack(5, lists[0], lists[1], lists[2], lists[3], lists[4]);
done:
    for (int k = 0; k < 5; k++)
        Py_XDECREF(lists[k]);
    return out;
}

/* 1: a character that ends a sentence, 2: one that may close it before the space (quotes, brackets). */
static unsigned char SENTENCE[256];

/* Where sentences end in a compact text: the spans of evidence._SENTENCE_END_RX's matches, "[.!?;]" then any
 * closing quotes or brackets then a space, found as its finditer finds them (leftmost, not overlapping). The
 * regular expression took 0.055-0.088 ms on 10 KB: it tries every position; this reads each byte once. */
static PyObject *sentence_ends(PyObject *Py_UNUSED(module), PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "sentence_ends() argument must be bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t i = 0;
    while (i < n) {
        if (!(SENTENCE[d[i]] & 1)) {
            i++;
            continue;
        }
        Py_ssize_t j = i + 1;
        while (j < n && (SENTENCE[d[j]] & 2))
            j++;
        if (j < n && d[j] == ' ') {
            PyObject *span = PyTuple_New(2);
            if (span != NULL) {
                PyTuple_SET_ITEM(span, 0, PyLong_FromSsize_t(i));
                PyTuple_SET_ITEM(span, 1, PyLong_FromSsize_t(j + 1));
                if (PyTuple_GET_ITEM(span, 0) == NULL || PyTuple_GET_ITEM(span, 1) == NULL)
                    Py_CLEAR(span);
            }
            if (span == NULL || PyList_Append(out, span) < 0) {
                Py_XDECREF(span);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(span);
            j++;
        }
        i = j; /* no match starts on a closing character: the next one to try is j */
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"compact", (PyCFunction)compact, METH_O,
     "compact(text) -> bytes: text as ASCII (others '?'), each run of separators one space (evidence.Compact)"},
    {"separator_runs", (PyCFunction)separator_runs, METH_O,
     "separator_runs(text) -> (starts, ends, at, removed, paragraphs): evidence.Compact's offset maps"},
    {"sentence_ends", (PyCFunction)sentence_ends, METH_O,
     "sentence_ends(data) -> list of (start, end): where sentences end in a compact text (evidence._Breaks)"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef WordSet_methods[] = {
    {"ids", (PyCFunction)WordSet_ids, METH_O,
     "ids(text) -> set of the indexes of the literals that occur in text as a word or a pair of neighbouring words"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods WordSet_as_sequence = {.sq_length = (lenfunc)WordSet_len};

static PyTypeObject WordSetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "regfd.scan._wordset.WordSet",
    .tp_basicsize = sizeof(WordSet),
    .tp_dealloc = (destructor)WordSet_dealloc,
    .tp_as_sequence = &WordSet_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "WordSet(literals): a vocabulary of words and word pairs, looked up token by token",
    .tp_methods = WordSet_methods,
    .tp_init = (initproc)WordSet_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "regfd.scan._wordset",
    "The scanner's passes in C: the message model's words; the compact text, its offset maps and sentence ends.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__wordset(void) {
    for (int c = 0; c < 128; c++)
        TOKEN[c] = (c >= 'a' && c <= 'z') || c == '\'' ? (unsigned char)c
                   : (c >= '0' && c <= '9')           ? (unsigned char)'0'
                   : (c >= 'A' && c <= 'Z')           ? (unsigned char)(c + 32)
                                                      : 0;
    for (int c = 0; c < 256; c++)
        COMPACT[c] = c < 128 ? (char)c : '?';
    for (const char *p = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f-/()[]:"; *p; p++)
        COMPACT[(unsigned char)*p] = ' ';
    for (const char *p = ".!?;"; *p; p++)
        SENTENCE[(unsigned char)*p] = 1;
    for (const char *p = "\"')]"; *p; p++)
        SENTENCE[(unsigned char)*p] = 2;
    if (PyType_Ready(&WordSetType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&WordSetType);
    if (PyModule_AddObject(m, "WordSet", (PyObject *)&WordSetType) < 0) {
        Py_DECREF(&WordSetType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
