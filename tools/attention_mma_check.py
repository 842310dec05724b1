#!/usr/bin/env python3
"""attention_mma_check.py -- host-side checks of src/backend/cuda/attention_mma.cu, no GPU needed.

Two things the GPU test (tests/backend/test_cuda_ops.c) can only show on a GPU:

  fragments  one warp's index math, emulated lane by lane with the PTX ISA's
             semantics of ldmatrix (.x4, with and without .trans) and
             mma.m16n8k16 (A row, B col, f32 C): the kernel's Q A-fragments,
             its ldmatrix row addresses for K and V, P taken from the score
             accumulators as A, and the output mapping must give exactly
             S = Q K^T and O = S V; the 8 row addresses of every 8x8 matrix
             must fall in 8 different 16-byte bank groups (padded rows).
             The formulas are written here as the kernel writes them: change
             both together.
  loads      load_chunk's copy plan: 4 threads a key row, each every 4th
             16-byte piece, must copy every piece of every row of a chunk
             exactly once; the key's block from the multiply-high (the host's
             magic number) must be key / block_size for every block size.
  rounding   the kernel's arithmetic on the test's inputs (Q * q_scale and the
             weights rounded to bfloat16 / float16, weights taken against a
             reference that moves only when a chunk's score passes it by 2^8
             in any row of the warp, the lazy rescaling, and summed as
             rounded) against exact attention over the same 16-bit K/V: the
             error behind test_cuda_ops' tensor_core_tolerance, in units of u
             (2^-8, 2^-11).

Run: build/venv/bin/python tools/attention_mma_check.py  (numpy)
"""
import numpy as np

CHUNK = 64
LOG2E = 1.4426950408889634
RESCALE_BITS = 8


# ---- fragments ----

def mma_m16n8k16(c, a, b0, b1):
    """c[lane] = 4 floats (C layout), a[lane] = 4 registers, b0/b1[lane] = 1 register; a register is (lo, hi)."""
    A, B, C = np.full((16, 16), np.nan), np.full((16, 8), np.nan), np.zeros((16, 8))
    for l in range(32):
        g, t = l >> 2, l & 3
        for r, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
            A[row, col], A[row, col + 1] = a[l][r]
        B[2 * t, g], B[2 * t + 1, g] = b0[l]
        B[2 * t + 8, g], B[2 * t + 9, g] = b1[l]
        C[g, 2 * t], C[g, 2 * t + 1], C[g + 8, 2 * t], C[g + 8, 2 * t + 1] = c[l]
    assert not np.isnan(A).any() and not np.isnan(B).any()
    D = A @ B + C
    for l in range(32):
        g, t = l >> 2, l & 3
        c[l] = [D[g, 2 * t], D[g, 2 * t + 1], D[g + 8, 2 * t], D[g + 8, 2 * t + 1]]


def ldmatrix_x4(mem, addrs, trans):
    """mem: byte address -> 16-bit element; lanes 8i..8i+7 give matrix i's row addresses."""
    out = [[None] * 4 for _ in range(32)]
    for i in range(4):
        rows = addrs[8 * i:8 * i + 8]
        assert all(a % 16 == 0 for a in rows), "ldmatrix rows are 16-byte aligned"
        assert len({a // 16 % 8 for a in rows}) == 8, "bank conflict"
        M = np.array([[mem[a + 2 * c] for c in range(8)] for a in rows])
        if trans:
            M = M.T
        for l in range(32):
            out[l][i] = (M[l >> 2, 2 * (l & 3)], M[l >> 2, 2 * (l & 3) + 1])
    return out


def check_fragments(D, rng):
    STRIDE, FEAT_STEPS, OUT_BLOCKS, KEY_BLOCKS, KEY_STEPS = 2 * D + 16, D // 16, D // 8, CHUNK // 8, CHUNK // 16
    Q, K, V = (rng.standard_normal((n, D)) for n in (16, CHUNK, CHUNK))
    kv = 4096  # the stage's shared address: K rows, then V rows
    mem = {}
    for c in range(CHUNK):
        for d in range(D):
            mem[kv + c * STRIDE + 2 * d] = K[c, d]
            mem[kv + CHUNK * STRIDE + c * STRIDE + 2 * d] = V[c, d]
    qa = [[None] * FEAT_STEPS for _ in range(32)]
    for l in range(32):
        g, t = l >> 2, l & 3
        for kk in range(FEAT_STEPS):
            pair = lambda r, d: (Q[r, d], Q[r, d + 1])
            qa[l][kk] = [pair(g, 16 * kk + 2 * t), pair(g + 8, 16 * kk + 2 * t),
                         pair(g, 16 * kk + 2 * t + 8), pair(g + 8, 16 * kk + 2 * t + 8)]
    s = [[[0.0] * 4 for _ in range(32)] for _ in range(KEY_BLOCKS)]
    k_lane = [kv + ((l & 7) + (l >> 4) * 8) * STRIDE + ((l >> 3) & 1) * 16 for l in range(32)]
    for kb in range(KEY_BLOCKS // 2):
        for kk in range(FEAT_STEPS):
            b = ldmatrix_x4(mem, [k_lane[l] + kb * 16 * STRIDE + kk * 32 for l in range(32)], False)
            a = [qa[l][kk] for l in range(32)]
            mma_m16n8k16(s[2 * kb], a, [x[0] for x in b], [x[1] for x in b])
            mma_m16n8k16(s[2 * kb + 1], a, [x[2] for x in b], [x[3] for x in b])
    S = Q @ K.T
    for jb in range(KEY_BLOCKS):
        for l in range(32):
            g, t = l >> 2, l & 3
            for e in range(4):  # s[jb][e]: row g + 8 (e >> 1), key 8jb + 2t + (e & 1)
                assert abs(s[jb][l][e] - S[g + 8 * (e >> 1), 8 * jb + 2 * t + (e & 1)]) < 1e-9
    pa = [[[None] * 4 for _ in range(KEY_STEPS)] for _ in range(32)]  # the scores themselves as weights
    for l in range(32):
        for jb in range(KEY_BLOCKS):
            pa[l][jb // 2][(jb & 1) * 2] = (s[jb][l][0], s[jb][l][1])
            pa[l][jb // 2][(jb & 1) * 2 + 1] = (s[jb][l][2], s[jb][l][3])
    o = [[[0.0] * 4 for _ in range(32)] for _ in range(OUT_BLOCKS)]
    v_lane = [kv + CHUNK * STRIDE + ((l & 7) + ((l >> 3) & 1) * 8) * STRIDE + (l >> 4) * 16 for l in range(32)]
    for ks in range(KEY_STEPS):
        for nb in range(OUT_BLOCKS // 2):
            b = ldmatrix_x4(mem, [v_lane[l] + ks * 16 * STRIDE + nb * 32 for l in range(32)], True)
            a = [pa[l][ks] for l in range(32)]
            mma_m16n8k16(o[2 * nb], a, [x[0] for x in b], [x[1] for x in b])
            mma_m16n8k16(o[2 * nb + 1], a, [x[2] for x in b], [x[3] for x in b])
    out = np.full((16, D), np.nan)
    for l in range(32):
        g, t = l >> 2, l & 3
        for h in range(2):
            for nb in range(OUT_BLOCKS):
                out[g + 8 * h, 8 * nb + 2 * t], out[g + 8 * h, 8 * nb + 2 * t + 1] = o[nb][l][2 * h], o[nb][l][2 * h + 1]
    O = S @ V
    assert np.abs(out - O).max() <= 1e-9 * np.abs(O).max()
    print(f"fragments, head_dim {D}: S, P, O and conflict-free ldmatrix rows as the PTX ISA lays them out")


# ---- loads ----

THREADS = 256


def check_loads(D):
    """load_chunk's (thread, step) -> (key row, piece) plan covers a chunk's pieces exactly once."""
    pieces, key_threads = 2 * D // 16, THREADS // CHUNK
    steps = (pieces + key_threads - 1) // key_threads
    seen = {}
    for tid in range(THREADS):
        c, first = tid // key_threads, tid % key_threads
        for it in range(steps):
            piece = first + it * key_threads
            if piece < pieces:  # the kernel's `mine`
                seen[(c, piece)] = seen.get((c, piece), 0) + 1
    assert sorted(seen) == [(c, p) for c in range(CHUNK) for p in range(pieces)] and set(seen.values()) == {1}
    print(f"loads, head_dim {D}: every 16-byte piece of a chunk copied once")


def check_block_division():
    """The host's magic number and the kernel's multiply-high give key / block_size for keys below 2^31."""
    rng = np.random.default_rng(2)
    keys = np.concatenate([np.arange(70000), rng.integers(0, 2 ** 31, 20000), [2 ** 31 - 1]]).astype(np.uint64)
    for bs in range(1, 300):
        shift = 0
        while (1 << shift) < bs:
            shift += 1
        mul = ((1 << 32) * ((1 << shift) - bs) // bs + 1) & 0xFFFFFFFF
        q = (((keys * np.uint64(mul)) >> np.uint64(32)) + keys) >> np.uint64(shift)
        assert (q == keys // np.uint64(bs)).all(), bs
    print("loads: key / block_size by multiply-high for block sizes 1 to 299")


# ---- rounding ----

def bf16(x):
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


def f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def rope(x, pos):
    half = x.shape[1] // 2
    ang = pos[:, None] * 10000.0 ** (-2.0 * np.arange(half) / x.shape[1])[None, :]
    a, b = x[:, :half], x[:, half:]
    return np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], 1)


def check_rounding(rnd, u, D, ctx, q_len, heads, rng):
    """Largest |kernel - exact| over `heads` heads of one sequence, as test_cuda_ops draws its inputs."""
    scale, worst = 2.0 / np.sqrt(D), 0.0  # the test's sharper-than-usual scale
    for _ in range(heads):
        k = rnd(rope(rng.uniform(-1, 1, (ctx, D)), np.arange(ctx)))
        v = rnd(rng.uniform(-1, 1, (ctx, D)))
        q = rng.uniform(-1, 1, (q_len, D)).astype(np.float32)
        hidden = np.arange(ctx)[None, :] > (ctx - q_len + np.arange(q_len))[:, None]
        s = q.astype(np.float64) @ k.T * scale * LOG2E
        s[hidden] = -np.inf
        w = np.exp2(s - s.max(1, keepdims=True))
        exact = w @ v / w.sum(1, keepdims=True)
        s = rnd(q * np.float32(scale * LOG2E)).astype(np.float64) @ k.T
        s[hidden] = -np.inf
        n_chunks = (ctx + CHUNK - 1) // CHUNK
        top = np.stack([s[:, CHUNK * i:CHUNK * (i + 1)].max(1) for i in range(n_chunks)], 1)
        ref = np.full(q_len, -np.inf)
        at = np.empty((q_len, n_chunks))  # the reference each chunk's weights were taken against
        for i in range(n_chunks):
            for w0 in range(0, q_len, 16):  # a warp's 16 rows move their references together or not at all
                rows = slice(w0, w0 + 16)
                if (top[rows, i] > ref[rows] + RESCALE_BITS).any():
                    ref[rows] = np.maximum(ref[rows], top[rows, i])
            at[:, i] = ref
        assert (s - np.repeat(at, CHUNK, 1)[:, :ctx] <= RESCALE_BITS).all(), "a weight above 2^8"
        at = np.repeat(at, CHUNK, 1)[:, :ctx]
        p = rnd(np.exp2(s - at)) * np.exp2(at - ref[:, None])
        worst = max(worst, np.abs(p @ v / p.sum(1, keepdims=True) - exact).max())
    return worst / u


def main():
    rng = np.random.default_rng(1)
    for D in (64, 80, 96, 128):
        check_fragments(D, rng)
        check_loads(D)
    check_block_division()
    worst = 0.0
    for name, rnd, u in (("bfloat16", bf16, 2.0 ** -8), ("float16", f16, 2.0 ** -11)):
        for D in (64, 80, 96, 128):
            for ctx, q_len, heads in ((300, 300, 48), (3000, 200, 4)):
                e = check_rounding(rnd, u, D, ctx, q_len, heads, rng)
                worst = max(worst, e)
                print(f"rounding, {name} head_dim {D}, {q_len} queries over {ctx} keys: at most {e:.2f} u")
    print(f"rounding: at most {worst:.2f} u (test_cuda_ops allows 3u + 3u |x|)")
    assert worst < 1.5, "the rounding emulated is past half of test_cuda_ops' tolerance"


if __name__ == "__main__":
    main()
