# engine.pxi — the Cython side of the native engine (included by _kernels.pyx).
#
# Private: bitnet_lab/engine.py builds the arguments (weights as numpy arrays pointing into the
# memory-mapped file, config numbers, caches) and validates everything a user can get wrong;
# this file only turns them into the C structs of src/engine.h, holds references to every
# array whose memory the C side points into, and calls bl_forward / bl_bitlinear WITHOUT the
# GIL. Errors from C come back as bitnet_lab's exceptions with the C message. Each EngineCore
# owns one C workspace (scratch buffers + barrier, src/engine.h) reused by every call, so a
# decode step allocates nothing; a lock keeps two Python threads from sharing it at once.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uintptr_t
from libc.stdlib cimport calloc, free


cdef extern from "engine.h" nogil:
    ctypedef struct bl_tweight:
        int32_t layout
        int32_t has_out_scale
        int64_t M, K, K_pad
        const uint8_t *data
        float gamma
        float out_scale
        int64_t BM, BK, bm
        int32_t epilogue
        const float *block_d

    ctypedef struct bl_fmat:
        int32_t type
        int64_t rows, cols, row_bytes
        const uint8_t *data

    ctypedef struct bl_layer:
        const float *attn_norm
        const float *ffn_norm
        const float *attn_sub_norm
        const float *ffn_sub_norm
        bl_tweight w[7]

    ctypedef struct bl_model:
        int64_t n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab, rot_dim
        int32_t rope_neox, act_relu2, sub_norms, rounding, kv_f16, lm_f16, lm_q8, act_q8k
        float eps, kq_scale
        bl_fmat embed, lm_head
        const float *output_norm
        const bl_layer *layers

    ctypedef struct bl_kv:
        void *k
        void *v
        int64_t n_ctx
        const float *rope_cos
        const float *rope_sin

    ctypedef struct bl_error:
        int code
        char msg[512]

    ctypedef struct bl_ws:
        pass

    int BL_OK, BL_E_KERNEL, BL_E_DATA, BL_E_ARG, BL_E_NOMEM
    int BL_CAP_LAYER_COUNT, BL_CAP_GLOBAL_COUNT, BL_P_COUNT, BL_CHUNK, BL_GEMV_BATCH_MAX
    int BL_PROF_COUNT, BL_PROF_STRIDE, BL_PROF_CPU, BL_SPIN_NS_DEFAULT

    bl_ws *bl_ws_new()
    void bl_ws_free(bl_ws *ws)
    void bl_ws_set_spin_ns(bl_ws *ws, int64_t spin_ns)
    const char *bl_prof_name(int c)

    const char *bl_capture_info(const bl_model *m, int layer, int c, int *dtype, int64_t *width)
    int bl_forward(const bl_model *m, const bl_kv *kv, const int32_t *tokens, int64_t T, int64_t pos0,
                   float *logits, int64_t logits_row0, void *const *caps, int isa, int n_threads,
                   bl_ws *ws, double *prof, bl_error *err)
    int bl_forward_batch(const bl_model *m, const bl_kv *kvs, int64_t n_seq, const int64_t *seq_len,
                         const int64_t *seq_pos0, const int32_t *tokens, float *logits, const uint8_t *want,
                         int isa, int n_threads, bl_ws *ws, double *prof, bl_error *err)
    int bl_bitlinear(const bl_tweight *w, const float *x, int64_t N, float *y, int32_t *acc, int rounding,
                     int isa, int n_threads, bl_error *err)
    void bl_rms_norm_rows(const float *x, const float *w, float *y, int64_t N, int64_t n, float eps, int isa)
    float bl_dot_f32_at(const float *a, const float *b, int64_t n, int isa)
    float bl_expf64(float x)
    int bl_softmax_at(float *s, int64_t n, int f16, int isa)
    int bl_qk_at(const float *q, int64_t R, const void *K, int64_t n, int use_last, int64_t d, int f16,
                 float kq_scale, float *scores, int isa)
    int bl_pv_at(const float *p, int64_t R, const void *V, int64_t n, int use_last, int64_t d, int f16, float *out,
                 int isa)
    int bl_silu_at(const float *g, const float *u, float *f, int64_t n, int isa)
    void bl_f32_to_f16_array(const float *x, uint16_t *y, int64_t n)
    int64_t bl_scan_code3(const uint8_t *data, int64_t n_bytes, int64_t stride, int64_t width, int64_t *first_bad)
    int bl_advise_hugepages(const void *p, size_t n)


ENGINE_CHUNK = BL_CHUNK
GEMV_BATCH_MAX = BL_GEMV_BATCH_MAX
PROF_STRIDE = BL_PROF_STRIDE
PROF_CPU = BL_PROF_CPU
SPIN_NS_DEFAULT = BL_SPIN_NS_DEFAULT
# Names of the profile classes of bl_forward (src/engine.h BL_PROF_*), in column order.
PROF_NAMES = tuple(bl_prof_name(_c).decode() for _c in range(BL_PROF_COUNT))
_CAP_DTYPES = {0: np.float32, 1: np.int8, 2: np.int32}


cdef uintptr_t _addr(a, str what, dtype=None) except 0:
    """Address of the first element of a C-contiguous, non-empty ndarray (kept alive by the
    caller). ``dtype`` (optional) is checked."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(a).__name__}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{what}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise TypeError(f"{what}: array must be C-contiguous")
    if a.size == 0:
        raise ValueError(f"{what}: array is empty")
    return <uintptr_t>a.ctypes.data


cdef double *_prof_ptr(prof, int threads) except NULL:
    """The C timers' array of a forward call: a zeroed float64 (threads, PROF_STRIDE) ndarray."""
    if prof.shape != (threads, BL_PROF_STRIDE):
        raise ValueError(f"prof: expected shape {(threads, BL_PROF_STRIDE)}, got {prof.shape}")
    return <double *>_addr(prof, "prof", np.float64)


cdef _raise(bl_error *err):
    from bitnet_lab.errors import BitnetLabError, CodecError, KernelError
    msg = err.msg.decode("utf-8", "replace")
    if err.code == BL_E_KERNEL:
        raise KernelError(msg)
    if err.code == BL_E_DATA:
        raise CodecError(msg)
    if err.code == BL_E_NOMEM:
        raise MemoryError(msg)
    raise BitnetLabError(msg)


cdef class EngineCore:
    """The C model struct over numpy arrays (see bitnet_lab/engine.py, which builds it).

    ``dims``: dict of the bl_model numbers; ``layers``: one dict per layer with the norm
    weights (f32 arrays or None) and ``w``: 7 tuples ``(layout, data, M, K, K_pad, gamma,
    out_scale or None, (BM, BK, bm) or None[, block scales (M, K/256) f32 or None])`` in projection
    order (the epilogue of every projection follows ``dims["act_q8k"]`` / ``dims["block_epilogue"]``); ``embed``/``lm_head``:
    ``(ftype, array)`` with the array 2-D (rows, row bytes) uint8 or typed rows.
    """

    cdef bl_model model
    cdef bl_layer *layers
    cdef bl_ws *ws
    cdef list _keep
    cdef object _lock
    cdef int _epilogue

    def __cinit__(self):
        self.layers = NULL
        self.ws = bl_ws_new()
        if self.ws == NULL:
            raise MemoryError("EngineCore: cannot allocate the workspace")
        self._keep = []
        import threading
        self._lock = threading.Lock()

    def __dealloc__(self):
        free(self.layers)
        bl_ws_free(self.ws)

    def set_spin_ns(self, int64_t spin_ns):
        """How long a thread waiting at one of the engine's barriers spins before it sleeps."""
        bl_ws_set_spin_ns(self.ws, spin_ns)

    def __init__(self, dict dims, list layers, tuple embed, tuple lm_head, output_norm):
        cdef int64_t L = len(layers)
        cdef int64_t i
        cdef int p
        cdef bl_model *m = &self.model
        self.layers = <bl_layer *>calloc(L if L > 0 else 1, sizeof(bl_layer))
        if self.layers == NULL:
            raise MemoryError("EngineCore: cannot allocate the layer table")
        m.n_layers = L
        m.hidden = dims["hidden"]
        m.n_heads = dims["n_heads"]
        m.n_kv_heads = dims["n_kv_heads"]
        m.head_dim = dims["head_dim"]
        m.ffn = dims["ffn"]
        m.vocab = dims["vocab"]
        m.rot_dim = dims["rot_dim"]
        m.rope_neox = dims["rope_neox"]
        m.act_relu2 = dims["act_relu2"]
        m.sub_norms = dims["sub_norms"]
        m.rounding = dims["rounding"]
        m.kv_f16 = dims["kv_f16"]
        m.lm_f16 = dims["lm_f16"]
        m.lm_q8 = dims["lm_q8"]
        # numerics profile (src/engine.h BL_EPI_*): "act_q8k" 1 = llama.cpp (Q8_K activations, every
        # projection BL_EPI_Q8K); else "block_epilogue" 1 = a bitnet model with non-uniform TQ block
        # scales (every projection BL_EPI_BLOCKS); both absent/0: BL_EPI_TENSOR
        m.act_q8k = dims.get("act_q8k", 0)
        self._epilogue = 2 if m.act_q8k else (1 if dims.get("block_epilogue", 0) else 0)
        m.eps = dims["eps"]
        m.kq_scale = dims["kq_scale"]
        self._set_fmat(&m.embed, embed, "token_embd")
        self._set_fmat(&m.lm_head, lm_head, "lm_head")
        m.output_norm = <const float *>_addr(output_norm, "output_norm", np.float32)
        self._keep.append(output_norm)
        for i in range(L):
            spec = layers[i]
            for key in ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm"):
                arr = spec.get(key)
                if arr is not None:
                    self._keep.append(arr)
            self.layers[i].attn_norm = <const float *>_addr(spec["attn_norm"], "attn_norm", np.float32)
            self.layers[i].ffn_norm = <const float *>_addr(spec["ffn_norm"], "ffn_norm", np.float32)
            if m.sub_norms:
                self.layers[i].attn_sub_norm = <const float *>_addr(spec["attn_sub_norm"], "attn_sub_norm", np.float32)
                self.layers[i].ffn_sub_norm = <const float *>_addr(spec["ffn_sub_norm"], "ffn_sub_norm", np.float32)
            for p in range(BL_P_COUNT):
                self._set_tweight(&self.layers[i].w[p], spec["w"][p])
        m.layers = self.layers

    cdef _set_fmat(self, bl_fmat *f, tuple spec, str what):
        ftype, arr = spec
        f.type = ftype
        f.rows = self.model.vocab
        f.cols = self.model.hidden
        f.row_bytes = arr.nbytes // f.rows
        f.data = <const uint8_t *>_addr(arr, what)
        self._keep.append(arr)

    cdef _set_tweight(self, bl_tweight *w, tuple spec):
        layout, data, M, K, K_pad, gamma, out_scale, tiling = spec[:8]
        block_d = spec[8] if len(spec) > 8 else None  # (M, K/256) f32 block scales or None
        w.layout = layout
        w.epilogue = self._epilogue
        w.block_d = NULL
        if block_d is not None:
            if w.epilogue == 0:  # per-block scales under the per-tensor epilogue would use γ = 0
                raise ValueError("block scales given but dims['block_epilogue'] is 0 (PreparedWeights.block_mode)")
            if block_d.dtype != np.float32 or block_d.shape != (M, K // 256) or not block_d.flags.c_contiguous:
                raise ValueError(f"block scales: expected contiguous float32 {(M, K // 256)}, got "
                                 f"{block_d.dtype} {block_d.shape}")
            w.block_d = <const float *>_addr(block_d, "block scales", np.float32)
            self._keep.append(block_d)
        w.M = M
        w.K = K
        w.K_pad = K_pad
        w.data = <const uint8_t *>_addr(data, "weight data", np.uint8)
        w.gamma = gamma
        w.has_out_scale = out_scale is not None
        w.out_scale = out_scale if out_scale is not None else 1.0
        if tiling is not None:
            w.BM, w.BK, w.bm = tiling
        self._keep.append(data)

    def capture_specs(self):
        """[(name, dtype, width)] of the per-layer captures, then of the global ones."""
        cdef int dt
        cdef int64_t width
        cdef int c
        per_layer, glob = [], []
        for c in range(BL_CAP_LAYER_COUNT):
            name = bl_capture_info(&self.model, 1, c, &dt, &width)
            per_layer.append((name.decode(), _CAP_DTYPES[dt], width))
        for c in range(BL_CAP_GLOBAL_COUNT):
            name = bl_capture_info(&self.model, 0, c, &dt, &width)
            glob.append((name.decode(), _CAP_DTYPES[dt], width))
        return per_layer, glob

    def forward(self, tokens, k, v, int64_t n_ctx, cos, sin, int64_t pos0, logits, int64_t logits_row0,
                caps, int isa, int threads, prof=None):
        """Run bl_forward (arguments as in engine.h; validated by bitnet_lab/engine.py).
        ``prof``: None or a zeroed float64 array (threads, PROF_STRIDE) the C side adds ns to."""
        cdef bl_kv kv
        cdef bl_error err
        cdef int64_t T = tokens.shape[0]
        cdef int rc
        cdef int64_t ncap, i
        cdef void **cap_ptrs = NULL
        cdef double *prof_ptr = NULL
        if prof is not None:
            prof_ptr = _prof_ptr(prof, threads)
        cdef const int32_t *tok = <const int32_t *>_addr(tokens, "tokens", np.int32)
        cdef float *out = <float *>_addr(logits, "logits", np.float32)
        kv.k = <void *>_addr(k, "cache k")
        kv.v = <void *>_addr(v, "cache v")
        kv.n_ctx = n_ctx
        kv.rope_cos = <const float *>_addr(cos, "rope cos", np.float32)
        kv.rope_sin = <const float *>_addr(sin, "rope sin", np.float32)
        if caps is not None:
            ncap = self.model.n_layers * BL_CAP_LAYER_COUNT + BL_CAP_GLOBAL_COUNT
            if len(caps) != ncap:
                raise ValueError(f"caps: expected {ncap} entries, got {len(caps)}")
            cap_ptrs = <void **>calloc(ncap, sizeof(void *))
            if cap_ptrs == NULL:
                raise MemoryError("forward: cannot allocate the capture table")
            try:
                for i in range(ncap):
                    if caps[i] is not None:
                        cap_ptrs[i] = <void *>_addr(caps[i], "capture")
            except BaseException:
                free(cap_ptrs)
                raise
        with self._lock:
            with nogil:
                rc = bl_forward(&self.model, &kv, tok, T, pos0, out, logits_row0, cap_ptrs, isa, threads, self.ws,
                                prof_ptr, &err)
        free(cap_ptrs)
        if rc != BL_OK:
            _raise(&err)

    def forward_batch(self, tokens, list ks, list vs, n_ctx, cos, sin, seq_len, seq_pos0, logits, want,
                      int isa, int threads, prof=None):
        """Run bl_forward_batch: sequence i's cache is (ks[i], vs[i], n_ctx[i]); ``seq_len`` /
        ``seq_pos0``: int64 arrays; ``want``: uint8 per row (validated by bitnet_lab/engine).
        ``prof``: None or a zeroed float64 array (threads, PROF_STRIDE), as in ``forward``."""
        cdef bl_error err
        cdef int rc
        cdef int64_t n = len(ks), i
        cdef double *prof_ptr = NULL
        if prof is not None:
            prof_ptr = _prof_ptr(prof, threads)
        if len(vs) != n or seq_len.shape[0] != n or seq_pos0.shape[0] != n or len(n_ctx) != n:
            raise ValueError(f"forward_batch: {n} caches but {len(vs)} V caches, {seq_len.shape[0]} lengths, "
                             f"{seq_pos0.shape[0]} positions, {len(n_ctx)} sizes")
        cdef const int32_t *tok = <const int32_t *>_addr(tokens, "tokens", np.int32)
        cdef float *out = <float *>_addr(logits, "logits", np.float32)
        cdef const int64_t *lens = <const int64_t *>_addr(seq_len, "seq_len", np.int64)
        cdef const int64_t *pos = <const int64_t *>_addr(seq_pos0, "seq_pos0", np.int64)
        cdef const uint8_t *wp = <const uint8_t *>_addr(want, "want", np.uint8)
        cdef const float *cp = <const float *>_addr(cos, "rope cos", np.float32)
        cdef const float *sp = <const float *>_addr(sin, "rope sin", np.float32)
        cdef bl_kv *kvs = <bl_kv *>calloc(n if n > 0 else 1, sizeof(bl_kv))
        if kvs == NULL:
            raise MemoryError("forward_batch: cannot allocate the cache table")
        try:
            for i in range(n):
                kvs[i].k = <void *>_addr(ks[i], "cache k")
                kvs[i].v = <void *>_addr(vs[i], "cache v")
                kvs[i].n_ctx = n_ctx[i]
                kvs[i].rope_cos = cp
                kvs[i].rope_sin = sp
        except BaseException:
            free(kvs)
            raise
        with self._lock:
            with nogil:
                rc = bl_forward_batch(&self.model, kvs, n, lens, pos, tok, out, wp, isa, threads, self.ws, prof_ptr,
                                      &err)
        free(kvs)
        if rc != BL_OK:
            _raise(&err)

    def bitlinear(self, int layer, int slot, x, int isa, int threads, bint want_acc):
        """One projection of layer ``layer`` (slot in projection order) on x (N, K) f32 rows:
        returns (y (N, M) f32, acc (N, M) int32 or None)."""
        cdef bl_error err
        cdef int rc
        cdef bl_tweight *w = &self.layers[layer].w[slot]
        cdef int64_t N = x.shape[0]
        y = np.empty((N, w.M), dtype=np.float32)
        acc = np.empty((N, w.M), dtype=np.int32) if want_acc else None
        cdef const float *xp = <const float *>_addr(x, "x", np.float32)
        cdef float *yp = <float *>_addr(y, "y", np.float32)
        cdef int32_t *ap = NULL
        if want_acc:
            ap = <int32_t *>_addr(acc, "acc", np.int32)
        with nogil:
            rc = bl_bitlinear(w, xp, N, yp, ap, self.model.rounding, isa, threads, &err)
        if rc != BL_OK:
            _raise(&err)
        return y, acc


def advise_hugepages(a):
    """madvise(MADV_HUGEPAGE) over the memory of a contiguous array (a hint to map it with 2 MiB
    pages; src/engine.h). True when the kernel accepted it."""
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or a.size == 0:
        return False
    return bl_advise_hugepages(<const void *><uintptr_t>a.ctypes.data, a.nbytes) == 0


def scan_code3(data, int64_t stride, int64_t width):
    """(bad byte count, first bad byte or -1): bytes holding the invalid 2-bit code 3 among the
    first ``width`` bytes of every ``stride``-byte group of a contiguous uint8 array (I2_S:
    stride = width = 1 is fine; TQ2_0: 66, 64). Runs without the GIL at memory speed."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or not data.flags.c_contiguous:
        raise TypeError("scan_code3: expected a C-contiguous uint8 array")
    if stride < 1 or width < 1 or width > stride:
        raise ValueError(f"scan_code3: need 1 <= width <= stride, got width {width}, stride {stride}")
    cdef int64_t first = -1, n_bad = 0, n = data.size
    cdef const uint8_t *p = NULL
    if n:
        p = <const uint8_t *>_addr(data, "data")
        with nogil:
            n_bad = bl_scan_code3(p, n, stride, width, &first)
    return int(n_bad), int(first)


def engine_rms_norm(x, w, float eps, int isa):
    """Test hook: the engine's RMSNorm of each row of x (N, n) f32 with weight w (n,) f32, with the
    float kernels of ISA level ``isa`` (index into ISA_ORDER)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    y = np.empty_like(x)
    bl_rms_norm_rows(<const float *>_addr(x, "x"), <const float *>_addr(w, "w"), <float *>_addr(y, "y"),
                     x.shape[0], x.shape[1], eps, isa)
    return y


def engine_dot_f32(a, b, int isa):
    """Test hook: the engine's canonical-order f32 dot of two 1-D f32 arrays at ISA level ``isa``."""
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    b = np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"engine_dot_f32: shapes {a.shape} and {b.shape} differ")
    return float(bl_dot_f32_at(<const float *>_addr(a, "a"), <const float *>_addr(b, "b"), a.shape[0], isa))


def engine_expf(x):
    """Test hook: the engine's softmax exp, fl32(e^x) through float64 (src/engine_float.h), of a
    1-D f32 array."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    y = np.empty_like(x)
    cdef const float[::1] xv = x
    cdef float[::1] yv = y
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        yv[i] = bl_expf64(xv[i])
    return y


def engine_softmax(x, int isa, bint f16=False):
    """Test hook: the attention softmax (src/engine_float.h order) of a 1-D f32 array at ISA level
    ``isa`` (index into ISA_ORDER); ``f16``: the probabilities rounded to fp16."""
    y = np.array(x, dtype=np.float32, copy=True).reshape(-1)
    if bl_softmax_at(<float *>_addr(y, "x", np.float32), y.shape[0], f16, isa) != 0:
        raise ValueError(f"engine_softmax: ISA level {isa} is not available")
    return y


def _kv_rows(rows, name):
    """(n, d) float32 or float16 rows for the attention hooks, C-contiguous; f16 flag."""
    a = np.asarray(rows)
    if a.dtype not in (np.float32, np.float16) or a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name}: need a non-empty (n, d) float32 or float16 array, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a), a.dtype == np.float16


def engine_qk(q, K, float kq_scale, int isa, bint use_last=False):
    """Test hook: scores (R, n) of R query heads q (R, d) f32 against the rows of K (n, d), f32 or
    fp16, through the engine's GQA-group kernel at ISA level ``isa``; ``use_last``: K's last row
    goes in as the decode's private row."""
    k, f16 = _kv_rows(K, "engine_qk")
    qa = np.ascontiguousarray(q, dtype=np.float32)
    if qa.ndim != 2 or qa.shape[1] != k.shape[1]:
        raise ValueError(f"engine_qk: q {qa.shape} does not match K {k.shape}")
    s = np.empty((qa.shape[0], k.shape[0]), np.float32)
    if bl_qk_at(<const float *>_addr(qa, "q"), qa.shape[0], <const void *>_addr(k, "K", k.dtype), k.shape[0], use_last,
                k.shape[1], f16, kq_scale, <float *>_addr(s, "scores"), isa) != 0:
        raise ValueError(f"engine_qk: ISA level {isa} is not available")
    return s


def engine_pv(p, V, int isa, bint use_last=False):
    """Test hook: out (R, d) = p (R, n) f32 times the rows of V (n, d), f32 or fp16, through the
    engine's GQA-group kernel at ISA level ``isa`` (``use_last`` as in engine_qk)."""
    v, f16 = _kv_rows(V, "engine_pv")
    pa = np.ascontiguousarray(p, dtype=np.float32)
    if pa.ndim != 2 or pa.shape[1] != v.shape[0]:
        raise ValueError(f"engine_pv: p {pa.shape} does not match V {v.shape}")
    out = np.empty((pa.shape[0], v.shape[1]), np.float32)
    if bl_pv_at(<const float *>_addr(pa, "p"), pa.shape[0], <const void *>_addr(v, "V", v.dtype), v.shape[0], use_last,
                v.shape[1], f16, <float *>_addr(out, "out"), isa) != 0:
        raise ValueError(f"engine_pv: ISA level {isa} is not available")
    return out


def engine_silu(g, u, int isa):
    """Test hook: the SiLU-gated activation fl32(fl32(g / (1 + e^-g)) · u) (float64 SiLU, src/
    engine_float.h) of two 1-D f32 arrays at ISA level ``isa``."""
    g = np.ascontiguousarray(g, dtype=np.float32).reshape(-1)
    u = np.ascontiguousarray(u, dtype=np.float32).reshape(-1)
    if g.shape != u.shape:
        raise ValueError(f"engine_silu: shapes {g.shape} and {u.shape} differ")
    f = np.empty_like(g)
    if bl_silu_at(<const float *>_addr(g, "g"), <const float *>_addr(u, "u"), <float *>_addr(f, "f"), g.shape[0], isa) != 0:
        raise ValueError(f"engine_silu: ISA level {isa} is not available")
    return f


def engine_f32_to_f16(x):
    """Test hook: the engine's f32 -> fp16 rounding (bits as uint16) of a 1-D f32 array."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    y = np.empty(x.shape, dtype=np.uint16)
    bl_f32_to_f16_array(<const float *>_addr(x, "x"), <uint16_t *>_addr(y, "y"), x.shape[0])
    return y
