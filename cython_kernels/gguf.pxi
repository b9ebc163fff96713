# gguf.pxi — the one loop of the GGUF reader that runs in compiled code (included by _kernels.pyx).
#
# A GGUF string array is `count` strings, each a u64 little-endian byte length then that many
# UTF-8 bytes (docs/formats.md#1-the-gguf-container). The tokenizer arrays of a Llama-3 vocabulary hold
# 408 403 of them: a Python loop over them was most of a 2B-4T file's load
# (docs/benchmarks.md#load-and-start-up). This walks the same bytes with the same checks;
# bitnet_lab.formats.gguf turns a non-zero status into its error.

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t

GGUF_STRINGS_OK = 0
GGUF_STRINGS_TRUNCATED_LENGTH = 1  # fewer than 8 bytes left for the length
GGUF_STRINGS_TOO_LONG = 2          # the length runs past the end of the buffer
GGUF_STRINGS_BAD_UTF8 = 3          # the bytes are not valid UTF-8


def gguf_strings(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t count):
    """The ``count`` length-prefixed strings of ``buf`` from byte ``pos``, as
    ``(strings, pos, index, status)``: on success the list of all of them, the offset after the
    last, ``count`` and 0; otherwise the strings before the bad one, the offset of the bad one's
    length field, its index and a GGUF_STRINGS_* status. Never reads outside ``buf``."""
    cdef Py_ssize_t end = buf.shape[0], i
    cdef uint64_t n
    cdef const uint8_t *p
    cdef int b
    if pos < 0 or pos > end or count < 0:
        raise ValueError(f"gguf_strings: position {pos} / count {count} outside a {end}-byte buffer")
    out = []
    for i in range(count):
        if end - pos < 8:
            return out, pos, i, GGUF_STRINGS_TRUNCATED_LENGTH
        p = &buf[pos]
        n = 0
        for b in range(8):  # little-endian whatever the host's order
            n |= (<uint64_t>p[b]) << (8 * b)
        if n > <uint64_t>(end - pos - 8):
            return out, pos, i, GGUF_STRINGS_TOO_LONG
        try:
            s = PyUnicode_DecodeUTF8(<const char *>(p + 8), <Py_ssize_t>n, NULL)
        except UnicodeDecodeError:
            return out, pos, i, GGUF_STRINGS_BAD_UTF8
        out.append(s)
        pos += 8 + <Py_ssize_t>n
    return out, pos, count, GGUF_STRINGS_OK
