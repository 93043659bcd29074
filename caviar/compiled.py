"""The compiled kernels of ``caviar.kernels``, defined with numba (imported only when a kernel
is first needed: numba's import alone takes 0.2 s). Module-level functions, so numba caches
their machine code on disk (a function that calls another through a closure is compiled
again in every process). Read ``caviar/kernels.py`` for what they promise."""

from __future__ import annotations

import numba
import numpy

jit = numba.njit(cache=True, nogil=True, error_model="numpy")


# -- optimizer updates over (K, P) rows ------------------------------------------------------
# One call updates every parameter of a step: ``grads`` is a tuple of (K, n_i) gradients, the
# i-th covering the columns starts[i] .. starts[i] + n_i of the parameter p and its state (a
# population's parameters are column blocks of one (K, P) array); it is taken as g + d * p,
# d = decays[i], where the step left the L2 term's gradient to the update (with_decay[i]). Each
# row is taken as 1-D slices with its coefficients in locals and the decay test outside the
# inner loop: that is what lets the compiler vectorize it (4-5x faster than 2-D indexing).
# A gradient with a decay is a weight's (n_i // hs[i] rows of hs[i] columns, C order): its
# updated values' squares are summed as member_squares sums them (``_row_squares``) into
# squares[k, i], the next step's L2 term, right after the member's block is updated, while it
# is in cache. The update itself runs over the block as one row of n_i: summing the squares
# in the update's own loop, row by row, cost 1.3-1.6x as much on rows of 32 and 2.9x on rows
# of 10 (a row's slices and its loop's set-up for a few elements; AMD EPYC, AVX2).
@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _row_squares(pk, n, h, cols, negzero):
    # the squares of pk[:n], rows of h, summed as member_squares sums them: over the rows, row
    # after row, into cols from -0.0 (which adding the first row leaves as that row), then the
    # column sums pairwise
    for j in range(h):
        cols[j] = negzero
    for r in range(0, n, h):
        pr = pk[r:r + h]
        for j in range(h):
            cols[j] = cols[j] + pr[j] * pr[j]
    return pairwise_sum(cols, 0, h, negzero)


@jit
def _sgd_rows(p, g, lr, d, with_decay, start, h, squares, i, cols, negzero):  # p -= lr * g
    n = g.shape[1]
    for k in range(g.shape[0]):
        pk, gk, a, c = p[k, start:start + n], g[k], lr[k], d[k]
        if with_decay:
            for j in range(n):
                pk[j] = pk[j] - a * (gk[j] + c * pk[j])
            squares[k, i] = _row_squares(pk, n, h, cols, negzero)
        else:
            for j in range(n):
                pk[j] = pk[j] - a * gk[j]


@jit
def sgd(p, grads, starts, decays, with_decay, hs, squares, cols, consts, lr):
    for i in range(len(grads)):
        _sgd_rows(p, grads[i], lr, decays[i], with_decay[i], starts[i], hs[i], squares, i, cols, consts[0])


@jit
def _momentum_rows(p, g, v, beta, one_minus, scale, d, with_decay, start, h, squares, i, cols, negzero):
    n = g.shape[1]
    for k in range(g.shape[0]):
        pk, gk, vk = p[k, start:start + n], g[k], v[k, start:start + n]
        b, c, a, dd = beta[k], one_minus[k], scale[k], d[k]
        if with_decay:
            for j in range(n):
                vv = vk[j] * b + (gk[j] + dd * pk[j]) * c
                vk[j] = vv
                pk[j] = pk[j] - vv * a
            squares[k, i] = _row_squares(pk, n, h, cols, negzero)
        else:
            for j in range(n):
                vv = vk[j] * b + gk[j] * c
                vk[j] = vv
                pk[j] = pk[j] - vv * a


@jit
def momentum(p, grads, starts, decays, with_decay, hs, squares, cols, consts, v, beta, one_minus, scale):
    for i in range(len(grads)):
        _momentum_rows(p, grads[i], v, beta, one_minus, scale, decays[i], with_decay[i], starts[i], hs[i], squares, i,
                       cols, consts[0])


@jit
def _rmsprop_rows(p, g, s, beta2, one_minus, eps, lr, d, with_decay, start, h, squares, i, cols, negzero):
    n = g.shape[1]
    for k in range(g.shape[0]):
        pk, gk, sk = p[k, start:start + n], g[k], s[k, start:start + n]
        b, c, e, a, dd = beta2[k], one_minus[k], eps[k], lr[k], d[k]
        if with_decay:
            for j in range(n):
                gg = gk[j] + dd * pk[j]
                ss = sk[j] * b + (gg * gg) * c
                sk[j] = ss
                pk[j] = pk[j] - (gg / (numpy.sqrt(ss) + e)) * a
            squares[k, i] = _row_squares(pk, n, h, cols, negzero)
        else:
            for j in range(n):
                gg = gk[j]
                ss = sk[j] * b + (gg * gg) * c
                sk[j] = ss
                pk[j] = pk[j] - (gg / (numpy.sqrt(ss) + e)) * a


@jit
def rmsprop(p, grads, starts, decays, with_decay, hs, squares, cols, consts, s, beta2, one_minus, eps, lr):
    for i in range(len(grads)):
        _rmsprop_rows(p, grads[i], s, beta2, one_minus, eps, lr, decays[i], with_decay[i], starts[i], hs[i], squares, i,
                      cols, consts[0])


@jit
def _adam_rows(p, g, v, s, beta1, one_minus1, beta2, one_minus2, correct2, eps, step, d, with_decay, start, h, squares,
               i, cols, negzero):
    n = g.shape[1]
    for k in range(g.shape[0]):
        pk, gk, vk, sk = p[k, start:start + n], g[k], v[k, start:start + n], s[k, start:start + n]
        b1, c1, b2, c2, h2, e, a, dd = (beta1[k], one_minus1[k], beta2[k], one_minus2[k], correct2[k], eps[k],
                                        step[k], d[k])
        if with_decay:
            for j in range(n):
                gg = gk[j] + dd * pk[j]
                vv = vk[j] * b1 + gg * c1
                vk[j] = vv
                ss = sk[j] * b2 + (gg * gg) * c2
                sk[j] = ss
                pk[j] = pk[j] - (vv / (numpy.sqrt(ss * h2) + e)) * a
            squares[k, i] = _row_squares(pk, n, h, cols, negzero)
        else:
            for j in range(n):
                gg = gk[j]
                vv = vk[j] * b1 + gg * c1
                vk[j] = vv
                ss = sk[j] * b2 + (gg * gg) * c2
                sk[j] = ss
                pk[j] = pk[j] - (vv / (numpy.sqrt(ss * h2) + e)) * a


@jit
def adam(p, grads, starts, decays, with_decay, hs, squares, cols, consts, v, s, beta1, one_minus1, beta2, one_minus2,
         correct2, eps, step):
    for i in range(len(grads)):
        _adam_rows(p, grads[i], v, s, beta1, one_minus1, beta2, one_minus2, correct2, eps, step, decays[i],
                   with_decay[i], starts[i], hs[i], squares, i, cols, consts[0])


# -- NumPy's pairwise sum, one block ------------------------------------------------------
# inlined where a kernel calls it once per short row (rows of logits): a call per row of 10
# terms cost 4x the sum itself (35 against 8 us on (32, 64, 10))
@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def block_sum(a, n, negzero):
    # the first n terms of a, as one block (up to 128 terms) of NumPy's pairwise sum
    # (numpy/_core/src/umath/loops_utils.h): under 8 terms one by one from -0.0; else eight
    # running sums combined as a tree, then the rest
    if n < 8:
        res = negzero
        for i in range(n):
            res += a[i]
        return res
    r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
    i = 8
    while i < n - n % 8:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[i]
        i += 1
    return res


# -- softmax cross-entropy over (K, m, C) logits, with class indices (K, m) ------------------
# (or (1, m): every member's labels are the mini-batch's, with no broadcast view to build).
# exp and log stay in NumPy between these passes (functional.softmax_cross_entropy): its SIMD
# versions round differently from a compiler's
@jit
def softmax_shift(z, shifted):
    # shifted = z - the row's max, taken as NumPy's maximum takes it: NaN where the row has one
    K, m, C = z.shape
    for k in range(K):
        for i in range(m):
            zi, si = z[k, i], shifted[k, i]
            top = zi[0]
            nan = top != top
            for c in range(1, C):
                x = zi[c]
                nan |= x != x
                top = x if x > top else top
            if nan:  # rare: the row's first NaN (a float of z's dtype) is its max
                for c in range(C):
                    if zi[c] != zi[c]:
                        top = zi[c]
                        break
            for c in range(C):
                si[c] = zi[c] - top


@jit
def row_sums(e, out, consts):
    # out[k, i] = e[k, i].sum(), as NumPy sums a row of at most 128 terms (one block of its
    # pairwise sum: functional takes longer rows through NumPy; the whole pairwise sum here
    # would triple this kernel's compile time)
    for k in range(e.shape[0]):
        for i in range(e.shape[1]):
            out[k, i] = block_sum(e[k, i], e.shape[2], consts[0])


# -- NumPy's pairwise sum of a row -------------------------------------------------------------
@jit
def pairwise_sum(a, lo, n, negzero):
    # a[lo:lo + n] summed as NumPy's add.reduce sums a contiguous row: blocks of up to 128 terms
    # (block_sum), a longer run split in two at n // 2 rounded down to a multiple of 8, the
    # halves' sums added (left + right). Its recursion walked with a stack: a recursive
    # function loaded from numba's cache crashed here
    if n <= 128:
        return block_sum(a[lo:lo + n], n, negzero)
    los = numpy.empty(64, dtype=numpy.int64)  # the runs being summed, outermost first
    ns = numpy.empty(64, dtype=numpy.int64)
    halves = numpy.empty(64, dtype=numpy.int64)
    left = numpy.empty(64, dtype=a.dtype)  # a run's left half's sum, once done
    on_right = numpy.empty(64, dtype=numpy.bool_)  # whether a run's right half is under way
    top, ret, returning = 0, negzero, False
    los[0], ns[0] = lo, n
    while top >= 0:
        if not returning:
            if ns[top] <= 128:  # a block: its sum goes to the run above
                ret, returning = block_sum(a[los[top]:los[top] + ns[top]], ns[top], negzero), True
                top -= 1
                continue
            n2 = ns[top] // 2
            n2 -= n2 % 8
            halves[top], on_right[top] = n2, False
            los[top + 1], ns[top + 1] = los[top], n2
            top += 1
        elif not on_right[top]:  # its left half's sum: now the right half
            left[top], on_right[top], returning = ret, True, False
            los[top + 1], ns[top + 1] = los[top] + halves[top], ns[top] - halves[top]
            top += 1
        else:  # both halves: their sum goes to the run above
            ret = left[top] + ret
            top -= 1
    return ret


# -- each member's sum of squares of its weights (the L2 term): functional.squares' order ------
@jit
def member_squares(w, starts, ns, hs, cols, out, consts):
    # out[k, q] = member k's sum of squares of its weight q: the ns[q] terms of w[k] from column
    # starts[q] (a contiguous (ns[q] // hs[q], hs[q]) block), squared and summed over the rows,
    # row after row from the first (NumPy's order for axis -2, in cols[k]), then the hs[q]
    # column sums as NumPy sums a row (pairwise). The row loop is elementwise over h and w is
    # C-contiguous (a strided view took scalar loads, 3x slower), so the compiler vectorizes
    # it: a whole block summed pairwise runs eight scalar sums at a time, 4-10x slower. One
    # call for a step's weights (a population's are columns of one (K, P) array)
    for k in range(w.shape[0]):
        wk, ck = w[k], cols[k]
        for q in range(len(starts)):
            lo, h = starts[q], hs[q]
            for j in range(h):
                x = wk[lo + j]
                ck[j] = x * x
            for i in range(1, ns[q] // h):
                row = wk[lo + i * h:lo + (i + 1) * h]
                for j in range(h):
                    x = row[j]
                    ck[j] = ck[j] + x * x
            out[k, q] = pairwise_sum(ck, 0, h, consts[0])


@jit
def softmax_log_p(shifted, log_sums, labels, log_p, losses):
    # log p = shifted - log(sum exp(shifted)); each example's loss is -log p of its class
    K, m, C = shifted.shape
    for k in range(K):
        lk = labels[k if labels.shape[0] > 1 else 0]
        for i in range(m):
            si, li, ls = shifted[k, i], log_p[k, i], log_sums[k, i]
            for c in range(C):
                li[c] = si[c] - ls
            losses[k, i] = -li[lk[i]]


@jit
def minus_one_at(p, labels, consts):  # p - y with y one-hot: 1 subtracted at each example's class
    one = consts[0]
    for k in range(p.shape[0]):
        lk = labels[k if labels.shape[0] > 1 else 0]
        for i in range(p.shape[1]):
            c = lk[i]
            p[k, i, c] = p[k, i, c] - one


@jit
def hits(z, labels, out):
    # out[k, 0] = how many rows of z[k] have their argmax (the first max, or the first NaN) at
    # the label. Without a NaN in the member's logits, the max is taken and the hit counted by
    # selects (no branch to mispredict; any NaN test inside that loop made it 2-3x slower);
    # with one, the member is counted again with NumPy's first-NaN rule
    K, m, C = z.shape
    for k in range(K):
        zk, lk = z[k], labels[k if labels.shape[0] > 1 else 0]
        nan = False
        for i in range(m):
            zi = zk[i]
            for c in range(C):
                nan |= zi[c] != zi[c]
        count = 0
        if not nan:
            for i in range(m):
                zi = zk[i]
                best, at = zi[0], 0
                for c in range(1, C):
                    x = zi[c]
                    up = x > best
                    at = c if up else at
                    best = x if up else best
                count += at == lk[i]
        else:
            for i in range(m):
                zi = zk[i]
                best, at = zi[0], 0
                for c in range(C):
                    x = zi[c]
                    if x != x:
                        at = c
                        break
                    if x > best:
                        best, at = x, c
                count += at == lk[i]
        out[k, 0] = count


# -- layers over (K, m, h) ----------------------------------------------------------------
@jit
def sum_rows(a, out):
    # out = a (m, h) summed over its rows as NumPy sums over the examples axis: row after row,
    # starting from row 0
    for j in range(a.shape[1]):
        out[j] = a[0, j]
    for i in range(1, a.shape[0]):
        ai = a[i]
        for j in range(a.shape[1]):
            out[j] = out[j] + ai[j]


@jit
def bias_relu(z, b, with_bias, consts, out):
    # out = max(z + b, 0); NumPy's maximum keeps z at a tie or NaN. Where out is z, the rows
    # are written through z alone: two views of one row fail the compiler's overlap check,
    # and the loop ran unvectorized (18 against 3 us on (10, 32, 64))
    zero = consts[0]
    inplace = out.ctypes.data == z.ctypes.data
    for k in range(z.shape[0]):
        bk = b[k]
        for i in range(z.shape[1]):
            zi, oi = z[k, i], out[k, i]  # oi only where out is not z
            if inplace and with_bias:
                for j in range(zi.shape[0]):
                    x = zi[j] + bk[j]
                    zi[j] = x if (x >= zero or x != x) else zero
            elif inplace:
                for j in range(zi.shape[0]):
                    x = zi[j]
                    zi[j] = x if (x >= zero or x != x) else zero
            elif with_bias:
                for j in range(zi.shape[0]):
                    x = zi[j] + bk[j]
                    oi[j] = x if (x >= zero or x != x) else zero
            else:
                for j in range(zi.shape[0]):
                    x = zi[j]
                    oi[j] = x if (x >= zero or x != x) else zero


# the mask stream of caviar.functional.dropout_bits: SplitMix64 over the element's counter
_GOLDEN = numpy.uint64(0x9E3779B97F4A7C15)
_MIX1 = numpy.uint64(0xBF58476D1CE4E5B9)
_MIX2 = numpy.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mask_bits(z):
    # the top 53 bits of SplitMix64's output for state z: a row's element j takes the row's
    # state + (j + 1) * _GOLDEN, which the kernels step by adding _GOLDEN once per element (the
    # same uint64 values; a product per element cost 22% of dropout_over on (10, 128, 256))
    z = (z ^ (z >> numba.uint64(30))) * _MIX1
    z = (z ^ (z >> numba.uint64(27))) * _MIX2
    z = z ^ (z >> numba.uint64(31))
    return z >> numba.uint64(11)


@jit
def dropout(a, keys, thresholds, inverse, consts, out, scale):
    # inverted dropout: element (i, j) of member k keeps its unit where the top 53 bits of
    # SplitMix64's output number i * h + j + 1 from keys[k] fall under thresholds[k]; the scale
    # is 1/keep there, else 0 (consts[0], in a's dtype: a literal 0 made the product float64),
    # and out = a * scale
    zero = consts[0]
    for k in range(a.shape[0]):
        key, t, inv = keys[k, 0], thresholds[k, 0], inverse[k, 0]
        for i in range(a.shape[1]):
            ai, oi, si = a[k, i], out[k, i], scale[k, i]
            h = ai.shape[0]
            state = key + numba.uint64(i * h) * _GOLDEN  # the row's; element j's: + (j + 1) * _GOLDEN
            for j in range(h):
                state += _GOLDEN
                sc = inv if _mask_bits(state) < t else zero
                si[j] = sc
                oi[j] = ai[j] * sc


@jit
def dropout_over(a, keys, thresholds, inverse, consts, kept):
    # dropout's a * scale written over a (a ReLU's output), and whether each unit was kept in
    # place of the scale, a quarter of its bytes: the ReLU's gradient takes the scale from
    # these (relu_grad's by_member)
    zero = consts[0]
    for k in range(a.shape[0]):
        key, t, inv = keys[k, 0], thresholds[k, 0], inverse[k, 0]
        for i in range(a.shape[1]):
            ai, ki = a[k, i], kept[k, i]
            h = ai.shape[0]
            state = key + numba.uint64(i * h) * _GOLDEN  # the row's; element j's: + (j + 1) * _GOLDEN
            for j in range(h):
                state += _GOLDEN
                keep = _mask_bits(state) < t
                ki[j] = keep
                ai[j] = ai[j] * (inv if keep else zero)


@jit
def bias_relu_dropout(z, b, with_bias, consts, keys, thresholds, inverse, kept):
    # bias_relu written over z, then dropout_over on that output, in one pass (a population's
    # Dense -> ReLU -> Dropout): the same operations on each element in the same order, so
    # the same values, bits and bools as the two kernels one after the other
    zero = consts[0]
    for k in range(z.shape[0]):
        bk, key, t, inv = b[k], keys[k, 0], thresholds[k, 0], inverse[k, 0]
        for i in range(z.shape[1]):
            zi, ki = z[k, i], kept[k, i]
            h = zi.shape[0]
            state = key + numba.uint64(i * h) * _GOLDEN  # the row's; element j's: + (j + 1) * _GOLDEN
            if with_bias:
                for j in range(h):
                    x = zi[j] + bk[j]
                    x = x if (x >= zero or x != x) else zero
                    state += _GOLDEN
                    keep = _mask_bits(state) < t
                    ki[j] = keep
                    zi[j] = x * (inv if keep else zero)
            else:
                for j in range(h):
                    x = zi[j]
                    x = x if (x >= zero or x != x) else zero
                    state += _GOLDEN
                    keep = _mask_bits(state) < t
                    ki[j] = keep
                    zi[j] = x * (inv if keep else zero)


@jit
def relu_grad(g, out, dz, db, with_bias, consts, inverse, kept, by_member):
    _relu_grad(g, out, dz, db, with_bias, consts, inverse, kept, by_member)


@jit
def relu_grad_over(g, out, db, with_bias, consts, inverse, kept, by_member):
    # relu_grad with dz written over g (one array: vectorized, as batch_norm_over)
    _relu_grad(g, out, g, db, with_bias, consts, inverse, kept, by_member)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _relu_grad(g, out, dz, db, with_bias, consts, inverse, kept, by_member):
    # dz = g * (out > 0), where g is taken, when by_member, as g * the scale dropout_over used
    # (the dropout above's backward): inverse[k] where kept, else 0. out is then the dropout's output, which is > 0
    # exactly where the ReLU's is and the unit was kept (1/keep >= 1 neither underflows nor
    # changes a sign), and where a unit was dropped, g * 0 times either mask is the same;
    # db = dz summed over the examples, row after row
    zero, one = consts[0], consts[1]
    K, m, h = g.shape
    for k in range(K):
        for i in range(m):
            gi, oi, di = g[k, i], out[k, i], dz[k, i]
            if by_member:
                inv, ki = inverse[k, 0], kept[k, i]
                for j in range(h):
                    di[j] = (gi[j] * (inv if ki[j] else zero)) * (one if oi[j] > zero else zero)
            else:
                for j in range(h):
                    di[j] = gi[j] * (one if oi[j] > zero else zero)
        if with_bias:
            sum_rows(dz[k], db[k])


@jit
def column_sums(g, db):  # db = g summed over the examples, row after row (a linear layer's db)
    for k in range(g.shape[0]):
        sum_rows(g[k], db[k])


@jit
def batch_norm(z, gamma, beta, consts, out, xhat, mu, var, inv_std, run_mean, run_var, update, relu):
    _batch_norm(z, gamma, beta, consts, out, xhat, mu, var, inv_std, run_mean, run_var, update, relu)


@jit
def batch_norm_over(z, gamma, beta, consts, out, mu, var, inv_std, run_mean, run_var, update, relu):
    # batch_norm with xhat written over z: one array, read and written element by element, so
    # the compiler vectorizes it (two arguments that overlap take its scalar loops)
    _batch_norm(z, gamma, beta, consts, out, z, mu, var, inv_std, run_mean, run_var, update, relu)


@jit
def batch_norm_relu_dropout_over(z, gamma, beta, consts, out, mu, var, inv_std, run_mean, run_var, update, keys,
                                 thresholds, inverse, kept):
    # batch_norm_over with relu, then dropout_over on its output, in batch norm's last pass (a
    # population's Dense -> BatchNorm -> ReLU -> Dropout): the same operations on each element
    # in the same order, so the same values, bits and bools as the two kernels one after the other
    m_, eps, one, zero = consts[0], consts[1], consts[2], consts[5]
    K, m, h = z.shape
    for k in range(K):
        muk, vk, ik, gk, bk = mu[k], var[k], inv_std[k], gamma[k], beta[k]
        _batch_norm_statistics(z[k], z[k], muk, vk, ik, m_, eps, one)
        key, t, inv = keys[k, 0], thresholds[k, 0], inverse[k, 0]
        for i in range(m):
            xi, oi, ki = z[k, i], out[k, i], kept[k, i]
            state = key + numba.uint64(i * h) * _GOLDEN  # the row's; element j's: + (j + 1) * _GOLDEN
            for j in range(h):
                x = xi[j] * ik[j]
                xi[j] = x
                y = gk[j] * x + bk[j]
                y = y if (y >= zero or y != y) else zero
                state += _GOLDEN
                keep = _mask_bits(state) < t
                ki[j] = keep
                oi[j] = y * (inv if keep else zero)
        if update:
            _running_update(run_mean[k], run_var[k], muk, vk, consts[3], consts[4])


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _batch_norm_statistics(zk, xk, muk, vk, ik, m_, eps, one):
    # member k's mini-batch mean and biased variance over its (m, h) rows, the centered values
    # kept in xk, and 1 / sqrt(var + eps)
    m, h = zk.shape
    sum_rows(zk, muk)
    for j in range(h):
        muk[j] = muk[j] / m_
    z0, x0 = zk[0], xk[0]
    for j in range(h):  # centered, kept in xhat, and its squares summed row after row, in one
        x = z0[j] - muk[j]  # pass (16% off the kernel on (10, 128, 256) against two passes)
        x0[j] = x
        vk[j] = x * x
    for i in range(1, m):
        zi, xi = zk[i], xk[i]
        for j in range(h):
            x = zi[j] - muk[j]
            xi[j] = x
            vk[j] = vk[j] + x * x
    for j in range(h):
        vk[j] = vk[j] / m_
        ik[j] = one / numpy.sqrt(vk[j] + eps)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _running_update(rm, rv, muk, vk, beta_, rest):
    # the running estimates as NumPy's in-place lines give them: run *= momentum, then run +=
    # (1 - momentum) * batch
    for j in range(rm.shape[0]):
        rm[j] = rm[j] * beta_
        rm[j] = rm[j] + rest * muk[j]
        rv[j] = rv[j] * beta_
        rv[j] = rv[j] + rest * vk[j]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _batch_norm(z, gamma, beta, consts, out, xhat, mu, var, inv_std, run_mean, run_var, update, relu):
    # update: the running estimates updated (consts[3], consts[4]: momentum, 1 - momentum);
    # relu: the ReLU layer above in the last pass, as bias_relu computes it (consts[5] is 0)
    m_, eps, one = consts[0], consts[1], consts[2]
    K, m, h = z.shape
    for k in range(K):
        muk, vk, ik, gk, bk = mu[k], var[k], inv_std[k], gamma[k], beta[k]
        _batch_norm_statistics(z[k], xhat[k], muk, vk, ik, m_, eps, one)
        zero = consts[5]
        for i in range(m):
            xi, oi = xhat[k, i], out[k, i]
            if relu:
                for j in range(h):
                    x = xi[j] * ik[j]
                    xi[j] = x
                    y = gk[j] * x + bk[j]
                    oi[j] = y if (y >= zero or y != y) else zero
            else:
                for j in range(h):
                    x = xi[j] * ik[j]
                    xi[j] = x
                    oi[j] = gk[j] * x + bk[j]
        if update:
            _running_update(run_mean[k], run_var[k], muk, vk, consts[3], consts[4])


@jit
def batch_norm_eval(z, mean, inv_std, gamma, beta, out):
    # eval mode with the running estimates: out = gamma * ((z - mean) * inv_std) + beta
    K, m, h = z.shape
    for k in range(K):
        mk, ik, gk, bk = mean[k], inv_std[k], gamma[k], beta[k]
        for i in range(m):
            zi, oi = z[k, i], out[k, i]
            for j in range(h):
                oi[j] = gk[j] * ((zi[j] - mk[j]) * ik[j]) + bk[j]


@jit
def batch_norm_grad(g, xhat, gamma, inv_std, consts, dz, dgamma, dbeta, s1, s2, c):
    _batch_norm_grad(g, xhat, gamma, inv_std, consts, dz, dgamma, dbeta, s1, s2, c)


@jit
def batch_norm_grad_over(g, xhat, gamma, inv_std, consts, dgamma, dbeta, s1, s2, c):
    # batch_norm_grad with dz written over g (one array: vectorized, as batch_norm_over)
    _batch_norm_grad(g, xhat, gamma, inv_std, consts, g, dgamma, dbeta, s1, s2, c)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _batch_norm_grad(g, xhat, gamma, inv_std, consts, dz, dgamma, dbeta, s1, s2, c):
    m_ = consts[0]
    K, m, h = g.shape
    for k in range(K):
        dgk, dbk, s1k, s2k, gmk, ik, ck = dgamma[k], dbeta[k], s1[k], s2[k], gamma[k], inv_std[k], c[k]
        g0, x0 = g[k, 0], xhat[k, 0]
        for j in range(h):  # row 0 starts the sums over the examples, as in NumPy
            dx = g0[j] * gmk[j]
            dgk[j] = g0[j] * x0[j]
            dbk[j] = g0[j]
            s1k[j] = dx
            s2k[j] = dx * x0[j]
        for i in range(1, m):
            gi, xi = g[k, i], xhat[k, i]
            for j in range(h):
                dx = gi[j] * gmk[j]
                dgk[j] = dgk[j] + gi[j] * xi[j]
                dbk[j] = dbk[j] + gi[j]
                s1k[j] = s1k[j] + dx
                s2k[j] = s2k[j] + dx * xi[j]
        for j in range(h):
            ck[j] = ik[j] / m_  # (inv_std / m), once per unit
        for i in range(m):
            gi, xi, di = g[k, i], xhat[k, i], dz[k, i]
            for j in range(h):
                dx = gi[j] * gmk[j]
                di[j] = ck[j] * ((m_ * dx - s1k[j]) - xi[j] * s2k[j])


@jit
def relu_batch_norm_grad_over(g, xhat, gamma, inv_std, consts, dgamma, dbeta, s1, s2, c, out, inverse, kept):
    # batch_norm_grad_over where g is the gradient at the output ``out`` of a ReLU above batch
    # norm: taken back through the ReLU first, as relu_grad takes it (g * (out > 0)), times the
    # scale of the dropout over that ReLU's output (relu_grad's by_member: inverse[k] where
    # kept); relu_batch_norm_grad_over_plain without a dropout. Each row is masked over g in
    # the loop of the first pass that sums it: a pass and a call fewer than relu_grad's kernel
    # before batch_norm_grad_over (10-20% off the two on the default search's shapes). One
    # kernel for each mask (the helper inlined with a constant): a flag tested at run time
    # kept the compiler from vectorizing (1.5x slower than the two kernels). consts: m, 0, 1
    _relu_batch_norm_grad(g, xhat, gamma, inv_std, consts, dgamma, dbeta, s1, s2, c, out, inverse, kept, True)


@jit
def relu_batch_norm_grad_over_plain(g, xhat, gamma, inv_std, consts, dgamma, dbeta, s1, s2, c, out):
    _relu_batch_norm_grad(g, xhat, gamma, inv_std, consts, dgamma, dbeta, s1, s2, c, out, c, out, False)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _relu_batch_norm_grad(g, xhat, gamma, inv_std, consts, dgamma, dbeta, s1, s2, c, out, inverse, kept, drop):
    m_, zero, one = consts[0], consts[1], consts[2]
    K, m, h = g.shape
    for k in range(K):
        dgk, dbk, s1k, s2k, gmk, ik, ck = dgamma[k], dbeta[k], s1[k], s2[k], gamma[k], inv_std[k], c[k]
        inv = inverse[k, 0]
        for i in range(m):
            gi, xi, oi = g[k, i], xhat[k, i], out[k, i]
            if drop:
                ki = kept[k, i]
                if i == 0:  # row 0 starts the sums over the examples, as in NumPy
                    for j in range(h):
                        gv = (gi[j] * (inv if ki[j] else zero)) * (one if oi[j] > zero else zero)
                        gi[j] = gv
                        dx = gv * gmk[j]
                        dgk[j] = gv * xi[j]
                        dbk[j] = gv
                        s1k[j] = dx
                        s2k[j] = dx * xi[j]
                else:
                    for j in range(h):
                        gv = (gi[j] * (inv if ki[j] else zero)) * (one if oi[j] > zero else zero)
                        gi[j] = gv
                        dx = gv * gmk[j]
                        dgk[j] = dgk[j] + gv * xi[j]
                        dbk[j] = dbk[j] + gv
                        s1k[j] = s1k[j] + dx
                        s2k[j] = s2k[j] + dx * xi[j]
            elif i == 0:
                for j in range(h):
                    gv = gi[j] * (one if oi[j] > zero else zero)
                    gi[j] = gv
                    dx = gv * gmk[j]
                    dgk[j] = gv * xi[j]
                    dbk[j] = gv
                    s1k[j] = dx
                    s2k[j] = dx * xi[j]
            else:
                for j in range(h):
                    gv = gi[j] * (one if oi[j] > zero else zero)
                    gi[j] = gv
                    dx = gv * gmk[j]
                    dgk[j] = dgk[j] + gv * xi[j]
                    dbk[j] = dbk[j] + gv
                    s1k[j] = s1k[j] + dx
                    s2k[j] = s2k[j] + dx * xi[j]
        for j in range(h):
            ck[j] = ik[j] / m_
        for i in range(m):
            gi, xi = g[k, i], xhat[k, i]
            for j in range(h):
                dx = gi[j] * gmk[j]
                gi[j] = ck[j] * ((m_ * dx - s1k[j]) - xi[j] * s2k[j])


KERNELS = {"gd": sgd, "momentum": momentum, "rmsprop": rmsprop, "adam": adam, "bias_relu": bias_relu,
           "dropout": dropout, "dropout_over": dropout_over, "bias_relu_dropout": bias_relu_dropout, "relu_grad": relu_grad, "relu_grad_over": relu_grad_over,
           "column_sums": column_sums, "batch_norm": batch_norm, "batch_norm_over": batch_norm_over,
           "batch_norm_relu_dropout_over": batch_norm_relu_dropout_over,
           "batch_norm_eval": batch_norm_eval, "batch_norm_grad": batch_norm_grad,
           "batch_norm_grad_over": batch_norm_grad_over, "relu_batch_norm_grad_over": relu_batch_norm_grad_over,
           "relu_batch_norm_grad_over_plain": relu_batch_norm_grad_over_plain,
           "softmax_shift": softmax_shift, "row_sums": row_sums, "member_squares": member_squares,
           "softmax_log_p": softmax_log_p, "minus_one_at": minus_one_at, "hits": hits}
