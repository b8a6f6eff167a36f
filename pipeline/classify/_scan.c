/* The rules engine's hot path in C: an optional accelerator of pipeline/classify/engine.py.
 *
 * What it mirrors, and must agree with on every result (tests/test_classify_accelerator.py
 * compares both engines): for a text that normalize.fast_bytes() can fold byte for byte (every
 * character in Latin-1 after the swap of ’ œ Œ),
 *   - Scanner.scan: normalize.fold_parts + Classifier._scan (fold, search, hits grouped by field
 *     and term);
 *   - run_plan, cancel, evaluate: the plan loop of Classifier._classify, _cancel, _evaluate,
 *     _near_pairs and _words_between;
 *   - build_matches and Scanner.classify: _result and a whole fast-path item.
 * engine.py keeps the Python versions as the reference and the fallback when this file is not
 * compiled (no C compiler, or TECH_MATIN_PURE_PYTHON=1 at install time).
 *
 * Why: in Python a 335-character item cost about 120,000 instructions (valgrind), 45,000 of
 * them folding, searching and one dictionary update per hit, the rest interpreting the plan and
 * building the explanation objects. Here the same item costs about 50,000, most of them
 * allocating the Python objects that the result is made of.
 *
 * The automaton: Aho-Corasick over the keywords of engine.py (padded with spaces, lower-case
 * folded), on the alphabet of the folding table's outputs (47 classes), as a full DFA. A state
 * records the keyword that ends there, if any, and the next shorter state on its failure chain
 * that ends one (its "output link"), so that overlapping keywords ("ai act", "act") all come
 * out, longest first. (A sparse trie with failure links, 8 times smaller, was tried: it was
 * slower on the benchmark.)
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
    int ready;              /* set once __init__ has built everything: scan() refuses to run before */
    uint8_t raw_class[256]; /* original Latin-1 byte -> class of its folded form */
    uint8_t lower[256];     /* original byte -> folded lower-case byte */
    uint8_t cased[256];     /* original byte -> folded case-kept byte */
    int32_t space_class;
    Py_ssize_t nkeywords;
    Py_ssize_t *kw_len;
    PyObject **kw_plain;    /* tuple of term ids (ints) recorded with the keyword's span */
    PyObject **kw_special;  /* tuple of (term id, case-kept literal bytes or None, is prefix) */
    /* What classify() needs of the classifier (see bind()); NULL until bound. */
    PyObject *plans;          /* dict: (field index, language, frozenset of term ids) -> plan */
    PyObject *topic_ids;      /* tuple of str */
    PyObject *thresholds;     /* tuple of numbers */
    PyObject *field_names;    /* tuple of 3 str */
    PyObject *match_type;
    PyObject *classification_type;
    PyObject *lower_table;    /* bytes: the folding table, for run_plan's lazy fold */
    PyObject *round_function; /* builtins.round */
    Py_ssize_t separator_length; /* len(engine._FIELD_SEPARATOR), between the joined fields */
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
    Py_XDECREF(self->plans);
    Py_XDECREF(self->topic_ids);
    Py_XDECREF(self->thresholds);
    Py_XDECREF(self->field_names);
    Py_XDECREF(self->match_type);
    Py_XDECREF(self->classification_type);
    Py_XDECREF(self->lower_table);
    Py_XDECREF(self->round_function);
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
    self->ready = 1;
    result = 0;
done:
    PyMem_Free(queue);
    PyBuffer_Release(&lower);
    PyBuffer_Release(&cased);
    return result;
}

/* Argument checks for METH_FASTCALL functions (PyArg_ParseTuple costs more than the work of a call). */
static int
arg_count(const char *function, Py_ssize_t given, Py_ssize_t wanted)
{
    if (given == wanted)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", function, wanted, given);
    return -1;
}

static int
arg_type(const char *function, int position, PyObject *value, PyTypeObject *type)
{
    if (PyObject_TypeCheck(value, type))
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() argument %d must be %s, not %s", function, position, type->tp_name,
                 Py_TYPE(value)->tp_name);
    return -1;
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

static int scan_impl(Scanner *self, PyObject *encoded, Py_ssize_t second, Py_ssize_t third, PyObject **fields);

/* scan(encoded, second, third) -> (title, summary, content) occurrences: {term id: [(start, end)]}.
 *
 * `encoded` is the Latin-1 text of the joined fields (ligatures swapped); `second` and `third` are
 * the folded offsets where the summary and the content start. Spans are folded offsets, which on
 * this path are the original's. */
static PyObject *
Scanner_scan(Scanner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner is not initialised");
        return NULL;
    }
    if (arg_count("scan", nargs, 3) < 0 || arg_type("scan", 1, args[0], &PyBytes_Type) < 0)
        return NULL;
    Py_ssize_t second = PyLong_AsSsize_t(args[1]);
    Py_ssize_t third = PyLong_AsSsize_t(args[2]);
    if ((second == -1 || third == -1) && PyErr_Occurred())
        return NULL;
    PyObject *fields[3];
    if (scan_impl(self, args[0], second, third, fields) < 0)
        return NULL;
    PyObject *result = PyTuple_Pack(3, fields[0], fields[1], fields[2]);
    Py_DECREF(fields[0]);
    Py_DECREF(fields[1]);
    Py_DECREF(fields[2]);
    return result;
}

/* The scan proper: fields[0..2] receive new dicts, or the function fails with -1 and none. */
static int
scan_impl(Scanner *self, PyObject *encoded, Py_ssize_t second, Py_ssize_t third, PyObject **fields)
{
    const uint8_t *text = (const uint8_t *)PyBytes_AS_STRING(encoded);
    Py_ssize_t n = PyBytes_GET_SIZE(encoded);
    fields[0] = PyDict_New();
    fields[1] = PyDict_New();
    fields[2] = PyDict_New();
    if (!fields[0] || !fields[1] || !fields[2])
        goto fail;
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
                goto fail;
        }
    }
    return 0;
fail:
    Py_CLEAR(fields[0]);
    Py_CLEAR(fields[1]);
    Py_CLEAR(fields[2]);
    return -1;
}

static PyObject *
Scanner_states(Scanner *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->nstates);
}

/* Interned attribute names of pipeline.models.Match, in field order, and a dict of them (values None). */
static PyObject *match_keys[7];
static PyObject *match_template;

/* build_matches(found, texts, topic_ids, field_names, match_type) -> tuple of Match.
 *
 * `found` is the engine's sorted list of (field index, start, end, topic index, rule name, weight).
 * Each Match is made as engine._match makes it: a new instance whose __dict__ is filled at once
 * (engine.py only calls this when Match is a plain dataclass, see _fills_fields there). */
static PyObject *build_matches_impl(PyObject *found, PyObject *texts, PyObject *topic_ids, PyObject *field_names,
                                    PyTypeObject *match_type);

static PyObject *
build_matches(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (arg_count("build_matches", nargs, 5) < 0 || arg_type("build_matches", 1, args[0], &PyList_Type) < 0
        || arg_type("build_matches", 2, args[1], &PyTuple_Type) < 0
        || arg_type("build_matches", 3, args[2], &PyTuple_Type) < 0
        || arg_type("build_matches", 4, args[3], &PyTuple_Type) < 0
        || arg_type("build_matches", 5, args[4], &PyType_Type) < 0)
        return NULL;
    return build_matches_impl(args[0], args[1], args[2], args[3], (PyTypeObject *)args[4]);
}

static PyObject *
build_matches_impl(PyObject *found, PyObject *texts, PyObject *topic_ids, PyObject *field_names,
                   PyTypeObject *match_type)
{
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
        /* A copy of a dict with the same keys: replacing values never resizes it. */
        PyObject *attributes = values[3] != NULL ? PyDict_Copy(match_template) : NULL;
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

/* ---------------------------------------------------------------- positional rules
 *
 * cancel() and evaluate() are engine._cancel and engine._evaluate (with _spans_of, _near_pairs and
 * _words_between), line for line: same results, same list orders. Nodes are the engine's compiled
 * tuples: ("set", ids) ("any", parts) ("all", parts) ("not", part) ("near", left, right, within,
 * ordered); occurrences are {term id: [(start, end), ...]}; text is the folded text, whose only
 * separator is the space. */

static PyObject *zero_score; /* 0.0, what scores.get(topic, 0.0) starts from */
static PyObject *elisions; /* frozenset of elided particles (normalize.ELISIONS), set by configure() */
static Py_ssize_t longest_elision;

static PyObject *
configure(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyFrozenSet_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "configure() expects the frozenset of elisions");
        return NULL;
    }
    Py_ssize_t longest = 0;
    PyObject *iterator = PyObject_GetIter(arg);
    if (iterator == NULL)
        return NULL;
    PyObject *word;
    while ((word = PyIter_Next(iterator)) != NULL) {
        int is_text = PyUnicode_Check(word);
        if (is_text && PyUnicode_GET_LENGTH(word) > longest)
            longest = PyUnicode_GET_LENGTH(word);
        Py_DECREF(word);
        if (!is_text) {
            Py_DECREF(iterator);
            PyErr_SetString(PyExc_TypeError, "elisions must be strings");
            return NULL;
        }
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    Py_XSETREF(elisions, Py_NewRef(arg));
    longest_elision = longest;
    Py_RETURN_NONE;
}

/* list.extend(items) with the public API. */
static int
extend(PyObject *list, PyObject *items)
{
    Py_ssize_t size = PyList_GET_SIZE(list);
    return PyList_SetSlice(list, size, size, items);
}

enum node_kind { NODE_SET, NODE_ANY, NODE_ALL, NODE_NOT, NODE_NEAR, NODE_UNKNOWN };
static const char *node_kind_names[5] = {"set", "any", "all", "not", "near"};
static PyObject *node_kind_interned[5];

/* The kind of a compiled node. engine.py's kind names are interned string constants, so a pointer
 * comparison settles it; a string comparison is the fallback (a node built some other way). */
static enum node_kind
kind_of(PyObject *node)
{
    PyObject *name = PyTuple_GET_ITEM(node, 0);
    for (int k = 0; k < 5; k++)
        if (name == node_kind_interned[k])
            return (enum node_kind)k;
    if (PyUnicode_Check(name))
        for (int k = 0; k < 5; k++)
            if (PyUnicode_CompareWithASCIIString(name, node_kind_names[k]) == 0)
                return (enum node_kind)k;
    return NODE_UNKNOWN;
}

/* _spans_of: the occurrences of the terms `ids`, in the order of `occ`. New reference. */
static PyObject *
spans_of(PyObject *ids, PyObject *occ)
{
    PyObject *spans = PyList_New(0);
    if (spans == NULL)
        return NULL;
    Py_ssize_t position = 0;
    PyObject *tid, *found;
    while (PyDict_Next(occ, &position, &tid, &found)) {
        int present = PySet_Contains(ids, tid);
        if (present < 0)
            goto fail;
        if (present && extend(spans, found) < 0)
            goto fail;
    }
    return spans;
fail:
    Py_DECREF(spans);
    return NULL;
}

/* _words_between(text, start, end) <= within, stopping as soon as the count is over. -1 on error. */
static int
at_most_words_between(PyObject *text, Py_ssize_t start, Py_ssize_t end, Py_ssize_t within)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    if (end > length)
        end = length;
    Py_ssize_t counted = 0, i = start;
    while (i < end) {
        while (i < end && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i)))
            i++;
        if (i >= end)
            break;
        Py_ssize_t word_start = i;
        while (i < end && !Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i)))
            i++;
        int elided = 0;
        if (elisions != NULL && i - word_start <= longest_elision) {
            PyObject *word = PyUnicode_Substring(text, word_start, i);
            if (word == NULL)
                return -1;
            elided = PySet_Contains(elisions, word);
            Py_DECREF(word);
            if (elided < 0)
                return -1;
        }
        if (!elided && ++counted > within)
            return 0;
    }
    return 1;
}

static int
span_bounds(PyObject *span, Py_ssize_t *start, Py_ssize_t *end)
{
    if (!PyTuple_Check(span) || PyTuple_GET_SIZE(span) != 2) {
        PyErr_SetString(PyExc_TypeError, "a span must be a (start, end) tuple");
        return -1;
    }
    *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 0));
    *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 1));
    return PyErr_Occurred() ? -1 : 0;
}

/* _near_pairs: list of (left span, right span). New reference. */
static PyObject *
near_pairs(PyObject *node, PyObject *occ, PyObject *text)
{
    if (PyTuple_GET_SIZE(node) != 5) {
        PyErr_SetString(PyExc_ValueError, "a near node has 5 parts");
        return NULL;
    }
    Py_ssize_t within = PyLong_AsSsize_t(PyTuple_GET_ITEM(node, 3));
    int ordered = PyObject_IsTrue(PyTuple_GET_ITEM(node, 4));
    if ((within == -1 && PyErr_Occurred()) || ordered < 0)
        return NULL;
    PyObject *pairs = PyList_New(0);
    PyObject *lefts = spans_of(PyTuple_GET_ITEM(node, 1), occ);
    PyObject *rights = NULL;
    if (pairs == NULL || lefts == NULL)
        goto fail;
    if (PyList_GET_SIZE(lefts) == 0)
        goto done;
    rights = spans_of(PyTuple_GET_ITEM(node, 2), occ);
    if (rights == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lefts); i++) {
        PyObject *left = PyList_GET_ITEM(lefts, i);
        Py_ssize_t left_start, left_end;
        if (span_bounds(left, &left_start, &left_end) < 0)
            goto fail;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(rights); j++) {
            PyObject *right = PyList_GET_ITEM(rights, j);
            Py_ssize_t right_start, right_end;
            if (span_bounds(right, &right_start, &right_end) < 0)
                goto fail;
            if (left_start < right_end && right_start < left_end)
                continue; /* the same words cannot be both sides */
            if (ordered && right_start < left_end)
                continue;
            int close = left_start < right_start ? at_most_words_between(text, left_end, right_start, within)
                                                 : at_most_words_between(text, right_end, left_start, within);
            if (close < 0)
                goto fail;
            if (close) {
                PyObject *pair = PyTuple_Pack(2, left, right);
                if (pair == NULL || PyList_Append(pairs, pair) < 0) {
                    Py_XDECREF(pair);
                    goto fail;
                }
                Py_DECREF(pair);
            }
        }
    }
done:
    Py_DECREF(lefts);
    Py_XDECREF(rights);
    return pairs;
fail:
    Py_XDECREF(pairs);
    Py_XDECREF(lefts);
    Py_XDECREF(rights);
    return NULL;
}

/* _evaluate: the spans that make `node` true, or None (new references). */
static PyObject *
evaluate_node(PyObject *node, PyObject *occ, PyObject *text)
{
    if (!PyTuple_Check(node) || PyTuple_GET_SIZE(node) < 2) {
        PyErr_SetString(PyExc_TypeError, "not a compiled rule node");
        return NULL;
    }
    enum node_kind kind = kind_of(node);
    if (kind == NODE_SET) {
        PyObject *spans = spans_of(PyTuple_GET_ITEM(node, 1), occ);
        if (spans != NULL && PyList_GET_SIZE(spans) == 0) {
            Py_DECREF(spans);
            Py_RETURN_NONE;
        }
        return spans;
    }
    if (kind == NODE_ANY || kind == NODE_ALL) {
        int every = kind == NODE_ALL;
        PyObject *parts = PyTuple_GET_ITEM(node, 1);
        if (!PyTuple_Check(parts)) {
            PyErr_SetString(PyExc_TypeError, "the parts of a node must be a tuple");
            return NULL;
        }
        PyObject *out = every ? PyList_New(0) : Py_NewRef(Py_None);
        if (out == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(parts); i++) {
            PyObject *spans = evaluate_node(PyTuple_GET_ITEM(parts, i), occ, text);
            if (spans == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            if (spans == Py_None) {
                Py_DECREF(spans);
                if (every) {
                    Py_DECREF(out);
                    Py_RETURN_NONE;
                }
                continue;
            }
            if (out == Py_None) {
                Py_SETREF(out, spans);
                continue;
            }
            if (!every) { /* out + spans: a new list (out may be a part's own list) */
                PyObject *joined = PySequence_Concat(out, spans);
                Py_DECREF(spans);
                Py_SETREF(out, joined);
                if (out == NULL)
                    return NULL;
                continue;
            }
            int status = extend(out, spans);
            Py_DECREF(spans);
            if (status < 0) {
                Py_DECREF(out);
                return NULL;
            }
        }
        return out;
    }
    if (kind == NODE_NOT) {
        PyObject *spans = evaluate_node(PyTuple_GET_ITEM(node, 1), occ, text);
        if (spans == NULL)
            return NULL;
        int held = spans != Py_None;
        Py_DECREF(spans);
        if (held)
            Py_RETURN_NONE;
        return PyList_New(0);
    }
    if (kind == NODE_NEAR) {
        PyObject *pairs = near_pairs(node, occ, text);
        if (pairs == NULL)
            return NULL;
        Py_ssize_t count = PyList_GET_SIZE(pairs);
        if (count == 0) {
            Py_DECREF(pairs);
            Py_RETURN_NONE;
        }
        PyObject *spans = PyList_New(2 * count);
        if (spans != NULL) {
            for (Py_ssize_t i = 0; i < count; i++) {
                PyObject *pair = PyList_GET_ITEM(pairs, i);
                PyList_SET_ITEM(spans, 2 * i, Py_NewRef(PyTuple_GET_ITEM(pair, 0)));
                PyList_SET_ITEM(spans, 2 * i + 1, Py_NewRef(PyTuple_GET_ITEM(pair, 1)));
            }
        }
        Py_DECREF(pairs);
        return spans;
    }
    PyErr_SetString(PyExc_ValueError, "unknown rule node kind");
    return NULL;
}

static PyObject *
evaluate(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (arg_count("evaluate", nargs, 3) < 0 || arg_type("evaluate", 1, args[0], &PyTuple_Type) < 0
        || arg_type("evaluate", 2, args[1], &PyDict_Type) < 0 || arg_type("evaluate", 3, args[2], &PyUnicode_Type) < 0)
        return NULL;
    return evaluate_node(args[0], args[1], args[2]);
}

/* _cancel: `occ` without the occurrences that overlap an `unless` context (the same dict when none does). */
static PyObject *
cancel_contexts(PyObject *contexts, PyObject *occ, PyObject *text)
{
    if (!PyTuple_Check(contexts) || !PyDict_Check(occ)) {
        PyErr_SetString(PyExc_TypeError, "cancel: expected a tuple of contexts and a dict of occurrences");
        return NULL;
    }
    PyObject *spans = PyList_New(0);
    PyObject *kept = NULL;
    if (spans == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(contexts); i++) {
        PyObject *node = PyTuple_GET_ITEM(contexts, i);
        if (!PyTuple_Check(node) || PyTuple_GET_SIZE(node) < 2) {
            PyErr_SetString(PyExc_TypeError, "not a compiled context");
            goto fail;
        }
        if (kind_of(node) == NODE_SET) {
            PyObject *found = spans_of(PyTuple_GET_ITEM(node, 1), occ);
            int status = found != NULL ? extend(spans, found) : -1;
            Py_XDECREF(found);
            if (status < 0)
                goto fail;
            continue;
        }
        if (PyTuple_GET_SIZE(node) != 5) {
            PyErr_SetString(PyExc_ValueError, "a near context has 5 parts");
            goto fail;
        }
        /* both sides of the `near` present: not node[1].isdisjoint(occ) and not node[2].isdisjoint(occ) */
        int sides = 0;
        for (int side = 1; side <= 2; side++) {
            Py_ssize_t position = 0;
            PyObject *tid, *found;
            while (PyDict_Next(occ, &position, &tid, &found)) {
                int present = PySet_Contains(PyTuple_GET_ITEM(node, side), tid);
                if (present < 0)
                    goto fail;
                if (present) {
                    sides++;
                    break;
                }
            }
        }
        if (sides < 2)
            continue;
        PyObject *pairs = near_pairs(node, occ, text);
        if (pairs == NULL)
            goto fail;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(pairs); j++) {
            PyObject *pair = PyList_GET_ITEM(pairs, j);
            Py_ssize_t a_start, a_end, b_start, b_end;
            if (span_bounds(PyTuple_GET_ITEM(pair, 0), &a_start, &a_end) < 0
                || span_bounds(PyTuple_GET_ITEM(pair, 1), &b_start, &b_end) < 0) {
                Py_DECREF(pairs);
                goto fail;
            }
            PyObject *span = make_span(a_start < b_start ? a_start : b_start, a_end > b_end ? a_end : b_end);
            if (span == NULL || PyList_Append(spans, span) < 0) {
                Py_XDECREF(span);
                Py_DECREF(pairs);
                goto fail;
            }
            Py_DECREF(span);
        }
        Py_DECREF(pairs);
    }
    if (PyList_GET_SIZE(spans) == 0) {
        Py_DECREF(spans);
        return Py_NewRef(occ);
    }
    Py_ssize_t ncontexts = PyList_GET_SIZE(spans);
    Py_ssize_t *bounds = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (size_t)ncontexts);
    if (bounds == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t c = 0; c < ncontexts; c++) {
        if (span_bounds(PyList_GET_ITEM(spans, c), &bounds[2 * c], &bounds[2 * c + 1]) < 0) {
            PyMem_Free(bounds);
            goto fail;
        }
    }
    kept = PyDict_New();
    Py_ssize_t position = 0;
    PyObject *tid, *found;
    while (kept != NULL && PyDict_Next(occ, &position, &tid, &found)) {
        PyObject *left = PyList_New(0);
        if (left == NULL) {
            Py_CLEAR(kept);
            break;
        }
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(found); k++) {
            PyObject *span = PyList_GET_ITEM(found, k);
            Py_ssize_t start, end;
            if (span_bounds(span, &start, &end) < 0) {
                Py_CLEAR(kept);
                break;
            }
            int overlaps = 0;
            for (Py_ssize_t c = 0; c < ncontexts && !overlaps; c++)
                overlaps = start < bounds[2 * c + 1] && bounds[2 * c] < end;
            if (!overlaps && PyList_Append(left, span) < 0) {
                Py_CLEAR(kept);
                break;
            }
        }
        if (kept != NULL && PyList_GET_SIZE(left) > 0 && PyDict_SetItem(kept, tid, left) < 0)
            Py_CLEAR(kept);
        Py_DECREF(left);
    }
    PyMem_Free(bounds);
    Py_DECREF(spans);
    return kept;
fail:
    Py_DECREF(spans);
    return NULL;
}

static PyObject *
cancel(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (arg_count("cancel", nargs, 3) < 0 || arg_type("cancel", 1, args[0], &PyTuple_Type) < 0
        || arg_type("cancel", 2, args[1], &PyDict_Type) < 0 || arg_type("cancel", 3, args[2], &PyUnicode_Type) < 0)
        return NULL;
    return cancel_contexts(args[0], args[1], args[2]);
}

/* Append (field, start - shift, end - shift, topic, name, rounded) to `found`. */
static int
add_found(PyObject *found, PyObject *field, Py_ssize_t shift, PyObject *span, PyObject *topic, PyObject *name,
          PyObject *rounded)
{
    Py_ssize_t start, end;
    if (span_bounds(span, &start, &end) < 0)
        return -1;
    PyObject *entry = PyTuple_New(6);
    if (entry == NULL)
        return -1;
    PyObject *first = PyLong_FromSsize_t(start - shift);
    PyObject *last = PyLong_FromSsize_t(end - shift);
    if (first == NULL || last == NULL) {
        Py_XDECREF(first);
        Py_XDECREF(last);
        Py_DECREF(entry);
        return -1;
    }
    PyTuple_SET_ITEM(entry, 0, Py_NewRef(field));
    PyTuple_SET_ITEM(entry, 1, first);
    PyTuple_SET_ITEM(entry, 2, last);
    PyTuple_SET_ITEM(entry, 3, Py_NewRef(topic));
    PyTuple_SET_ITEM(entry, 4, Py_NewRef(name));
    PyTuple_SET_ITEM(entry, 5, Py_NewRef(rounded));
    int status = PyList_Append(found, entry);
    Py_DECREF(entry);
    return status;
}

/* run_plan(plan, occ, field_index, shift, scores, found, text, encoded, lower_table) -> text
 *
 * The loop over a field's plan in Classifier._classify, step for step: scores and found are
 * updated in place, in the same order. `text` is the folded text, or None to fold `encoded`
 * (Latin-1) with `lower_table` on the first step that needs positions; the folded text (or None
 * when no step needed it) is returned for the next field. */
static PyObject *run_plan_impl(PyObject *plan, PyObject *occ, PyObject *field, Py_ssize_t shift, PyObject *scores,
                               PyObject *found, PyObject *text, PyObject *encoded, PyObject *lower_table);

static PyObject *
run_plan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (arg_count("run_plan", nargs, 9) < 0 || arg_type("run_plan", 1, args[0], &PyTuple_Type) < 0
        || arg_type("run_plan", 2, args[1], &PyDict_Type) < 0 || arg_type("run_plan", 5, args[4], &PyDict_Type) < 0
        || arg_type("run_plan", 6, args[5], &PyList_Type) < 0 || arg_type("run_plan", 8, args[7], &PyBytes_Type) < 0
        || arg_type("run_plan", 9, args[8], &PyBytes_Type) < 0)
        return NULL;
    PyObject *plan = args[0], *occ = args[1], *field = args[2], *scores = args[4], *found = args[5];
    PyObject *text = args[6], *encoded = args[7], *lower_table = args[8];
    Py_ssize_t shift = PyLong_AsSsize_t(args[3]);
    if (shift == -1 && PyErr_Occurred())
        return NULL;
    if (text != Py_None && !PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "run_plan() argument 7 must be str or None");
        return NULL;
    }
    if (PyBytes_GET_SIZE(lower_table) != 256) {
        PyErr_SetString(PyExc_ValueError, "run_plan() argument 9 must be a 256-byte table");
        return NULL;
    }
    return run_plan_impl(plan, occ, field, shift, scores, found, Py_NewRef(text), encoded, lower_table);
}

/* run_plan's work; takes over the reference to `text` and returns a new one (NULL on error). */
static PyObject *
run_plan_impl(PyObject *plan, PyObject *occ, PyObject *field, Py_ssize_t shift, PyObject *scores, PyObject *found,
              PyObject *text, PyObject *encoded, PyObject *lower_table)
{
    PyObject *topic_occ = NULL; /* topic -> occurrences left once its contexts are applied */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
        PyObject *step = PyTuple_GET_ITEM(plan, i);
        if (!PyTuple_Check(step) || PyTuple_GET_SIZE(step) != 6) {
            PyErr_SetString(PyExc_TypeError, "run_plan: a step is a 6-tuple");
            goto fail;
        }
        PyObject *topic = PyTuple_GET_ITEM(step, 0);
        PyObject *contribution = PyTuple_GET_ITEM(step, 1);
        PyObject *name = PyTuple_GET_ITEM(step, 2);
        PyObject *rounded = PyTuple_GET_ITEM(step, 3);
        PyObject *tids = PyTuple_GET_ITEM(step, 4);
        PyObject *dynamic = PyTuple_GET_ITEM(step, 5);
        PyObject *spans; /* new reference */
        if (dynamic == Py_None) {
            /* Decided by the terms present alone: the spans are those of `tids`. */
            if (!PyTuple_Check(tids) || PyTuple_GET_SIZE(tids) == 0) {
                PyErr_SetString(PyExc_TypeError, "run_plan: a settled step names its terms");
                goto fail;
            }
            if (PyTuple_GET_SIZE(tids) == 1) {
                spans = PyDict_GetItemWithError(occ, PyTuple_GET_ITEM(tids, 0));
                if (spans == NULL) {
                    if (!PyErr_Occurred())
                        PyErr_SetObject(PyExc_KeyError, PyTuple_GET_ITEM(tids, 0));
                    goto fail;
                }
                Py_INCREF(spans);
            }
            else {
                spans = PyList_New(0);
                if (spans == NULL)
                    goto fail;
                for (Py_ssize_t t = 0; t < PyTuple_GET_SIZE(tids); t++) {
                    PyObject *some = PyDict_GetItemWithError(occ, PyTuple_GET_ITEM(tids, t));
                    if (some == NULL) {
                        if (!PyErr_Occurred())
                            PyErr_SetObject(PyExc_KeyError, PyTuple_GET_ITEM(tids, t));
                        Py_DECREF(spans);
                        goto fail;
                    }
                    if (extend(spans, some) < 0) {
                        Py_DECREF(spans);
                        goto fail;
                    }
                }
            }
        }
        else {
            if (!PyTuple_Check(dynamic) || PyTuple_GET_SIZE(dynamic) != 3) {
                PyErr_SetString(PyExc_TypeError, "run_plan: positions are (node, topic contexts, rule contexts)");
                goto fail;
            }
            PyObject *node = PyTuple_GET_ITEM(dynamic, 0);
            PyObject *topic_contexts = PyTuple_GET_ITEM(dynamic, 1);
            PyObject *rule_contexts = PyTuple_GET_ITEM(dynamic, 2);
            if (text == Py_None) { /* normalize.fold_latin1(encoded) */
                Py_ssize_t length = PyBytes_GET_SIZE(encoded);
                const uint8_t *raw = (const uint8_t *)PyBytes_AS_STRING(encoded);
                const uint8_t *table = (const uint8_t *)PyBytes_AS_STRING(lower_table);
                uint8_t max_char = 0;
                for (Py_ssize_t k = 0; k < length; k++)
                    max_char |= table[raw[k]];
                PyObject *folded = PyUnicode_New(length, max_char);
                if (folded == NULL)
                    goto fail;
                Py_UCS1 *out = PyUnicode_1BYTE_DATA(folded);
                for (Py_ssize_t k = 0; k < length; k++)
                    out[k] = table[raw[k]];
                Py_SETREF(text, folded);
            }
            PyObject *field_occ = Py_NewRef(occ);
            if (PyTuple_Check(topic_contexts) && PyTuple_GET_SIZE(topic_contexts) > 0) {
                if (topic_occ == NULL && (topic_occ = PyDict_New()) == NULL) {
                    Py_DECREF(field_occ);
                    goto fail;
                }
                PyObject *cached = PyDict_GetItemWithError(topic_occ, topic);
                if (cached == NULL) {
                    if (PyErr_Occurred()) {
                        Py_DECREF(field_occ);
                        goto fail;
                    }
                    cached = cancel_contexts(topic_contexts, occ, text);
                    if (cached == NULL || PyDict_SetItem(topic_occ, topic, cached) < 0) {
                        Py_XDECREF(cached);
                        Py_DECREF(field_occ);
                        goto fail;
                    }
                    Py_DECREF(cached); /* the cache holds it */
                }
                Py_SETREF(field_occ, Py_NewRef(cached));
            }
            if (PyTuple_Check(rule_contexts) && PyTuple_GET_SIZE(rule_contexts) > 0) {
                PyObject *left = cancel_contexts(rule_contexts, field_occ, text);
                Py_SETREF(field_occ, left);
                if (field_occ == NULL)
                    goto fail;
            }
            spans = evaluate_node(node, field_occ, text);
            Py_DECREF(field_occ);
            if (spans == NULL)
                goto fail;
            if (spans == Py_None) {
                Py_DECREF(spans);
                continue;
            }
        }
        /* scores[topic] = scores.get(topic, 0.0) + contribution */
        PyObject *score = PyDict_GetItemWithError(scores, topic);
        if (score == NULL && PyErr_Occurred()) {
            Py_DECREF(spans);
            goto fail;
        }
        PyObject *total = PyNumber_Add(score != NULL ? score : zero_score, contribution);
        int status = total != NULL ? PyDict_SetItem(scores, topic, total) : -1;
        Py_XDECREF(total);
        if (status < 0 || !PyList_Check(spans)) {
            if (status == 0)
                PyErr_SetString(PyExc_TypeError, "run_plan: spans must be a list");
            Py_DECREF(spans);
            goto fail;
        }
        Py_ssize_t count = PyList_GET_SIZE(spans);
        for (Py_ssize_t k = 0; k < count && status == 0; k++) {
            PyObject *span = PyList_GET_ITEM(spans, k);
            /* each distinct span once (set(spans) in Python; the engine sorts `found` afterwards) */
            int seen = 0;
            Py_ssize_t start = 0, end = 0;
            if (k > 0 && span_bounds(span, &start, &end) < 0)
                status = -1;
            for (Py_ssize_t j = 0; j < k && !seen && status == 0; j++) {
                Py_ssize_t other_start = 0, other_end = 0;
                if (span_bounds(PyList_GET_ITEM(spans, j), &other_start, &other_end) < 0)
                    status = -1;
                else
                    seen = other_start == start && other_end == end;
            }
            if (status == 0 && !seen)
                status = add_found(found, field, shift, span, topic, name, rounded);
        }
        Py_DECREF(spans);
        if (status < 0)
            goto fail;
    }
    Py_XDECREF(topic_occ);
    return text;
fail:
    Py_XDECREF(topic_occ);
    Py_XDECREF(text);
    return NULL;
}

/* ---------------------------------------------------------------- a whole item
 *
 * Scanner.classify is Classifier._classify and _result for a fast-path text, with the same calls
 * in the same order: scan, per field the plan (made by the classifier's Python callback on a memo
 * miss) and run_plan, then the sorted matches, the selected topics and the rounded scores. */

static PyObject *classification_keys[4];

/* A Classification as engine._classification makes it (its __dict__ filled at once). */
static PyObject *
new_classification(Scanner *self, PyObject *item_id, PyObject *topics, PyObject *scores, PyObject *matches)
{
    PyObject *attributes = PyDict_New();
    if (attributes == NULL)
        return NULL;
    PyObject *values[4] = {item_id, topics, scores, matches};
    for (int k = 0; k < 4; k++) {
        if (PyDict_SetItem(attributes, classification_keys[k], values[k]) < 0) {
            Py_DECREF(attributes);
            return NULL;
        }
    }
    PyTypeObject *type = (PyTypeObject *)self->classification_type;
    PyObject *result = type->tp_alloc(type, 0);
    if (result != NULL && PyObject_GenericSetDict(result, attributes, NULL) < 0)
        Py_CLEAR(result);
    Py_DECREF(attributes);
    return result;
}

static PyObject *
empty_classification(Scanner *self, PyObject *item_id)
{
    PyObject *topics = PyTuple_New(0);
    PyObject *scores = PyDict_New();
    PyObject *matches = PyTuple_New(0);
    PyObject *result = topics && scores && matches ? new_classification(self, item_id, topics, scores, matches) : NULL;
    Py_XDECREF(topics);
    Py_XDECREF(scores);
    Py_XDECREF(matches);
    return result;
}

/* bind(plans, topic_ids, thresholds, field_names, match_type, classification_type, lower_table, round,
 *      separator_length) */
static PyObject *
Scanner_bind(Scanner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (arg_count("bind", nargs, 9) < 0 || arg_type("bind", 1, args[0], &PyDict_Type) < 0
        || arg_type("bind", 2, args[1], &PyTuple_Type) < 0 || arg_type("bind", 3, args[2], &PyTuple_Type) < 0
        || arg_type("bind", 4, args[3], &PyTuple_Type) < 0 || arg_type("bind", 5, args[4], &PyType_Type) < 0
        || arg_type("bind", 6, args[5], &PyType_Type) < 0 || arg_type("bind", 7, args[6], &PyBytes_Type) < 0)
        return NULL;
    if (PyTuple_GET_SIZE(args[1]) != PyTuple_GET_SIZE(args[2]) || PyTuple_GET_SIZE(args[3]) != 3
        || PyBytes_GET_SIZE(args[6]) != 256) {
        PyErr_SetString(PyExc_ValueError, "bind(): one threshold per topic, three field names, a 256-byte table");
        return NULL;
    }
    Py_ssize_t separator_length = PyLong_AsSsize_t(args[8]);
    if (separator_length == -1 && PyErr_Occurred())
        return NULL;
    if (separator_length < 0) {
        PyErr_SetString(PyExc_ValueError, "bind(): the separator length cannot be negative");
        return NULL;
    }
    Py_XSETREF(self->plans, Py_NewRef(args[0]));
    Py_XSETREF(self->topic_ids, Py_NewRef(args[1]));
    Py_XSETREF(self->thresholds, Py_NewRef(args[2]));
    Py_XSETREF(self->field_names, Py_NewRef(args[3]));
    Py_XSETREF(self->match_type, Py_NewRef(args[4]));
    Py_XSETREF(self->classification_type, Py_NewRef(args[5]));
    Py_XSETREF(self->lower_table, Py_NewRef(args[6]));
    Py_XSETREF(self->round_function, Py_NewRef(args[7]));
    self->separator_length = separator_length;
    Py_RETURN_NONE;
}

/* classify(item_id, texts, lang, encoded, make_plan) -> Classification */
static PyObject *
Scanner_classify(Scanner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->plans == NULL || !self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "classify(): initialise and bind() first");
        return NULL;
    }
    if (arg_count("classify", nargs, 5) < 0 || arg_type("classify", 2, args[1], &PyTuple_Type) < 0
        || arg_type("classify", 4, args[3], &PyBytes_Type) < 0)
        return NULL;
    PyObject *item_id = args[0], *texts = args[1], *lang = args[2], *encoded = args[3], *make_plan = args[4];
    if (PyTuple_GET_SIZE(texts) != 3 || !PyUnicode_Check(PyTuple_GET_ITEM(texts, 0))
        || !PyUnicode_Check(PyTuple_GET_ITEM(texts, 1)) || !PyUnicode_Check(PyTuple_GET_ITEM(texts, 2))) {
        PyErr_SetString(PyExc_TypeError, "classify(): texts must be three strings");
        return NULL;
    }
    Py_ssize_t gap = self->separator_length;
    Py_ssize_t title_length = PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(texts, 0));
    Py_ssize_t summary_length = PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(texts, 1));
    Py_ssize_t second = title_length + gap;
    Py_ssize_t third = second + summary_length + gap;
    PyObject *fields[3];
    if (scan_impl(self, encoded, second, third, fields) < 0)
        return NULL;
    PyObject *result = NULL, *scores = NULL, *found = NULL, *text = Py_NewRef(Py_None);
    PyObject *matches = NULL, *topic_keys = NULL, *selected = NULL, *rounded_scores = NULL;
    if (PyDict_GET_SIZE(fields[0]) == 0 && PyDict_GET_SIZE(fields[1]) == 0 && PyDict_GET_SIZE(fields[2]) == 0) {
        result = empty_classification(self, item_id);
        goto done;
    }
    scores = PyDict_New();
    found = PyList_New(0);
    if (scores == NULL || found == NULL)
        goto done;
    Py_ssize_t shifts[3] = {0, second, third};
    for (int index = 0; index < 3; index++) {
        PyObject *occ = fields[index];
        if (PyDict_GET_SIZE(occ) == 0)
            continue;
        PyObject *field = PyLong_FromLong(index);
        PyObject *present = field != NULL ? PyFrozenSet_New(occ) : NULL;
        PyObject *key = present != NULL ? PyTuple_Pack(3, field, lang, present) : NULL;
        Py_XDECREF(present);
        PyObject *plan = key != NULL ? PyDict_GetItemWithError(self->plans, key) : NULL;
        if (plan != NULL)
            Py_INCREF(plan);
        else if (key != NULL && !PyErr_Occurred())
            plan = PyObject_CallFunctionObjArgs(make_plan, field, lang, key, NULL);
        Py_XDECREF(key);
        if (plan != NULL && !PyTuple_Check(plan)) {
            PyErr_SetString(PyExc_TypeError, "classify(): a plan must be a tuple");
            Py_CLEAR(plan);
        }
        if (plan == NULL) {
            Py_XDECREF(field);
            goto done;
        }
        text = run_plan_impl(plan, occ, field, shifts[index], scores, found, text, encoded, self->lower_table);
        Py_DECREF(plan);
        Py_DECREF(field);
        if (text == NULL)
            goto done;
    }
    if (PyDict_GET_SIZE(scores) == 0) {
        result = empty_classification(self, item_id);
        goto done;
    }
    if (PyList_Sort(found) < 0)
        goto done;
    matches = build_matches_impl(found, texts, self->topic_ids, self->field_names, (PyTypeObject *)self->match_type);
    topic_keys = PyDict_Keys(scores);
    selected = PyList_New(0);
    rounded_scores = PyDict_New();
    if (matches == NULL || topic_keys == NULL || selected == NULL || rounded_scores == NULL
        || PyList_Sort(topic_keys) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(topic_keys); i++) {
        PyObject *topic = PyList_GET_ITEM(topic_keys, i);
        Py_ssize_t position = PyLong_AsSsize_t(topic);
        if (position == -1 && PyErr_Occurred())
            goto done;
        if (position < 0 || position >= PyTuple_GET_SIZE(self->topic_ids)) {
            PyErr_SetString(PyExc_IndexError, "classify(): topic index out of range");
            goto done;
        }
        PyObject *score = PyDict_GetItemWithError(scores, topic); /* borrowed */
        if (score == NULL)
            goto done;
        double value = PyFloat_AsDouble(score);
        double threshold = PyFloat_AsDouble(PyTuple_GET_ITEM(self->thresholds, position));
        if (PyErr_Occurred())
            goto done;
        PyObject *topic_id = PyTuple_GET_ITEM(self->topic_ids, position);
        /* score > 0 and score + 1e-9 >= threshold, as engine._result */
        if (value > 0 && value + 1e-9 >= threshold && PyList_Append(selected, topic_id) < 0)
            goto done;
        PyObject *rounded = PyObject_CallFunction(self->round_function, "Oi", score, 2);
        int status = rounded != NULL ? PyDict_SetItem(rounded_scores, topic_id, rounded) : -1;
        Py_XDECREF(rounded);
        if (status < 0)
            goto done;
    }
    Py_SETREF(selected, PyList_AsTuple(selected));
    if (selected != NULL)
        result = new_classification(self, item_id, selected, rounded_scores, matches);
done:
    Py_XDECREF(fields[0]);
    Py_XDECREF(fields[1]);
    Py_XDECREF(fields[2]);
    Py_XDECREF(scores);
    Py_XDECREF(found);
    Py_XDECREF(text);
    Py_XDECREF(matches);
    Py_XDECREF(topic_keys);
    Py_XDECREF(selected);
    Py_XDECREF(rounded_scores);
    return result;
}

static PyMethodDef module_methods[] = {
    {"run_plan", (PyCFunction)(void (*)(void))run_plan, METH_FASTCALL, "run_plan(plan, occ, field_index, shift, scores, found, text, encoded, "
                                         "lower_table) -> text: the plan loop of Classifier._classify"},
    {"configure", configure, METH_O, "configure(elisions): the particles that gaps of `near` do not count"},
    {"evaluate", (PyCFunction)(void (*)(void))evaluate, METH_FASTCALL, "evaluate(node, occurrences, text): engine._evaluate in C"},
    {"cancel", (PyCFunction)(void (*)(void))cancel, METH_FASTCALL, "cancel(contexts, occurrences, text): engine._cancel in C"},
    {"build_matches", (PyCFunction)(void (*)(void))build_matches, METH_FASTCALL,
     "build_matches(found, texts, topic_ids, field_names, match_type) -> tuple of Match (see engine._result)"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Scanner_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))Scanner_bind, METH_FASTCALL,
     "bind(plans, topic_ids, thresholds, field_names, match_type, classification_type, lower_table, round, "
     "separator_length)"},
    {"classify", (PyCFunction)(void (*)(void))Scanner_classify, METH_FASTCALL,
     "classify(item_id, texts, lang, encoded, make_plan) -> Classification: Classifier._classify in C"},
    {"scan", (PyCFunction)(void (*)(void))Scanner_scan, METH_FASTCALL,
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
    if (zero_score == NULL && (zero_score = PyFloat_FromDouble(0.0)) == NULL)
        return NULL;
    for (int k = 0; k < 5; k++)
        if (node_kind_interned[k] == NULL && (node_kind_interned[k] = PyUnicode_InternFromString(node_kind_names[k])) == NULL)
            return NULL;
    static const char *names[7] = {"topic", "rule", "field", "text", "start", "end", "weight"};
    for (int k = 0; k < 7; k++) {
        if (match_keys[k] == NULL && (match_keys[k] = PyUnicode_InternFromString(names[k])) == NULL)
            return NULL;
    }
    static const char *classification_names[4] = {"item_id", "topics", "scores", "matches"};
    for (int k = 0; k < 4; k++)
        if (classification_keys[k] == NULL
            && (classification_keys[k] = PyUnicode_InternFromString(classification_names[k])) == NULL)
            return NULL;
    if (match_template == NULL) {
        if ((match_template = PyDict_New()) == NULL)
            return NULL;
        for (int k = 0; k < 7; k++)
            if (PyDict_SetItem(match_template, match_keys[k], Py_None) < 0)
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
