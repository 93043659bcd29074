"""Data: loaders, the notes' split rule, stratification, the normalizer, the mismatch check,
augmentation."""

import numpy as np

import caviar
import pytest

from caviar import data as D

RNG = np.random.default_rng(6)


# -- split sizes: the notes' rule ------------------------------------------------------------


@pytest.mark.parametrize(
    "m,expected",
    [
        (300, (180, 60, 60)),  # 60/20/20
        (10_000, (6000, 2000, 2000)),
        (1_000_000, (980_000, 10_000, 10_000)),  # 98/1/1
        (4_000_000, (3_980_000, 10_000, 10_000)),  # 99.5/0.25/0.25
    ],
)
def test_split_sizes_follow_the_notes(m, expected):
    assert D.split_sizes(m) == expected


def test_split_sizes_from_ratios_counts_and_no_test_set():
    assert D.split_sizes(1000, dev=0.1, test=0.1) == (800, 100, 100)
    assert D.split_sizes(1000, dev=50, test=25) == (925, 50, 25)
    assert D.split_sizes(1000, test=0) == (800, 200, 0)
    with pytest.raises(D.DataError, match="too few"):
        D.split_sizes(2)
    with pytest.raises(D.DataError, match="dev must be a ratio"):
        D.split_sizes(100, dev=1.5)
    with pytest.raises(D.DataError, match="test must be a ratio"):
        D.split_sizes(100, test=-1)


def test_split_indices_at_one_million_examples():
    y = RNG.integers(0, 3, size=1_000_000)
    tr, de, te = D.split_indices(y, seed=0)
    assert (len(tr), len(de), len(te)) == (980_000, 10_000, 10_000)
    everything = np.concatenate([tr, de, te])
    assert len(np.unique(everything)) == 1_000_000  # each example in exactly one set


def test_split_is_stratified_seeded_and_disjoint():
    y = np.array([0] * 500 + [1] * 300 + [2] * 200)
    X = np.arange(1000.0).reshape(-1, 1)
    s = D.split(X, y, seed=3)
    for Xs, ys in (s.train, s.dev, s.test):
        counts = np.bincount(ys, minlength=3) / len(ys)
        np.testing.assert_allclose(counts, [0.5, 0.3, 0.2], atol=0.006)
    np.testing.assert_array_equal(s.train[0][:, 0], s.train_index)  # rows are the indexed examples
    assert not set(s.train_index) & set(s.dev_index)
    assert not set(s.dev_index) & set(s.test_index)
    assert not set(s.train_index) & set(s.test_index)
    assert len(s.train_index) + len(s.dev_index) + len(s.test_index) == 1000
    again = D.split(X, y, seed=3)
    np.testing.assert_array_equal(again.dev_index, s.dev_index)
    assert not np.array_equal(D.split(X, y, seed=4).dev_index, s.dev_index)


def test_split_rows_match_their_indices_and_test_zero_gives_no_test_set():
    X = RNG.standard_normal((100, 2))
    y = RNG.integers(0, 2, size=100)
    s = D.split(X, y, test=0)
    np.testing.assert_array_equal(s.train[0], X[s.train_index])
    np.testing.assert_array_equal(s.dev[1], y[s.dev_index])
    assert s.test is None and len(s.test_index) == 0


def test_split_refuses_a_class_with_a_single_example():
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(D.DataError, match="class 'cat' has a single example"):
        D.split(np.zeros((7, 1)), y, class_names=["dog", "bird", "cat"])
    D.split(np.zeros((7, 1)), y, stratify=False)  # fine without stratification


# -- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape,classes", [
    ("moons", (1000, 2), 2), ("circles", (1000, 2), 2), ("digits", (1797, 64), 10), ("iris", (150, 4), 3),
    ("wine", (178, 13), 3), ("breast_cancer", (569, 30), 2), ("synthetic:500", (500, 20), 3),
])
def test_bundled_datasets(name, shape, classes):
    ds = D.load(name)
    assert ds.X.shape == shape and ds.n_classes == classes and len(ds.y) == shape[0]
    assert set(np.unique(ds.y)) == set(range(classes))


def test_synthetic_dataset_of_any_size_is_seeded():
    a, b = D.load("synthetic:2000", seed=1), D.load("synthetic:2000", seed=1)
    np.testing.assert_array_equal(a.X, b.X)
    assert len(a) == 2000


def test_csv_with_string_labels_keeps_the_class_names(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text("weight,height,kind\n4.0,30,cat\n30,60,dog\n5,28,cat\n\n")
    ds = D.load(path, target="kind")
    assert ds.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(ds.y, [0, 1, 0])
    assert ds.feature_names == ["weight", "height"]
    np.testing.assert_array_equal(ds.frame.to_numpy(), [[4, 30], [30, 60], [5, 28]])


def test_csv_numeric_targets_are_classes_or_regression(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x,team\n0.1,1.0\n0.2,0.0\n0.3,1.0\n")
    assert D.load(path).class_names == ["0", "1"]
    path.write_text("x,price\n" + "".join(f"{i},{i * 1.37 + 0.01}\n" for i in range(30)))
    ds = D.load(path)
    assert ds.class_names is None and ds.y.dtype == np.float64


@pytest.mark.parametrize(
    "text,options,pattern",
    [
        ("a,b,y\n1,2,0\n", dict(target="label"), r"no column named 'label'; the columns are a, b, y"),
        ("a,b,y\n" + "1,2,0\n3,oops,1\n" * 5, dict(target="y", numeric=["b"]),
         r"--numeric column 'b' holds text such as 'oops'"),
        ("a,b,y\n" + "1,1,0\n1,inf,1\n" * 5, dict(target="y"), r"column 'b' holds inf at line 3, beyond what a float32"),
        ("a,b,y\n1,2,0\n3,4,1,5\n", dict(target="y"), r"Expected 3 fields in line 3, saw 4"),
        ("a,b,y\n", dict(target="y"), "at least one example"),
        ("a,b,y\n1,2,\n", dict(target="y"), "the target column 'y' is empty"),
    ],
)
def test_table_errors_name_column_and_line(tmp_path, text, options, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(D.DataError, match=pattern):
        D.prepare(path, test=0, **options)


def test_missing_files_and_npz(tmp_path):
    with pytest.raises(D.DataError, match="no such file"):
        D.load(tmp_path / "none.csv")
    np.savez(tmp_path / "d.npz", X=RNG.standard_normal((10, 3)), y=np.array(list("abababab") + ["c", "c"]))
    ds = D.load(tmp_path / "d.npz")
    assert ds.class_names == ["a", "b", "c"] and ds.X.shape == (10, 3)
    np.savez(tmp_path / "e.npz", X=np.zeros((3, 2)))
    with pytest.raises(D.DataError, match="needs arrays 'X' and 'y'"):
        D.load(tmp_path / "e.npz")
    X = np.ones((3, 2))
    X[1, 1] = np.nan
    with pytest.raises(D.DataError, match="feature 'x1' is nan at row 2"):
        D.from_arrays(X, [0, 1, 0])


# -- normalizer ------------------------------------------------------------------------------


def test_normalizer_uses_training_statistics_only():
    X_train = RNG.standard_normal((200, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
    X_dev = RNG.standard_normal((50, 3)) * 7 + 100  # a very different set
    norm = D.Normalizer().fit(X_train)
    Z = norm.transform(X_train)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 1, rtol=1e-12)  # divided by the std, not the variance
    np.testing.assert_allclose(norm.transform(X_dev), (X_dev - X_train.mean(0)) / X_train.std(0))
    np.testing.assert_allclose(norm.inverse_transform(norm.transform(X_dev)), X_dev)
    restored = D.Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(restored.transform(X_dev), norm.transform(X_dev))


def test_normalizer_constant_feature_does_not_divide_by_zero():
    X = np.column_stack([np.full(10, 4.0), np.arange(10.0)])
    Z = D.Normalizer().fit_transform(X)
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[:, 0], 0.0)
    with pytest.raises(ValueError, match="not fitted"):
        D.Normalizer().transform(X)
    with pytest.raises(ValueError, match="fitted on 2 features"):
        D.Normalizer().fit(X).transform(np.zeros((2, 3)))


# -- mismatch check --------------------------------------------------------------------------


def test_mismatch_check_passes_same_distribution_and_flags_shifted_data():
    A = RNG.standard_normal((400, 5))
    B = RNG.standard_normal((400, 5))
    same = D.check_same_distribution(A, B)
    assert abs(same.auc - 0.5) < 0.08 and not same.mismatched
    shifted = B.copy()
    shifted[:, 3] += 1.5  # the "phone pictures" differ in one feature
    diff = D.check_same_distribution(A, shifted, feature_names=list("abcde"))
    assert diff.auc > 0.8 and diff.mismatched
    assert diff.features[0][0] == "d"
    assert "WARNING" in str(diff) and "d (" in str(diff)


# -- augmentation ----------------------------------------------------------------------------


@pytest.mark.parametrize("ops", [["flip"], ["shift"], ["rotate"], ["elastic"], ["flip", "shift", "rotate", "elastic"]])
def test_augmentation_preserves_shapes_dtype_and_is_seeded(ops):
    ds = D.load("digits")
    X = ds.X[:20].astype(np.float32)
    aug = D.Augmenter((8, 8), ops)
    out = aug(X, np.random.default_rng(0))
    assert out.shape == X.shape and out.dtype == X.dtype
    assert not np.array_equal(out, X)
    np.testing.assert_array_equal(out, aug(X, np.random.default_rng(0)))


def test_flip_mirrors_images_and_shift_moves_them():
    img = np.zeros((1, 9))
    img[0, 0] = 1.0  # top-left pixel of a 3x3 image
    flipped = D.Augmenter((3, 3), ["flip"])
    results = {tuple(flipped(img, np.random.default_rng(s))[0]) for s in range(10)}
    assert tuple(img[0]) in results and tuple(np.eye(1, 9, 2)[0]) in results  # unchanged or mirrored
    shifted = D.Augmenter((3, 3), ["shift"], max_shift=1)(img, np.random.default_rng(1))
    assert shifted.sum() in (0.0, 1.0)  # the pixel moved (or left the image), nothing else appeared


def test_augmentation_during_training_keeps_labels_and_normalized_space():
    import caviar

    ds = D.load("digits")
    norm = D.Normalizer(per_feature=False).fit(ds.X)
    X = norm.transform(ds.X).astype(np.float32)
    still = D.Augmenter((8, 8), ["shift", "rotate"], max_shift=0, max_angle=0.0, normalizer=norm)
    np.testing.assert_allclose(still(X[:50], np.random.default_rng(0)), X[:50], atol=1e-4)  # a round trip
    aug = D.Augmenter((8, 8), ["shift", "rotate"], normalizer=norm)
    raw = norm.inverse_transform(aug(X[:50], np.random.default_rng(0)))
    assert raw.min() > -1e-3 and raw.max() < 16 + 1e-3  # augmented in pixel space, blank borders
    # distortions that keep a digit's identity: training still learns the labels (chance is 0.1)
    gentle = D.Augmenter((8, 8), ["rotate", "elastic"], max_angle=8, normalizer=norm)
    net = caviar.Network([64, 32, 10], seed=0)
    caviar.fit(net, X[:1000], ds.y[:1000], epochs=20, augment=gentle, verbose=False)
    assert net.evaluate(X[1000:], ds.y[1000:])["accuracy"] > 0.85


def test_global_normalizer_for_images_uses_one_mean_and_std():
    X = RNG.random((50, 16)) * 16
    norm = D.Normalizer(per_feature=False).fit(X)
    np.testing.assert_allclose(norm.mean_, X.mean())
    np.testing.assert_allclose(norm.std_, X.std())
    assert D.Normalizer.from_dict(norm.to_dict()).per_feature is False


def test_augmentation_bad_input():
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        D.Augmenter((8, 8), ["blur"])
    with pytest.raises(ValueError, match="rows of 64 values"):
        D.Augmenter((8, 8), ["flip"])(np.zeros((2, 10)), np.random.default_rng(0))
