"""BiTAT's transforms: the reduction matrix P, PCA initialisation of s and V, block expansion, penalties.

Shapes, for a layer with kernel matrix W (d_in, d_out) and sampled inputs X (N, d_in):
- P (k, d_in): rows average the input dimensions of one group (k-means on the columns of X), or I.
- Z = X P^T (N, k); C = Z^T Z / N = U diag(lam) U^T; s = sqrt(lam), V_hat = U (Eq. 10).
- E = P (W - alpha * sign(W)) (k, d_out); a block stacks the E of its layers (zero-padded columns).
- penalty = ||diag(s) V^T E||_F^2, which equals ||X E||_F^2 / N at initialisation when P = I.
"""

import dataclasses

import numpy as np

from bitat_tf._compat import keras, tf
from bitat_tf.quantizers import scaled_sign

EPS = 1e-8


def reduction_matrix(x, max_groups, *, method="kmeans", seed=0, kmeans_rows=2048, channels=None):
    """The (k, d_in) reduction matrix for inputs `x` (N, d_in).

    # Arguments
        x: sampled input rows of the layer.
        max_groups: k; when d_in <= k, P is the identity (Algorithm 1, line 8).
        method: "kmeans" (group input dimensions with similar activation patterns, Section 4.2), "none"
            (identity), "filterwise" (the kh*kw taps of each input channel form one group; channels are
            merged in contiguous runs when there are more than k) or "svd" (rows are the top-k principal
            directions, so P is orthonormal rather than averaging).
        channels: input channels of a convolution, for "filterwise".

    # Returns
        A float32 array P of shape (k', d_in), k' <= k.
    """
    d_in = x.shape[1]
    if method == "none" or d_in <= max_groups:
        return np.eye(d_in, dtype=np.float32)
    if method == "svd":
        _, u = pca(x)
        return u[:, :max_groups].T.astype(np.float32)
    if method == "filterwise":
        channel = np.arange(d_in) % (channels or d_in)
        labels = channel * max_groups // (channels or d_in)
    elif method == "kmeans":
        labels = _kmeans_labels(x, max_groups, seed=seed, rows=kmeans_rows)
    else:
        raise ValueError(f"unknown reduction method {method!r}")
    return averaging_matrix(labels)


def _kmeans_labels(x, k, *, seed, rows):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), min(rows, len(x)), replace=False)]
    points = sample.T.astype(np.float64)  # one point per input dimension: its activation pattern
    # scikit-learn's Lloyd iterations add each OpenMP thread's partial sums of the centres in the order the
    # threads take a lock: with three or more threads the rounding, and at times a label, changes from run
    # to run. Two threads add a + b or b + a, the same float: seeded k-means then repeats on any machine.
    with threadpool_limits(limits=2, user_api="openmp"):
        return KMeans(n_clusters=k, n_init=1, random_state=seed).fit(points).labels_


def averaging_matrix(labels):
    """P[g, i] = 1 / |G_g| if input i is in group g: each row averages one group (rows sum to one)."""
    groups, labels = np.unique(labels, return_inverse=True)
    p = np.zeros((len(groups), len(labels)), dtype=np.float32)
    p[labels, np.arange(len(labels))] = 1.0
    return p / p.sum(axis=1, keepdims=True)


def pca(z):
    """Eigen-decomposition of the uncentred second moment Z^T Z / N, in descending order.

    # Returns
        (s, U): s = sqrt(max(lam, EPS)) of shape (k,), U of shape (k, k) with eigenvectors as columns.
    """
    z = np.asarray(z, dtype=np.float64)
    lam, u = np.linalg.eigh(z.T @ z / len(z))
    order = np.argsort(lam)[::-1]
    return np.sqrt(np.maximum(lam[order], EPS)).astype(np.float32), u[:, order].astype(np.float32)


@dataclasses.dataclass
class _Member:
    name: str
    p: np.ndarray  # (k, d_in)
    d_out: int
    error: np.ndarray = None  # P (W - alpha sign W), fixed when the layer is frozen


class BlockState:
    """s and V of one block, grown layer by layer (Eq. 11); numpy state that outlives each stage."""

    def __init__(self):
        self.members = []
        self.log_s = np.zeros((0,), np.float32)
        self.v = np.zeros((0, 0), np.float32)

    def expand(self, name, p, s, u, d_out):
        """Append a layer: s <- [s; s_hat], V <- [[V, 0], [0, U]] (off-diagonal blocks start at zero)."""
        k_old, k_new = len(self.log_s), len(s)
        v = np.zeros((k_old + k_new, k_old + k_new), np.float32)
        v[:k_old, :k_old] = self.v
        v[k_old:, k_old:] = u
        self.v = v
        self.log_s = np.concatenate([self.log_s, np.log(np.maximum(s, EPS))]).astype(np.float32)
        self.members.append(_Member(name, p.astype(np.float32), int(d_out)))

    def freeze(self, name, error):
        next(m for m in self.members if m.name == name).error = np.asarray(error, np.float32)

    @property
    def size(self):
        """Trainable parameters of s and V."""
        return int(self.v.size + self.log_s.size)

    def unaggregated_size(self):
        d = sum(m.p.shape[1] for m in self.members)
        return int(d * d + d)

    def to_arrays(self, prefix):
        arrays = {f"{prefix}log_s": self.log_s, f"{prefix}v": self.v}
        for i, m in enumerate(self.members):
            arrays[f"{prefix}p{i}"] = m.p
            if m.error is not None:
                arrays[f"{prefix}e{i}"] = m.error
        return arrays

    @classmethod
    def from_arrays(cls, arrays, prefix, names, d_outs):
        state = cls()
        state.log_s, state.v = arrays[f"{prefix}log_s"], arrays[f"{prefix}v"]
        for i, (name, d_out) in enumerate(zip(names, d_outs)):
            state.members.append(_Member(name, arrays[f"{prefix}p{i}"], d_out, arrays.get(f"{prefix}e{i}")))
        return state


def quantization_error(w, alpha):
    """W - alpha * sign(W) for a kernel matrix (d_in, d_out) and alpha broadcastable to (d_out,)."""
    return w - scaled_sign(w, tf.reshape(alpha, (-1,)))


def transform_penalty(log_s, v, error):
    """||diag(s) V^T E||_F^2 for stacked errors E (K, D)."""
    return tf.reduce_sum(tf.square(tf.exp(log_s)[:, None] * tf.matmul(v, error, transpose_a=True)))


def regularizer(log_s, v, sigma):
    """Reg(s, V) = ||V V^T - I||_F^2 + (sigma - sum(log s))^2 (Eq. 9)."""
    eye = tf.eye(tf.shape(v)[0], dtype=v.dtype)
    ortho = tf.reduce_sum(tf.square(tf.matmul(v, v, transpose_b=True) - eye))
    return ortho + tf.square(sigma - tf.reduce_sum(log_s))


class StagePenalty(keras.layers.Layer):
    """The BiTAT terms of Eq. 13 for the last layer of a block; owns that stage's trainable s and V.

    Terms (each returned separately, unweighted):
    - "quant": ||diag(s) V^T E||_F^2 / D, with E the block's stacked errors and D their column count, so at
      initialisation it is the mean over output channels of the squared output error per position;
    - "l1": mean(|alpha * sign(W)|) = mean(alpha) of the current layer;
    - "reg": Reg(s, V).
    """

    def __init__(self, state, **kwargs):
        super().__init__(**kwargs)
        self.width = max(m.d_out for m in state.members)
        frozen = [_pad_cols(m.error, self.width) for m in state.members[:-1]]
        self.frozen_error = tf.constant(np.concatenate(frozen) if frozen else
                                        np.zeros((0, self.width), np.float32))
        self.p = tf.constant(state.members[-1].p)
        self.log_s = tf.Variable(state.log_s, name="log_s")
        self.v = tf.Variable(state.v, name="v")
        self.sigma = float(np.sum(state.log_s))

    def current_error(self, w, alpha):
        error = tf.matmul(self.p, quantization_error(w, alpha))
        return tf.pad(error, [[0, 0], [0, self.width - error.shape[1]]])

    def terms(self, w, alpha):
        stacked = tf.concat([self.frozen_error, self.current_error(w, alpha)], axis=0)
        return {
            "quant": transform_penalty(self.log_s, self.v, stacked) / self.width,
            "l1": tf.reduce_mean(alpha),
            "reg": regularizer(self.log_s, self.v, self.sigma),
        }

    def write_back(self, state):
        state.log_s, state.v = self.log_s.numpy(), self.v.numpy()


def _pad_cols(error, width):
    return np.pad(error, [(0, 0), (0, width - error.shape[1])])


class RunPenalty(keras.layers.Layer):
    """The terms of `StagePenalty`, for whichever layer of a run is current, in buffers sized once a run.

    A traced train step reads the current layer's kernel through one small `tf.cond` per layer on `index`
    (the others add zeros) and the block's transform from zero-padded variables, so stages change variable
    values and never shapes: the step is traced once for the whole run. Layout of the n = r_max + k_max
    transform indices: the frozen members' rows of the block first (at most r_max), the current layer's
    groups from r_max on;
    `valid` masks the unused indices out of every term. `load` fills the buffers for a stage from a
    `BlockState` and `write_back` returns the trained s and V to it.
    """

    def __init__(self, layers, *, k_max, r_max, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_branches", list(layers))  # read, not owned: not tracked as sublayers
        shapes = [_kernel_shape(layer) for layer in layers]
        self.k_max, self.r_max = int(k_max), int(r_max)
        self.d_in_max = max(d for d, _ in shapes)
        self.d_max = max(d for _, d in shapes)
        n = self.r_max + self.k_max
        zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        self.index = tf.Variable(0, trainable=False, name="index")
        self.p = tf.Variable(zeros(self.k_max, self.d_in_max), trainable=False, name="p")
        self.frozen = tf.Variable(zeros(self.r_max, self.d_max), trainable=False, name="frozen_error")
        self.valid = tf.Variable(zeros(n), trainable=False, name="valid")
        self.sigma = tf.Variable(0.0, trainable=False, name="sigma")
        self.width = tf.Variable(1.0, trainable=False, name="width")
        self.log_s = tf.Variable(zeros(n), name="log_s")
        self.v = tf.Variable(zeros(n, n), name="v")
        self._idx = np.zeros(0, np.int64)

    def _current(self, layer):
        from bitat_tf.capture import kernel_matrix
        from bitat_tf.graph import kernel_of, weight_quantizer

        alpha = weight_quantizer(layer).alpha
        w = kernel_matrix(layer, kernel_of(layer))
        error = tf.matmul(self.p[:, : w.shape[0]], quantization_error(w, alpha))
        return tf.pad(error, [[0, 0], [0, self.d_max - error.shape[1]]]), tf.reduce_mean(alpha)

    def _select(self):
        """The current layer's padded error and mean alpha.

        One `tf.cond` per layer, not one `tf.switch_case` over all: every branch of a `switch_case` takes
        the inputs of all branches, so its functions (forward, backward and the forward rebuilt to keep
        intermediates) grow with the square of the layer count: on the standard model (31 layers) they held
        11,500 of the train step's 26,000 graph nodes.
        """
        index = tf.convert_to_tensor(self.index)
        nothing = lambda: (tf.zeros([self.k_max, self.d_max]), tf.zeros([]))  # noqa: E731
        parts = [tf.cond(tf.equal(index, i), lambda layer=layer: self._current(layer), nothing)
                 for i, layer in enumerate(self._branches)]
        return tf.add_n([e for e, _ in parts]), tf.add_n([a for _, a in parts])

    def terms(self):
        error, l1 = self._select()
        stacked = tf.concat([self.frozen, error], axis=0)
        mask = self.valid[:, None] * self.valid[None, :]
        v = self.v * mask
        log_s = self.log_s * self.valid
        ortho = tf.reduce_sum(tf.square((tf.matmul(v, v, transpose_b=True) - tf.eye(tf.shape(v)[0])) * mask))
        return {
            "quant": transform_penalty(log_s, v, stacked * self.valid[:, None]) / self.width,
            "l1": l1,
            "reg": ortho + tf.square(self.sigma - tf.reduce_sum(log_s)),
        }

    def load(self, state, index):
        """Fill the buffers with block `state`, whose last member is the current layer (branch `index`)."""
        *done, current = state.members
        rows = sum(m.p.shape[0] for m in done)
        k = current.p.shape[0]
        if rows > self.r_max or k > self.k_max:
            raise ValueError(f"block needs {rows} + {k} transform rows; the run was sized for "
                             f"{self.r_max} + {self.k_max}")
        n = self.r_max + self.k_max
        idx = np.r_[np.arange(rows), self.r_max + np.arange(k)]
        v, log_s, valid = np.zeros((n, n), np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)
        v[np.ix_(idx, idx)], log_s[idx], valid[idx] = state.v, state.log_s, 1.0
        frozen = np.zeros((self.r_max, self.d_max), np.float32)
        if done:
            frozen[:rows] = np.concatenate([_pad_cols(m.error, self.d_max) for m in done])
        p = np.zeros((self.k_max, self.d_in_max), np.float32)
        p[:k, : current.p.shape[1]] = current.p
        for variable, value in ((self.v, v), (self.log_s, log_s), (self.valid, valid), (self.frozen, frozen),
                                (self.p, p), (self.sigma, float(np.sum(state.log_s))),
                                (self.width, float(max(m.d_out for m in state.members))), (self.index, index)):
            variable.assign(value)
        self._idx = idx

    def write_back(self, state):
        state.log_s = self.log_s.numpy()[self._idx]
        state.v = self.v.numpy()[np.ix_(self._idx, self._idx)]

    def current_error(self):
        """P (W - alpha sign W) of the current layer, unpadded: the frozen rows it leaves in its block."""
        k = len(self._idx) - int(np.sum(self._idx < self.r_max))
        layer = self._branches[int(self.index.numpy())]
        error, _ = self._current(layer)
        return error.numpy()[:k, : _kernel_shape(layer)[1]]


def _kernel_shape(layer):
    from bitat_tf.capture import kernel_matrix
    from bitat_tf.graph import kernel_of

    return tuple(int(d) for d in kernel_matrix(layer, kernel_of(layer)).shape)


def run_penalty_sizes(layers, blocks, *, max_groups, reduction):
    """(k_max, r_max) for the layers of a run: the most groups one layer can have, and the most rows the
    frozen members before the current layer of a block can hold."""
    def groups(layer):
        d_in = _kernel_shape(layer)[0]
        return d_in if reduction == "none" else min(d_in, max_groups)

    by_name = {layer.name: layer for layer in layers}
    k_max = max(groups(layer) for layer in layers)
    r_max = max(sum(groups(by_name[n]) for n in block[:-1]) for block in blocks)
    return k_max, r_max
