import numpy as np
import pytest

from bitat_tf._compat import tf
from bitat_tf import transforms
from bitat_tf.transforms import BlockState, StagePenalty, pca, reduction_matrix


def _correlated(n=3000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6)) @ rng.normal(size=(6, d)) + 0.1 * rng.normal(size=(n, d))).astype("float32")


def test_pca_penalty_equals_output_error_identity():
    """||diag(s) V^T E||_F^2 = ||X E||_F^2 / N at PCA initialisation (P = I)."""
    x = _correlated()
    e = np.random.default_rng(1).normal(size=(x.shape[1], 5)).astype("float32")
    s, u = pca(x)
    lhs = transforms.transform_penalty(tf.math.log(s), tf.constant(u), tf.constant(e)).numpy()
    rhs = np.sum((x.astype(np.float64) @ e) ** 2) / len(x)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


def test_pca_is_descending_and_orthonormal():
    s, u = pca(_correlated())
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(u.T @ u, np.eye(len(s)), atol=1e-5)


def test_kmeans_reduction_rows_average_one_group_each():
    x = _correlated(d=40)
    p = reduction_matrix(x, 8, method="kmeans", seed=0)
    assert p.shape[1] == 40 and p.shape[0] <= 8
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all((p > 0).sum(axis=0) == 1)  # every input dimension in exactly one group


def test_kmeans_groups_duplicated_inputs_together():
    base = np.random.default_rng(0).normal(size=(500, 4))
    x = np.repeat(base, 5, axis=1).astype("float32")  # 4 sources, each copied into 5 columns
    p = reduction_matrix(x, 4, method="kmeans", seed=0)
    groups = p.argmax(axis=0)
    assert len(set(groups)) == 4
    assert all(len(set(groups[i * 5:(i + 1) * 5])) == 1 for i in range(4))


def test_identity_when_inputs_fit_in_k_groups_and_for_method_none():
    x = _correlated(d=10)
    np.testing.assert_array_equal(reduction_matrix(x, 16), np.eye(10))
    np.testing.assert_array_equal(reduction_matrix(x, 4, method="none"), np.eye(10))


def test_filterwise_groups_taps_of_one_input_channel():
    x = _correlated(d=9 * 4)  # 3x3 kernel, 4 input channels, (kh, kw, cin) order
    p = reduction_matrix(x, 4, method="filterwise", channels=4)
    assert p.shape == (4, 36)
    np.testing.assert_array_equal(p.argmax(axis=0), np.arange(36) % 4)


def test_svd_reduction_has_orthonormal_rows():
    p = reduction_matrix(_correlated(d=30), 5, method="svd")
    np.testing.assert_allclose(p @ p.T, np.eye(5), atol=1e-5)


def test_block_expansion_keeps_old_part_and_zero_off_diagonals():
    state = BlockState()
    s1, u1 = pca(_correlated(d=6))
    state.expand("a", np.eye(6), s1, u1, 3)
    v_before = state.v.copy()
    s2, u2 = pca(_correlated(d=4, seed=2))
    state.expand("b", np.eye(4), s2, u2, 7)
    assert state.v.shape == (10, 10) and state.log_s.shape == (10,)
    np.testing.assert_array_equal(state.v[:6, :6], v_before)
    np.testing.assert_array_equal(state.v[6:, 6:], u2)
    assert not state.v[:6, 6:].any() and not state.v[6:, :6].any()
    assert state.size == 110 and state.unaggregated_size() == 110


def test_stage_penalty_at_init_is_block_output_error_and_regularizer_is_zero():
    """Two-layer block, P = I: quant * D = sum over layers of ||X_i E_i||^2 / N_i; Reg = 0."""
    rng = np.random.default_rng(3)
    xa, xb = _correlated(d=6), _correlated(d=4, seed=5)
    wa, wb = rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=(4, 5)).astype("float32")
    alpha_a, alpha_b = np.abs(wa).mean(0), np.abs(wb).mean(0)
    state = BlockState()
    state.expand("a", np.eye(6), *pca(xa), 3)
    state.freeze("a", transforms.quantization_error(tf.constant(wa), tf.constant(alpha_a)).numpy())
    state.expand("b", np.eye(4), *pca(xb), 5)
    penalty = StagePenalty(state)
    terms = {k: v.numpy() for k, v in penalty.terms(tf.constant(wb), tf.constant(alpha_b)).items()}
    ea = wa - alpha_a * np.where(wa >= 0, 1, -1)
    eb = wb - alpha_b * np.where(wb >= 0, 1, -1)
    expected = np.sum((xa @ ea) ** 2) / len(xa) + np.sum((xb @ eb) ** 2) / len(xb)
    np.testing.assert_allclose(terms["quant"] * penalty.width, expected, rtol=1e-4)
    assert terms["reg"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(terms["l1"], alpha_b.mean(), rtol=1e-6)


def test_cross_layer_gradient_reaches_off_diagonal_block():
    state = BlockState()
    state.expand("a", np.eye(3), *pca(_correlated(d=3)), 2)
    state.freeze("a", np.ones((3, 2), np.float32))
    state.expand("b", np.eye(2), *pca(_correlated(d=2, seed=1)), 2)
    penalty = StagePenalty(state)
    w = tf.Variable(np.full((2, 2), 0.3, np.float32))
    with tf.GradientTape() as tape:
        quant = penalty.terms(w, tf.constant([0.1, 0.1]))["quant"]
    grad_v = tape.gradient(quant, penalty.v).numpy()
    assert np.abs(grad_v[3:, :3]).sum() > 0  # V[b rows, a cols]: the cross-layer dependency trains
