/*
 * _fastloop: the common case of the stdio server loop, in C (optional).
 *
 * snakepit_bridge.protocol.ProtocolHandler._serve is the readable, complete
 * loop.  This module runs the part of it that every well-formed request takes
 * (read a frame, decode, check the envelope, call process_command, build the
 * success envelope, encode, write) without the interpreter's per-bytecode
 * cost, which was most of a ping's time: measured with perf on a 2-vCPU
 * machine, 54% of the reference bridge's CPU per ping was libpython and only
 * 5% the codec itself.
 *
 * The rule that keeps the two loops identical in behaviour: this loop only
 * ever does what the Python loop would do, and it *returns to Python* for
 * everything else, before it has changed anything.  A frame that is empty,
 * larger than FAST_FRAME_MAX, undecodable, or not a well-formed request is
 * left in the buffer untouched (code SLOW), and Python handles it the usual
 * way (decoding is pure, so decoding it twice changes nothing).  Once a
 * command has run, its frame is consumed and any trouble comes back as data
 * (COMMAND_FAILED, UNENCODABLE, PARTIAL_WRITE) for Python to answer: a
 * command is never run twice.  Exceptions that are not Exception subclasses
 * (the bridge's own _Terminate/_HostGone raised by its signal handlers,
 * KeyboardInterrupt, SystemExit) propagate unchanged, as in Python.
 *
 * I/O: blocking read()/writev() with the GIL released, as os.readv/os.writev
 * do.  EINTR runs the Python signal handlers (PEP 475 semantics) and retries;
 * EAGAIN goes back to Python (which waits with select()); a write that does
 * not complete at once goes back to Python with the bridge's "_writing" flag
 * already set, so that a signal arriving now waits for the frame to be
 * finished (PROTOCOL §5.3), exactly as in ProtocolHandler._write.
 *
 * Codecs: MessagePack through msgpack's own unpackb and Packer.pack.  JSON
 * through a small reader and writer here that produce what json's decoder and
 * encoder produce for plain values and step aside for anything else (the
 * stdlib then does the whole value), because calling the stdlib's C scanner
 * and encoder from here still cost more than the rest of a ping.
 * tests/test_fastloop.py checks them against the stdlib with hypothesis, and
 * the two loops against each other frame by frame.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Outcome codes; protocol.py imports them by name. */
enum {
    OUTCOME_SLOW = 0,           /* Python handles the frame at `start` (or the next read) */
    OUTCOME_END_OF_INPUT = 1,   /* read() returned 0 */
    OUTCOME_COMMAND_FAILED = 2, /* (rid, command, exception) */
    OUTCOME_UNENCODABLE = 3,    /* (rid, command, exception or None when > 4 GiB) */
    OUTCOME_PARTIAL_WRITE = 4,  /* (header, payload, bytes written) */
};

enum { CODEC_JSON = 0, CODEC_MSGPACK = 1 };

/* Deeper JSON values are left to the stdlib, which has the interpreter's own
 * recursion guard; plain requests and results are never near this deep. */
#define JSON_MAX_DEPTH 64

#define HEADER_SIZE 4
/* The largest payload a frame header can announce (PROTOCOL §2.1). */
#define MAX_ENCODABLE_LENGTH 0xFFFFFFFFULL

/* Interned dictionary keys and constants, made once at import. */
static PyObject *key_id, *key_command, *key_args, *key_success, *key_result, *key_timestamp;
static PyObject *attr_writing, *empty_text;

/* ---------------------------------------------------------------- timestamps */

/* The §4.2 envelope timestamp, ISO 8601 UTC with milliseconds and a 'Z',
 * cached per millisecond like snakepit_bridge.adapter.utc_timestamp (which
 * produces the same text: int(time.time() * 1000) there, the same floor of
 * CLOCK_REALTIME here). */
static long long cached_millis = -1;
static PyObject *cached_timestamp = NULL;

static PyObject *
utc_timestamp(void)
{
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    long long millis = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (millis != cached_millis || cached_timestamp == NULL) {
        time_t second = (time_t)(millis / 1000);
        struct tm parts;
        char text[64];
        if (gmtime_r(&second, &parts) == NULL) {
            PyErr_SetString(PyExc_OverflowError, "clock out of range for a timestamp");
            return NULL;
        }
        size_t used = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &parts);
        snprintf(text + used, sizeof text - used, ".%03dZ", (int)(millis % 1000));
        PyObject *fresh = PyUnicode_FromString(text);
        if (fresh == NULL) {
            return NULL;
        }
        Py_XSETREF(cached_timestamp, fresh);
        cached_millis = millis;
    }
    Py_INCREF(cached_timestamp);
    return cached_timestamp;
}

static PyObject *
fastloop_utc_timestamp(PyObject *module, PyObject *unused)
{
    return utc_timestamp();
}

/* ------------------------------------------------------------------ helpers */

/* True when the exception being raised is an ordinary error (an Exception
 * subclass) that the Python loop would turn into an error response. */
static int
ordinary_error_pending(void)
{
    return PyErr_ExceptionMatches(PyExc_Exception);
}

/* Take the pending exception as one object carrying its traceback. */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value == NULL) {
        value = Py_NewRef(Py_None);
    }
    else if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

static PyObject *
outcome(int code, Py_ssize_t start, Py_ssize_t end)
{
    return Py_BuildValue("(inn)", code, start, end);
}

/* (code, start, end, a, b, c), stealing a, b and c. */
static PyObject *
outcome_with(int code, Py_ssize_t start, Py_ssize_t end, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *result = NULL;
    if (a != NULL && b != NULL && c != NULL) {
        result = Py_BuildValue("(innOOO)", code, start, end, a, b, c);
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    return result;
}

static int
is_json_whitespace(Py_UCS4 c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ------------------------------------------------------------ JSON reader */

/* Calling the stdlib's C scanner cost ~0.9 us per ping (argument parsing, a
 * result tuple, a key memo); this reader builds the same objects as
 * json.JSONDecoder(parse_constant=<reject>).decode for well-formed input and
 * says "not mine" for anything else (a syntax error, NaN/Infinity, deep
 * nesting, an integer the interpreter refuses to convert): the stdlib scanner
 * then reads the whole text again and reports or accepts it as always. */

typedef struct {
    PyObject *text;
    int kind;
    const void *chars;
    Py_ssize_t length;
    Py_ssize_t at;
} json_in;

#define JSON_CHAR(in, index) PyUnicode_READ((in)->kind, (in)->chars, (index))

static void
json_skip_space(json_in *in)
{
    while (in->at < in->length && is_json_whitespace(JSON_CHAR(in, in->at))) {
        in->at++;
    }
}

/* Four hex digits at `at`, or -1. */
static long
json_hex4(json_in *in, Py_ssize_t at)
{
    long value = 0;
    if (at + 4 > in->length) {
        return -1;
    }
    for (Py_ssize_t index = at; index < at + 4; index++) {
        Py_UCS4 c = JSON_CHAR(in, index);
        int digit = c >= '0' && c <= '9'   ? (int)(c - '0')
                    : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
                    : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10)
                                           : -1;
        if (digit < 0) {
            return -1;
        }
        value = (value << 4) | digit;
    }
    return value;
}

/* A string, `in->at` on its opening quote.  NULL: not mine (or an error, if
 * one is set).  json's strict mode: control characters must be escaped; a
 * \u escape of a high surrogate followed by one of a low surrogate makes one
 * code point, any other surrogate stays as it is. */
static PyObject *
json_read_string(json_in *in)
{
    Py_ssize_t begin = in->at + 1;
    Py_ssize_t index = begin;
    int escaped = 0;
    for (;; index++) {
        if (index >= in->length) {
            return NULL;
        }
        Py_UCS4 c = JSON_CHAR(in, index);
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            return NULL;
        }
        if (c == '\\') {
            escaped = 1;
            index++; /* an escaped character never closes the string */
        }
    }
    Py_ssize_t close = index;
    in->at = close + 1;
    if (!escaped) {
        return PyUnicode_Substring(in->text, begin, close);
    }
    /* Unescaping never makes the text longer. */
    Py_UCS4 *buffer = PyMem_New(Py_UCS4, (size_t)(close - begin));
    if (buffer == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t size = 0;
    for (index = begin; index < close; index++) {
        Py_UCS4 c = JSON_CHAR(in, index);
        if (c != '\\') {
            buffer[size++] = c;
            continue;
        }
        c = JSON_CHAR(in, ++index);
        switch (c) {
        case '"': case '\\': case '/': buffer[size++] = c; continue;
        case 'b': buffer[size++] = '\b'; continue;
        case 'f': buffer[size++] = '\f'; continue;
        case 'n': buffer[size++] = '\n'; continue;
        case 'r': buffer[size++] = '\r'; continue;
        case 't': buffer[size++] = '\t'; continue;
        case 'u': break;
        default: PyMem_Free(buffer); return NULL;
        }
        long unit = json_hex4(in, index + 1);
        if (unit < 0 || index + 4 >= close) {
            PyMem_Free(buffer);
            return NULL;
        }
        index += 4;
        if (unit >= 0xD800 && unit <= 0xDBFF && index + 6 < close &&
            JSON_CHAR(in, index + 1) == '\\' && JSON_CHAR(in, index + 2) == 'u') {
            long low = json_hex4(in, index + 3);
            if (low >= 0xDC00 && low <= 0xDFFF) {
                unit = 0x10000 + (((unit - 0xD800) << 10) | (low - 0xDC00));
                index += 6;
            }
        }
        buffer[size++] = (Py_UCS4)unit;
    }
    PyObject *value = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buffer, size);
    PyMem_Free(buffer);
    return value;
}

/* A number, the stdlib's way: -?(0|[1-9][0-9]*) makes an int, with (.[0-9]+)?
 * ([eE][-+]?[0-9]+)? a float. */
static PyObject *
json_read_number(json_in *in)
{
    Py_ssize_t begin = in->at;
    Py_ssize_t index = begin;
    int is_float = 0;
#define DIGIT_AT(i) ((i) < in->length && JSON_CHAR(in, (i)) >= '0' && JSON_CHAR(in, (i)) <= '9')
    if (index < in->length && JSON_CHAR(in, index) == '-') {
        index++;
    }
    if (!DIGIT_AT(index)) {
        return NULL; /* "-Infinity", or not a number at all */
    }
    if (JSON_CHAR(in, index) == '0') {
        index++;
    }
    else {
        while (DIGIT_AT(index)) {
            index++;
        }
    }
    if (index < in->length && JSON_CHAR(in, index) == '.' && DIGIT_AT(index + 1)) {
        is_float = 1;
        index++;
        while (DIGIT_AT(index)) {
            index++;
        }
    }
    if (index < in->length && (JSON_CHAR(in, index) == 'e' || JSON_CHAR(in, index) == 'E')) {
        Py_ssize_t exponent = index + 1;
        if (exponent < in->length && (JSON_CHAR(in, exponent) == '-' || JSON_CHAR(in, exponent) == '+')) {
            exponent++;
        }
        if (DIGIT_AT(exponent)) {
            is_float = 1;
            index = exponent;
            while (DIGIT_AT(index)) {
                index++;
            }
        }
    }
#undef DIGIT_AT
    in->at = index;
    /* The digits are ASCII: copy them out as C text. */
    char small[64];
    Py_ssize_t size = index - begin;
    char *digits = size < (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)size + 1);
    if (digits == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        digits[i] = (char)JSON_CHAR(in, begin + i);
    }
    digits[size] = '\0';
    PyObject *value;
    if (is_float) {
        /* float(text): correctly rounded, overflowing to an infinity */
        double number = PyOS_string_to_double(digits, NULL, NULL);
        value = number == -1.0 && PyErr_Occurred() ? NULL : PyFloat_FromDouble(number);
    }
    else {
        value = PyLong_FromString(digits, NULL, 10);
    }
    if (digits != small) {
        PyMem_Free(digits);
    }
    return value;
}

static PyObject *json_read_value(json_in *in, int depth);

static PyObject *
json_read_object(json_in *in, int depth)
{
    PyObject *object = PyDict_New();
    if (object == NULL) {
        return NULL;
    }
    in->at++; /* '{' */
    json_skip_space(in);
    if (in->at < in->length && JSON_CHAR(in, in->at) == '}') {
        in->at++;
        return object;
    }
    for (;;) {
        if (in->at >= in->length || JSON_CHAR(in, in->at) != '"') {
            break;
        }
        PyObject *key = json_read_string(in);
        if (key == NULL) {
            break;
        }
        json_skip_space(in);
        if (in->at >= in->length || JSON_CHAR(in, in->at) != ':') {
            Py_DECREF(key);
            break;
        }
        in->at++;
        json_skip_space(in);
        PyObject *item = json_read_value(in, depth + 1);
        int stored = item ? PyDict_SetItem(object, key, item) : -1;
        Py_DECREF(key);
        Py_XDECREF(item);
        if (stored < 0) {
            break;
        }
        json_skip_space(in);
        if (in->at < in->length && JSON_CHAR(in, in->at) == '}') {
            in->at++;
            return object;
        }
        if (in->at >= in->length || JSON_CHAR(in, in->at) != ',') {
            break;
        }
        in->at++;
        json_skip_space(in);
    }
    Py_DECREF(object);
    return NULL;
}

static PyObject *
json_read_array(json_in *in, int depth)
{
    PyObject *array = PyList_New(0);
    if (array == NULL) {
        return NULL;
    }
    in->at++; /* '[' */
    json_skip_space(in);
    if (in->at < in->length && JSON_CHAR(in, in->at) == ']') {
        in->at++;
        return array;
    }
    for (;;) {
        PyObject *item = json_read_value(in, depth + 1);
        int stored = item ? PyList_Append(array, item) : -1;
        Py_XDECREF(item);
        if (stored < 0) {
            break;
        }
        json_skip_space(in);
        if (in->at < in->length && JSON_CHAR(in, in->at) == ']') {
            in->at++;
            return array;
        }
        if (in->at >= in->length || JSON_CHAR(in, in->at) != ',') {
            break;
        }
        in->at++;
        json_skip_space(in);
    }
    Py_DECREF(array);
    return NULL;
}

static int
json_literal(json_in *in, const char *word)
{
    Py_ssize_t size = (Py_ssize_t)strlen(word);
    if (in->at + size > in->length) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        if (JSON_CHAR(in, in->at + i) != (Py_UCS4)word[i]) {
            return 0;
        }
    }
    in->at += size;
    return 1;
}

static PyObject *
json_read_value(json_in *in, int depth)
{
    if (in->at >= in->length || depth >= JSON_MAX_DEPTH) {
        return NULL;
    }
    switch (JSON_CHAR(in, in->at)) {
    case '"': return json_read_string(in);
    case '{': return json_read_object(in, depth);
    case '[': return json_read_array(in, depth);
    case 't': return json_literal(in, "true") ? Py_NewRef(Py_True) : NULL;
    case 'f': return json_literal(in, "false") ? Py_NewRef(Py_False) : NULL;
    case 'n': return json_literal(in, "null") ? Py_NewRef(Py_None) : NULL;
    default: return json_read_number(in);
    }
}

/* The whole text as one JSON value, with JSON whitespace around it allowed.
 * NULL: not mine (or an error, if one is set). */
static PyObject *
json_read_document(PyObject *text)
{
    json_in in = {text, PyUnicode_KIND(text), PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), 0};
    json_skip_space(&in);
    PyObject *value = json_read_value(&in, 0);
    if (value != NULL) {
        json_skip_space(&in);
        if (in.at != in.length) {
            Py_CLEAR(value);
        }
    }
    return value;
}

/* Decode a JSON payload exactly as json.JSONDecoder.decode does (leading and
 * trailing JSON whitespace allowed, nothing else after the value): this
 * reader first, the decoder's own C scanner for what it leaves.  NULL with
 * no exception set: "not decodable here, let Python report it". */
static PyObject *
decode_json(PyObject *scan_once, const char *data, Py_ssize_t size)
{
    PyObject *text = PyUnicode_DecodeUTF8(data, size, NULL);
    if (text == NULL) {
        return NULL;
    }
    PyObject *mine = json_read_document(text);
    if (mine != NULL) {
        Py_DECREF(text);
        return mine;
    }
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(text);
            return NULL;
        }
        PyErr_Clear();
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *chars = PyUnicode_DATA(text);
    Py_ssize_t index = 0;
    while (index < length && is_json_whitespace(PyUnicode_READ(kind, chars, index))) {
        index++;
    }
    PyObject *position = PyLong_FromSsize_t(index);
    PyObject *pair = position ? PyObject_CallFunctionObjArgs(scan_once, text, position, NULL) : NULL;
    Py_XDECREF(position);
    PyObject *value = NULL;
    if (pair != NULL && PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
        Py_ssize_t stop = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
        if (stop >= 0) {
            while (stop < length && is_json_whitespace(PyUnicode_READ(kind, chars, stop))) {
                stop++;
            }
            if (stop == length) {
                value = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
            }
        }
    }
    Py_XDECREF(pair);
    Py_DECREF(text);
    return value;
}

/* The request as the codec decodes it, or NULL: with an exception set only
 * when that exception must propagate (not an Exception subclass). */
static PyObject *
decode_request(int codec, PyObject *decode, const char *data, Py_ssize_t size)
{
    PyObject *request;
    if (codec == CODEC_JSON) {
        request = decode_json(decode, data, size);
    }
    else {
        PyObject *payload = PyBytes_FromStringAndSize(data, size);
        request = payload ? PyObject_CallOneArg(decode, payload) : NULL;
        Py_XDECREF(payload);
    }
    if (request == NULL && PyErr_Occurred() && ordinary_error_pending()) {
        PyErr_Clear();
    }
    return request;
}

/* ------------------------------------------------------------ JSON writer */

/* The stdlib's C JSON encoder spent 2.4 us on a ping's envelope (argument
 * parsing, a list of pieces, a join, an ASCII copy); this writer produces the
 * same bytes as json.dumps(value, separators=(",", ":"), allow_nan=False)
 * (ensure_ascii) for the plain types a result is made of, in one buffer.  On
 * anything else (another type or a subclass, a non-string key, a non-finite
 * float, deep nesting) it says "not mine" and the stdlib encoder does the
 * whole value, so every odd case keeps the stdlib's exact behaviour. */

#define JSON_NOT_MINE 1

typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
} json_out;

static int
json_reserve(json_out *out, Py_ssize_t more)
{
    if (out->length + more <= out->capacity) {
        return 0;
    }
    Py_ssize_t wanted = out->capacity * 2;
    if (wanted < out->length + more) {
        wanted = out->length + more;
    }
    char *grown = PyMem_Realloc(out->data, (size_t)wanted);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = grown;
    out->capacity = wanted;
    return 0;
}

static int
json_put(json_out *out, const char *text, Py_ssize_t size)
{
    if (json_reserve(out, size) < 0) {
        return -1;
    }
    memcpy(out->data + out->length, text, (size_t)size);
    out->length += size;
    return 0;
}

static const char hex_digits[] = "0123456789abcdef";

/* json.encoder's ESCAPE_ASCII: '"', '\\' and everything outside ' '..'~'. */
static int
json_put_string(json_out *out, PyObject *text)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *chars = PyUnicode_DATA(text);
    /* Reserve exactly what the escaped text takes (a big string must not
     * reserve 12 bytes per character for the worst case). */
    Py_ssize_t size = 2;
    for (Py_ssize_t index = 0; index < length; index++) {
        Py_UCS4 c = PyUnicode_READ(kind, chars, index);
        if (c >= ' ' && c <= '~') {
            size += c == '"' || c == '\\' ? 2 : 1;
        }
        else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            size += 2;
        }
        else {
            size += c > 0xFFFF ? 12 : 6;
        }
    }
    if (json_reserve(out, size) < 0) {
        return -1;
    }
    char *cursor = out->data + out->length;
    *cursor++ = '"';
    for (Py_ssize_t index = 0; index < length; index++) {
        Py_UCS4 c = PyUnicode_READ(kind, chars, index);
        if (c >= ' ' && c <= '~' && c != '"' && c != '\\') {
            *cursor++ = (char)c;
            continue;
        }
        *cursor++ = '\\';
        switch (c) {
        case '"': *cursor++ = '"'; continue;
        case '\\': *cursor++ = '\\'; continue;
        case '\n': *cursor++ = 'n'; continue;
        case '\r': *cursor++ = 'r'; continue;
        case '\t': *cursor++ = 't'; continue;
        case '\b': *cursor++ = 'b'; continue;
        case '\f': *cursor++ = 'f'; continue;
        default: break;
        }
        if (c > 0xFFFF) { /* a surrogate pair, as json.encoder writes it */
            Py_UCS4 v = c - 0x10000;
            Py_UCS4 high = 0xD800 | ((v >> 10) & 0x3FF);
            *cursor++ = 'u';
            *cursor++ = hex_digits[(high >> 12) & 0xF];
            *cursor++ = hex_digits[(high >> 8) & 0xF];
            *cursor++ = hex_digits[(high >> 4) & 0xF];
            *cursor++ = hex_digits[high & 0xF];
            *cursor++ = '\\';
            c = 0xDC00 | (v & 0x3FF);
        }
        *cursor++ = 'u';
        *cursor++ = hex_digits[(c >> 12) & 0xF];
        *cursor++ = hex_digits[(c >> 8) & 0xF];
        *cursor++ = hex_digits[(c >> 4) & 0xF];
        *cursor++ = hex_digits[c & 0xF];
    }
    *cursor++ = '"';
    out->length = cursor - out->data;
    return 0;
}

/* 0 written, -1 error (exception set), JSON_NOT_MINE for the stdlib encoder. */
static int
json_put_value(json_out *out, PyObject *value, int depth)
{
    if (value == Py_None) {
        return json_put(out, "null", 4);
    }
    if (value == Py_True) {
        return json_put(out, "true", 4);
    }
    if (value == Py_False) {
        return json_put(out, "false", 5);
    }
    if (PyUnicode_CheckExact(value)) {
        return json_put_string(out, value);
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) { /* int.__repr__, as json.encoder (its digit limit included) */
            PyObject *text = PyLong_Type.tp_repr(value);
            Py_ssize_t size;
            const char *digits = text ? PyUnicode_AsUTF8AndSize(text, &size) : NULL;
            int status = digits ? json_put(out, digits, size) : -1;
            Py_XDECREF(text);
            return status;
        }
        if (number == -1 && PyErr_Occurred()) {
            return -1;
        }
        char digits[32];
        int size = snprintf(digits, sizeof digits, "%lld", number);
        return json_put(out, digits, size);
    }
    if (PyFloat_CheckExact(value)) {
        double number = PyFloat_AS_DOUBLE(value);
        if (!isfinite(number)) {
            return JSON_NOT_MINE; /* the stdlib raises ValueError (allow_nan=False) */
        }
        /* float.__repr__, which json.encoder uses for finite floats. */
        char *digits = PyOS_double_to_string(number, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (digits == NULL) {
            return -1;
        }
        int status = json_put(out, digits, (Py_ssize_t)strlen(digits));
        PyMem_Free(digits);
        return status;
    }
    if (depth >= JSON_MAX_DEPTH) {
        return JSON_NOT_MINE;
    }
    if (PyDict_CheckExact(value)) {
        Py_ssize_t position = 0;
        PyObject *key, *item;
        int first = 1;
        if (json_put(out, "{", 1) < 0) {
            return -1;
        }
        while (PyDict_Next(value, &position, &key, &item)) {
            if (!PyUnicode_CheckExact(key)) {
                return JSON_NOT_MINE; /* json.encoder converts or rejects other keys */
            }
            if ((!first && json_put(out, ",", 1) < 0) || json_put_string(out, key) < 0 ||
                json_put(out, ":", 1) < 0) {
                return -1;
            }
            first = 0;
            int status = json_put_value(out, item, depth + 1);
            if (status != 0) {
                return status;
            }
        }
        return json_put(out, "}", 1);
    }
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        /* Only this thread runs and no Python code runs while writing, so the
         * list cannot change under us; the fast sequence API is safe. */
        Py_ssize_t count = PySequence_Fast_GET_SIZE(value);
        PyObject **items = PySequence_Fast_ITEMS(value);
        if (json_put(out, "[", 1) < 0) {
            return -1;
        }
        for (Py_ssize_t index = 0; index < count; index++) {
            if (index && json_put(out, ",", 1) < 0) {
                return -1;
            }
            int status = json_put_value(out, items[index], depth + 1);
            if (status != 0) {
                return status;
            }
        }
        return json_put(out, "]", 1);
    }
    return JSON_NOT_MINE;
}

/* bytes, or NULL with an exception, or NULL without one: "not mine". */
static PyObject *
json_write(PyObject *value)
{
    json_out out = {NULL, 0, 0};
    /* Big enough for a ping's envelope without growing. */
    if (json_reserve(&out, 256) < 0) {
        return NULL;
    }
    int status = json_put_value(&out, value, 0);
    PyObject *data = status == 0 ? PyBytes_FromStringAndSize(out.data, out.length) : NULL;
    PyMem_Free(out.data);
    return data;
}

/* A one-element list holding what the reader made of `text` (bytes), or None
 * where it defers to the stdlib (a list: None is a JSON value too). */
static PyObject *
fastloop_decode_json(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "decode_json() takes bytes");
        return NULL;
    }
    PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), NULL);
    if (text == NULL) {
        return NULL;
    }
    PyObject *value = json_read_document(text);
    Py_DECREF(text);
    if (value == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *box = PyList_New(1);
    if (box == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyList_SET_ITEM(box, 0, value);
    return box;
}

static PyObject *
fastloop_encode_json(PyObject *module, PyObject *value)
{
    PyObject *data = json_write(value);
    if (data == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE;
    }
    return data;
}

/* The encoded envelope as bytes, or NULL with the encoder's exception set. */
static PyObject *
encode_envelope(int codec, PyObject *encode, PyObject *envelope)
{
    if (codec == CODEC_MSGPACK) {
        PyObject *data = PyObject_CallOneArg(encode, envelope);
        if (data != NULL && !PyBytes_CheckExact(data)) {
            Py_SETREF(data, PyBytes_FromObject(data));
        }
        return data;
    }
    PyObject *written = json_write(envelope);
    if (written != NULL || PyErr_Occurred()) {
        return written;
    }
    /* The stdlib's C encoder yields pieces of text; ensure_ascii makes the
     * joined text pure ASCII (valid UTF-8 even for lone surrogates). */
    PyObject *zero = PyLong_FromLong(0);
    PyObject *pieces = zero ? PyObject_CallFunctionObjArgs(encode, envelope, zero, NULL) : NULL;
    Py_XDECREF(zero);
    if (pieces == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_Join(empty_text, pieces);
    Py_DECREF(pieces);
    if (text == NULL) {
        return NULL;
    }
    PyObject *data = PyUnicode_AsASCIIString(text);
    Py_DECREF(text);
    return data;
}

/* One writev of header + payload with the GIL released; bytes written, or -1
 * with errno set. */
static Py_ssize_t
write_frame(int fd, const unsigned char *header, PyObject *payload)
{
    struct iovec parts[2];
    parts[0].iov_base = (void *)header;
    parts[0].iov_len = HEADER_SIZE;
    parts[1].iov_base = PyBytes_AS_STRING(payload);
    parts[1].iov_len = (size_t)PyBytes_GET_SIZE(payload);
    Py_ssize_t written;
    Py_BEGIN_ALLOW_THREADS
    written = writev(fd, parts, 2);
    Py_END_ALLOW_THREADS
    return written;
}

/* -------------------------------------------------------------------- serve */

PyDoc_STRVAR(fastloop_serve_doc,
"serve(buffer, start, end, in_fd, out_fd, fast_frame_max, codec, decode, encode,\n"
"      process_command, owner) -> (code, start, end, ...)\n"
"\n"
"Serve well-formed requests until one needs the Python loop; the result's\n"
"code is one of the OUTCOME_* constants (see _fastloop.c), then the buffer's\n"
"start and end, then the code's details.");

static PyObject *
fastloop_serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "serve() takes 11 arguments");
        return NULL;
    }
    PyObject *buffer = args[0];
    if (!PyByteArray_CheckExact(buffer)) {
        PyErr_SetString(PyExc_TypeError, "serve(): buffer must be a bytearray");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    int in_fd = (int)PyLong_AsLong(args[3]);
    int out_fd = (int)PyLong_AsLong(args[4]);
    Py_ssize_t fast_frame_max = PyLong_AsSsize_t(args[5]);
    int codec = (int)PyLong_AsLong(args[6]);
    PyObject *decode = args[7];
    PyObject *encode = args[8];
    PyObject *process_command = args[9];
    PyObject *owner = args[10];
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t capacity = PyByteArray_GET_SIZE(buffer);
    if (start < 0 || end < start || end > capacity || fast_frame_max < 1 ||
        fast_frame_max > capacity - HEADER_SIZE || (codec != CODEC_JSON && codec != CODEC_MSGPACK)) {
        PyErr_SetString(PyExc_ValueError, "serve(): inconsistent buffer positions or limits");
        return NULL;
    }

    for (;;) {
        /* The buffer is Python's; it is never resized while Python holds a
         * view of it, but re-read its address after every call into Python
         * all the same. */
        char *base = PyByteArray_AS_STRING(buffer);
        Py_ssize_t avail = end - start;
        Py_ssize_t need = HEADER_SIZE;
        if (avail >= HEADER_SIZE) {
            const unsigned char *h = (const unsigned char *)base + start;
            uint32_t length = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                              ((uint32_t)h[2] << 8) | (uint32_t)h[3];
            if (length == 0 || (Py_ssize_t)length > fast_frame_max) {
                return outcome(OUTCOME_SLOW, start, end);
            }
            need = HEADER_SIZE + (Py_ssize_t)length;
            if (avail >= need) {
                PyObject *request = decode_request(codec, decode, base + start + HEADER_SIZE,
                                                   (Py_ssize_t)length);
                if (request == NULL) {
                    return PyErr_Occurred() ? NULL : outcome(OUTCOME_SLOW, start, end);
                }
                /* The same checks, in the same order, as ProtocolHandler._answer;
                 * anything else is for Python to describe. */
                PyObject *rid = NULL, *command = NULL, *call_args = NULL;
                if (PyDict_CheckExact(request)) {
                    rid = PyDict_GetItemWithError(request, key_id);
                    command = PyDict_GetItemWithError(request, key_command);
                    call_args = PyDict_GetItemWithError(request, key_args);
                }
                if (PyErr_Occurred()) {
                    Py_DECREF(request);
                    return NULL;
                }
                int well_formed = rid != NULL && (PyLong_CheckExact(rid) || PyUnicode_CheckExact(rid)) &&
                                  command != NULL && PyUnicode_CheckExact(command) &&
                                  (call_args == NULL || PyDict_CheckExact(call_args));
                if (!well_formed) {
                    Py_DECREF(request);
                    return outcome(OUTCOME_SLOW, start, end);
                }
                Py_INCREF(rid);
                Py_INCREF(command);
                call_args = call_args ? Py_NewRef(call_args) : PyDict_New();
                Py_DECREF(request);
                if (call_args == NULL) {
                    Py_DECREF(rid);
                    Py_DECREF(command);
                    return NULL;
                }
                /* From here on the frame is consumed: the command runs once. */
                start += need;
                if (start == end) {
                    start = end = 0;
                }
                PyObject *call[2] = {command, call_args};
                PyObject *result = PyObject_Vectorcall(process_command, call, 2, NULL);
                Py_DECREF(call_args);
                if (result == NULL) {
                    if (!ordinary_error_pending()) {
                        Py_DECREF(rid);
                        Py_DECREF(command);
                        return NULL;
                    }
                    return outcome_with(OUTCOME_COMMAND_FAILED, start, end, rid, command,
                                        take_exception());
                }
                PyObject *timestamp = utc_timestamp();
                PyObject *envelope = timestamp ? PyDict_New() : NULL;
                if (envelope == NULL || PyDict_SetItem(envelope, key_id, rid) < 0 ||
                    PyDict_SetItem(envelope, key_success, Py_True) < 0 ||
                    PyDict_SetItem(envelope, key_result, result) < 0 ||
                    PyDict_SetItem(envelope, key_timestamp, timestamp) < 0) {
                    Py_XDECREF(envelope);
                    Py_XDECREF(timestamp);
                    Py_DECREF(result);
                    Py_DECREF(rid);
                    Py_DECREF(command);
                    return NULL;
                }
                Py_DECREF(timestamp);
                Py_DECREF(result);
                PyObject *data = encode_envelope(codec, encode, envelope);
                Py_DECREF(envelope);
                if (data == NULL) {
                    if (!ordinary_error_pending()) {
                        Py_DECREF(rid);
                        Py_DECREF(command);
                        return NULL;
                    }
                    return outcome_with(OUTCOME_UNENCODABLE, start, end, rid, command,
                                        take_exception());
                }
                if ((unsigned long long)PyBytes_GET_SIZE(data) > MAX_ENCODABLE_LENGTH) {
                    Py_DECREF(data);
                    return outcome_with(OUTCOME_UNENCODABLE, start, end, rid, command,
                                        Py_NewRef(Py_None));
                }
                Py_DECREF(rid);
                Py_DECREF(command);
                Py_ssize_t size = PyBytes_GET_SIZE(data);
                unsigned char header[HEADER_SIZE] = {
                    (unsigned char)(size >> 24), (unsigned char)(size >> 16),
                    (unsigned char)(size >> 8), (unsigned char)size};
                Py_ssize_t written = write_frame(out_fd, header, data);
                if (written == HEADER_SIZE + size) {
                    Py_DECREF(data);
                    continue;
                }
                /* Not all out at once (a full pipe, a signal, a closed pipe):
                 * Python finishes or reports it, with signals held back from
                 * now on as while any response is being written (§5.3). */
                if (written < 0) {
                    written = 0;
                }
                if (PyObject_SetAttr(owner, attr_writing, Py_True) < 0) {
                    Py_DECREF(data);
                    return NULL;
                }
                PyObject *header_bytes = PyBytes_FromStringAndSize((const char *)header, HEADER_SIZE);
                return outcome_with(OUTCOME_PARTIAL_WRITE, start, end, header_bytes, data,
                                    PyLong_FromSsize_t(written));
            }
        }
        /* Not a whole frame yet: make room for it, then read. */
        if (start + need > capacity) {
            memmove(base, base + start, (size_t)avail);
            start = 0;
            end = avail;
        }
        /* A signal that arrived while this loop was busy is acted on before
         * blocking (the bridge's watcher thread covers the instant between). */
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
        Py_ssize_t count;
        Py_BEGIN_ALLOW_THREADS
        count = read(in_fd, base + end, (size_t)(capacity - end));
        Py_END_ALLOW_THREADS
        if (count < 0) {
            if (errno == EINTR) {
                continue; /* the handlers run at the top of the next read */
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return outcome(OUTCOME_SLOW, start, end);
            }
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (count == 0) {
            return outcome(OUTCOME_END_OF_INPUT, start, end);
        }
        end += count;
    }
}

/* ------------------------------------------------------------------- module */

static PyMethodDef fastloop_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))fastloop_serve, METH_FASTCALL, fastloop_serve_doc},
    {"decode_json", fastloop_decode_json, METH_O,
     "The fast JSON reader's value for a text, or None where it defers to the stdlib (for tests)."},
    {"encode_json", fastloop_encode_json, METH_O,
     "The fast JSON writer's bytes for a value, or None where it defers to the stdlib (for tests)."},
    {"utc_timestamp", fastloop_utc_timestamp, METH_NOARGS,
     "The envelope timestamp as the fast loop writes it (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastloop_module = {
    PyModuleDef_HEAD_INIT,
    "snakepit_bridge._fastloop",
    "The common case of snakepit_bridge.protocol's stdio loop, in C (optional).",
    -1,
    fastloop_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static PyObject *
intern(const char *text)
{
    return PyUnicode_InternFromString(text);
}

PyMODINIT_FUNC
PyInit__fastloop(void)
{
    key_id = intern("id");
    key_command = intern("command");
    key_args = intern("args");
    key_success = intern("success");
    key_result = intern("result");
    key_timestamp = intern("timestamp");
    attr_writing = intern("_writing");
    empty_text = PyUnicode_FromString("");
    if (!key_id || !key_command || !key_args || !key_success || !key_result || !key_timestamp ||
        !attr_writing || !empty_text) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fastloop_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "OUTCOME_SLOW", OUTCOME_SLOW) < 0 ||
        PyModule_AddIntConstant(module, "OUTCOME_END_OF_INPUT", OUTCOME_END_OF_INPUT) < 0 ||
        PyModule_AddIntConstant(module, "OUTCOME_COMMAND_FAILED", OUTCOME_COMMAND_FAILED) < 0 ||
        PyModule_AddIntConstant(module, "OUTCOME_UNENCODABLE", OUTCOME_UNENCODABLE) < 0 ||
        PyModule_AddIntConstant(module, "OUTCOME_PARTIAL_WRITE", OUTCOME_PARTIAL_WRITE) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_JSON", CODEC_JSON) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_MSGPACK", CODEC_MSGPACK) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
