/* Folding, keyword search and occurrence grouping in one pass, for the rules engine's hot path.
 *
 * What it replaces, and must agree with byte for byte: ``Classifier._scan`` in engine.py over the
 * text that ``normalize.fold_parts`` folds on its fast path (every character in Latin-1, after the
 * swap of ’ œ Œ). ``tests/test_classify_scan.py`` compares both on every kind of text.
 *
 * Why in C: in Python, the search (pyahocorasick) plus folding plus one dictionary update per hit
 * cost about 45,000 instructions for a 335-character item, a third of the whole classification.
 * Here each byte costs two table lookups (fold to an alphabet class, then one DFA transition) and
 * each hit a few C-API calls.
 *
 * The automaton: the keywords of engine.py (padded with spaces, lower-case folded) over the
 * alphabet of the folding table's outputs, as a dense DFA (Aho-Corasick with every transition
 * filled in). A state records the keyword that ends there, if any, and the next shorter state on
 * its failure chain that ends one (its "output link"), so that overlapping keywords ("ai act",
 * "act") all come out, longest first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    int32_t *delta;       /* nstates * nclasses transitions */
    int32_t *out_kw;      /* keyword ending at the state, or -1 */
    int32_t *out_link;    /* nearest state on the failure chain with a keyword, or 0 */
    int32_t *first_out;   /* the state itself if a keyword ends there, else its output link: one load per byte */
    int32_t nstates;
    int32_t nclasses;
    uint8_t raw_class[256]; /* original Latin-1 byte -> class of its folded form */
    uint8_t lower[256];     /* original byte -> folded lower-case byte */
    uint8_t cased[256];     /* original byte -> folded case-kept byte */
    int32_t space_class;
    Py_ssize_t nkeywords;
    Py_ssize_t *kw_len;
    PyObject **kw_plain;    /* tuple of term ids (ints) recorded with the keyword's span */
    PyObject **kw_special;  /* tuple of (term id, case-kept literal bytes or None, is prefix) */
} Scanner;

static void
Scanner_dealloc(Scanner *self)
{
    if (self->kw_plain != NULL) {
        for (Py_ssize_t i = 0; i < self->nkeywords; i++) {
            Py_XDECREF(self->kw_plain[i]);
            Py_XDECREF(self->kw_special[i]);
        }
    }
    PyMem_Free(self->delta);
    PyMem_Free(self->out_kw);
    PyMem_Free(self->out_link);
    PyMem_Free(self->first_out);
    PyMem_Free(self->kw_len);
    PyMem_Free(self->kw_plain);
    PyMem_Free(self->kw_special);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Scanner(lower_table: bytes, case_table: bytes, keywords: list[tuple[bytes, tuple, tuple]]) */
static int
Scanner_init(Scanner *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lower_table", "case_table", "keywords", NULL};
    Py_buffer lower, cased;
    PyObject *keywords;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*O!", kwlist, &lower, &cased, &PyList_Type, &keywords))
        return -1;
    int result = -1;
    int32_t *queue = NULL;
    if (self->delta != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner is already initialised");
        goto done;
    }
    if (lower.len != 256 || cased.len != 256) {
        PyErr_SetString(PyExc_ValueError, "folding tables must be 256 bytes long");
        goto done;
    }
    memcpy(self->lower, lower.buf, 256);
    memcpy(self->cased, cased.buf, 256);

    /* The alphabet: the folded bytes the lower table can produce. */
    int16_t class_of[256];
    for (int b = 0; b < 256; b++)
        class_of[b] = -1;
    int32_t nclasses = 0;
    for (int b = 0; b < 256; b++) {
        uint8_t folded = self->lower[b];
        if (class_of[folded] < 0)
            class_of[folded] = (int16_t)nclasses++;
    }
    if (class_of[' '] < 0) {
        PyErr_SetString(PyExc_ValueError, "the lower table never produces a space");
        goto done;
    }
    for (int b = 0; b < 256; b++)
        self->raw_class[b] = (uint8_t)class_of[self->lower[b]];
    self->nclasses = nclasses;
    self->space_class = class_of[' '];

    Py_ssize_t nkeywords = PyList_GET_SIZE(keywords);
    Py_ssize_t total = 1;
    for (Py_ssize_t i = 0; i < nkeywords; i++) {
        PyObject *entry = PyList_GET_ITEM(keywords, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(entry, 0))
            || !PyTuple_Check(PyTuple_GET_ITEM(entry, 1)) || !PyTuple_Check(PyTuple_GET_ITEM(entry, 2))) {
            PyErr_Format(PyExc_TypeError, "keyword %zd: expected (bytes, tuple, tuple)", i);
            goto done;
        }
        total += PyBytes_GET_SIZE(PyTuple_GET_ITEM(entry, 0));
    }
    if (total > INT32_MAX / (nclasses + 1)) {
        PyErr_SetString(PyExc_ValueError, "too many keywords");
        goto done;
    }
    self->delta = PyMem_Malloc(sizeof(int32_t) * (size_t)total * (size_t)nclasses);
    self->out_kw = PyMem_Malloc(sizeof(int32_t) * (size_t)total);
    self->out_link = PyMem_Malloc(sizeof(int32_t) * (size_t)total);
    self->kw_len = PyMem_Calloc((size_t)nkeywords + 1, sizeof(Py_ssize_t));
    self->kw_plain = PyMem_Calloc((size_t)nkeywords + 1, sizeof(PyObject *));
    self->kw_special = PyMem_Calloc((size_t)nkeywords + 1, sizeof(PyObject *));
    queue = PyMem_Malloc(sizeof(int32_t) * (size_t)total);
    if (!self->delta || !self->out_kw || !self->out_link || !self->kw_len || !self->kw_plain || !self->kw_special
        || !queue) {
        PyErr_NoMemory();
        goto done;
    }
    self->nkeywords = nkeywords;
    for (Py_ssize_t s = 0; s < total * nclasses; s++)
        self->delta[s] = -1;
    self->out_kw[0] = -1;
    self->out_link[0] = 0;
    int32_t nstates = 1;

    /* The trie. */
    for (Py_ssize_t i = 0; i < nkeywords; i++) {
        PyObject *entry = PyList_GET_ITEM(keywords, i);
        PyObject *word = PyTuple_GET_ITEM(entry, 0);
        const uint8_t *bytes = (const uint8_t *)PyBytes_AS_STRING(word);
        Py_ssize_t length = PyBytes_GET_SIZE(word);
        self->kw_len[i] = length;
        self->kw_plain[i] = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
        self->kw_special[i] = Py_NewRef(PyTuple_GET_ITEM(entry, 2));
        int searchable = length > 0;
        for (Py_ssize_t j = 0; j < length; j++)
            if (class_of[bytes[j]] < 0)
                searchable = 0; /* a byte folding never produces: the keyword cannot occur */
        if (!searchable)
            continue;
        int32_t state = 0;
        for (Py_ssize_t j = 0; j < length; j++) {
            int32_t *next = &self->delta[(size_t)state * nclasses + class_of[bytes[j]]];
            if (*next < 0) {
                self->out_kw[nstates] = -1;
                self->out_link[nstates] = 0;
                *next = nstates++;
            }
            state = *next;
        }
        if (self->out_kw[state] >= 0) {
            PyErr_Format(PyExc_ValueError, "keyword %zd repeats keyword %d", i, self->out_kw[state]);
            goto done;
        }
        self->out_kw[state] = (int32_t)i;
    }
    self->nstates = nstates;

    /* Failure links breadth first, completing every transition (a DFA). */
    int32_t head = 0, tail = 0;
    int32_t *fails = PyMem_Malloc(sizeof(int32_t) * (size_t)nstates);
    if (fails == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    fails[0] = 0;
    for (int32_t c = 0; c < nclasses; c++) {
        int32_t child = self->delta[c];
        if (child < 0) {
            self->delta[c] = 0;
        }
        else {
            fails[child] = 0;
            self->out_link[child] = 0;
            queue[tail++] = child;
        }
    }
    while (head < tail) {
        int32_t state = queue[head++];
        for (int32_t c = 0; c < nclasses; c++) {
            int32_t *slot = &self->delta[(size_t)state * nclasses + c];
            int32_t via_fail = self->delta[(size_t)fails[state] * nclasses + c];
            if (*slot < 0) {
                *slot = via_fail;
            }
            else {
                int32_t child = *slot;
                fails[child] = via_fail;
                self->out_link[child] = self->out_kw[via_fail] >= 0 ? via_fail : self->out_link[via_fail];
                queue[tail++] = child;
            }
        }
    }
    PyMem_Free(fails);
    self->first_out = PyMem_Malloc(sizeof(int32_t) * (size_t)nstates);
    if (self->first_out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (int32_t state = 0; state < nstates; state++)
        self->first_out[state] = self->out_kw[state] >= 0 ? state : self->out_link[state];
    result = 0;
done:
    PyMem_Free(queue);
    PyBuffer_Release(&lower);
    PyBuffer_Release(&cased);
    return result;
}

/* Append span to occurrences[tid] (a new list when the term has none yet). */
static int
record(PyObject *occurrences, PyObject *tid, PyObject *span)
{
    PyObject *spans = PyDict_GetItemWithError(occurrences, tid); /* borrowed */
    if (spans != NULL)
        return PyList_Append(spans, span);
    if (PyErr_Occurred())
        return -1;
    spans = PyList_New(1);
    if (spans == NULL)
        return -1;
    PyList_SET_ITEM(spans, 0, Py_NewRef(span));
    int status = PyDict_SetItem(occurrences, tid, spans);
    Py_DECREF(spans);
    return status;
}

static PyObject *
make_span(Py_ssize_t start, Py_ssize_t end)
{
    PyObject *first = PyLong_FromSsize_t(start);
    if (first == NULL)
        return NULL;
    PyObject *second = PyLong_FromSsize_t(end);
    if (second == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    PyObject *span = PyTuple_New(2);
    if (span == NULL) {
        Py_DECREF(first);
        Py_DECREF(second);
        return NULL;
    }
    PyTuple_SET_ITEM(span, 0, first);
    PyTuple_SET_ITEM(span, 1, second);
    return span;
}

/* One keyword hit ending at padded index `end`: record its terms in `occurrences`. */
static int
report(Scanner *self, const uint8_t *text, Py_ssize_t n, int32_t keyword, Py_ssize_t end, PyObject *occurrences)
{
    /* padded index i is folded index i - 1: the keyword's leading space is where the word starts */
    Py_ssize_t start = end - self->kw_len[keyword] + 1;
    PyObject *plain = self->kw_plain[keyword];
    Py_ssize_t nplain = PyTuple_GET_SIZE(plain);
    if (nplain > 0) {
        PyObject *span = make_span(start, end - 1);
        if (span == NULL)
            return -1;
        for (Py_ssize_t i = 0; i < nplain; i++) {
            if (record(occurrences, PyTuple_GET_ITEM(plain, i), span) < 0) {
                Py_DECREF(span);
                return -1;
            }
        }
        Py_DECREF(span);
    }
    PyObject *special = self->kw_special[keyword];
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(special); i++) {
        PyObject *entry = PyTuple_GET_ITEM(special, i);
        PyObject *tid = PyTuple_GET_ITEM(entry, 0);
        PyObject *literal = PyTuple_GET_ITEM(entry, 1);
        int prefix = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 2));
        if (prefix < 0)
            return -1;
        if (literal != Py_None) { /* case-sensitive: the case-kept fold must start with it here */
            const uint8_t *want = (const uint8_t *)PyBytes_AS_STRING(literal);
            Py_ssize_t length = PyBytes_GET_SIZE(literal);
            if (start + length > n)
                continue;
            Py_ssize_t j = 0;
            while (j < length && self->cased[text[start + j]] == want[j])
                j++;
            if (j < length)
                continue;
        }
        Py_ssize_t span_end = end - 1;
        if (prefix) { /* to the end of the word: the next space of the padded text, as a folded index */
            Py_ssize_t q = end + 1;
            while (q <= n && self->lower[text[q - 1]] != ' ')
                q++;
            span_end = q - 1;
        }
        PyObject *span = make_span(start, span_end);
        if (span == NULL)
            return -1;
        int status = record(occurrences, tid, span);
        Py_DECREF(span);
        if (status < 0)
            return -1;
    }
    return 0;
}

/* scan(encoded, second, third) -> (title, summary, content) occurrences: {term id: [(start, end)]}.
 *
 * `encoded` is the Latin-1 text of the joined fields (ligatures swapped); `second` and `third` are
 * the folded offsets where the summary and the content start. Spans are folded offsets, which on
 * this path are the original's. */
static PyObject *
Scanner_scan(Scanner *self, PyObject *args)
{
    Py_buffer buffer;
    Py_ssize_t second, third;
    if (self->delta == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*nn", &buffer, &second, &third))
        return NULL;
    const uint8_t *text = (const uint8_t *)buffer.buf;
    Py_ssize_t n = buffer.len;
    PyObject *result = NULL;
    PyObject *fields[3] = {PyDict_New(), PyDict_New(), PyDict_New()};
    if (!fields[0] || !fields[1] || !fields[2])
        goto done;
    const int32_t *delta = self->delta;
    const int32_t *out_kw = self->out_kw;
    const int32_t *out_link = self->out_link;
    const int32_t *first_out = self->first_out;
    const uint8_t *raw_class = self->raw_class;
    const int32_t nclasses = self->nclasses;
    int field = 0;
    Py_ssize_t limit = second;
    /* The padded text is " " + folded + " ": feed the leading space, then each byte, then the last. */
    int32_t state = delta[self->space_class];
    for (Py_ssize_t end = 1; end <= n + 1; end++) {
        int32_t cls = end <= n ? raw_class[text[end - 1]] : self->space_class;
        state = delta[(size_t)state * nclasses + cls];
        for (int32_t hit = first_out[state]; hit > 0; hit = out_link[hit]) {
            /* Hits come out by end offset, so the field only moves forward. */
            if (end >= limit && field < 2) {
                if (end < third) {
                    field = 1;
                    limit = third;
                }
                else {
                    field = 2;
                    limit = PY_SSIZE_T_MAX;
                }
            }
            if (report(self, text, n, out_kw[hit], end, fields[field]) < 0)
                goto done;
        }
    }
    result = PyTuple_Pack(3, fields[0], fields[1], fields[2]);
done:
    Py_XDECREF(fields[0]);
    Py_XDECREF(fields[1]);
    Py_XDECREF(fields[2]);
    PyBuffer_Release(&buffer);
    return result;
}

static PyObject *
Scanner_states(Scanner *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->nstates);
}

/* Interned attribute names of pipeline.models.Match, in field order. */
static PyObject *match_keys[7];

/* build_matches(found, texts, topic_ids, field_names, match_type) -> tuple of Match.
 *
 * `found` is the engine's sorted list of (field index, start, end, topic index, rule name, weight).
 * Each Match is made as engine._match makes it: a new instance whose __dict__ is filled at once
 * (engine.py only calls this when Match is a plain dataclass, see _fills_fields there). */
static PyObject *
build_matches(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *found, *texts, *topic_ids, *field_names;
    PyTypeObject *match_type;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!", &PyList_Type, &found, &PyTuple_Type, &texts, &PyTuple_Type, &topic_ids,
                          &PyTuple_Type, &field_names, &PyType_Type, &match_type))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(found);
    PyObject *matches = PyTuple_New(count);
    if (matches == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *entry = PyList_GET_ITEM(found, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 6) {
            PyErr_SetString(PyExc_TypeError, "build_matches: entries must be 6-tuples");
            goto fail;
        }
        Py_ssize_t field = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0));
        Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
        Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        Py_ssize_t topic = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
        if (PyErr_Occurred())
            goto fail;
        if (field < 0 || field >= PyTuple_GET_SIZE(texts) || field >= PyTuple_GET_SIZE(field_names) || topic < 0
            || topic >= PyTuple_GET_SIZE(topic_ids)) {
            PyErr_SetString(PyExc_IndexError, "build_matches: field or topic index out of range");
            goto fail;
        }
        PyObject *text = PyTuple_GET_ITEM(texts, field);
        if (!PyUnicode_Check(text) || start < 0 || end < start || end > PyUnicode_GET_LENGTH(text)) {
            PyErr_SetString(PyExc_IndexError, "build_matches: span outside its field");
            goto fail;
        }
        PyObject *values[7];
        values[0] = Py_NewRef(PyTuple_GET_ITEM(topic_ids, topic));
        values[1] = Py_NewRef(PyTuple_GET_ITEM(entry, 4));
        values[2] = Py_NewRef(PyTuple_GET_ITEM(field_names, field));
        values[3] = PyUnicode_Substring(text, start, end);
        values[4] = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
        values[5] = Py_NewRef(PyTuple_GET_ITEM(entry, 2));
        values[6] = Py_NewRef(PyTuple_GET_ITEM(entry, 5));
        PyObject *attributes = values[3] != NULL ? PyDict_New() : NULL;
        int status = attributes != NULL ? 0 : -1;
        for (int k = 0; k < 7 && status == 0; k++)
            status = PyDict_SetItem(attributes, match_keys[k], values[k]);
        for (int k = 0; k < 7; k++)
            Py_XDECREF(values[k]);
        PyObject *match = status == 0 ? match_type->tp_alloc(match_type, 0) : NULL;
        if (match != NULL && PyObject_GenericSetDict(match, attributes, NULL) < 0)
            Py_CLEAR(match);
        Py_XDECREF(attributes);
        if (match == NULL)
            goto fail;
        PyTuple_SET_ITEM(matches, i, match);
    }
    return matches;
fail:
    Py_DECREF(matches);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"build_matches", build_matches, METH_VARARGS,
     "build_matches(found, texts, topic_ids, field_names, match_type) -> tuple of Match (see engine._result)"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)Scanner_scan, METH_VARARGS,
     "scan(encoded, second, third) -> occurrences of every term by field: ({term id: [(start, end)]}, ...)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scanner_getset[] = {
    {"states", (getter)Scanner_states, NULL, "number of automaton states", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline.classify._scan.Scanner",
    .tp_doc = "Fold, search and group keyword hits of a Latin-1 text (see engine.py).",
    .tp_basicsize = sizeof(Scanner),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipeline.classify._scan",
    .m_doc = "C accelerator of the rules engine's keyword scan (optional: engine.py has the same in Python).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    static const char *names[7] = {"topic", "rule", "field", "text", "start", "end", "weight"};
    for (int k = 0; k < 7; k++) {
        if (match_keys[k] == NULL && (match_keys[k] = PyUnicode_InternFromString(names[k])) == NULL)
            return NULL;
    }
    PyObject *module = PyModule_Create(&scan_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
