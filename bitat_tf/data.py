"""Data for examples, the command line and benchmarks: digits (embedded), MNIST and CIFAR-10 copies, tfds.

Images come out float32 in [0, 1], labels int32 class indices, batched and prefetched. The local copies
live in `$BITAT_DATASETS`, else `../shared/datasets` beside the repository (see its README).
"""

import os

import numpy as np

from bitat_tf._compat import tf
from bitat_tf.errors import DatasetError

NAMES = ("digits", "mnist", "cifar10", "tfds:<name>")
AUTOTUNE = tf.data.AUTOTUNE


def datasets_dir(data_dir=None):
    """The folder holding `cifar10_jpeg/` and `mnist.npz`."""
    candidates = [data_dir, os.environ.get("BITAT_DATASETS"),
                  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                               "datasets")]
    for path in candidates:
        if path and os.path.isdir(path):
            return os.path.abspath(path)
    raise DatasetError(f"no datasets folder found (tried {[c for c in candidates if c]}); set BITAT_DATASETS "
                       "or pass data_dir= / --data-dir with the folder holding cifar10_jpeg/ and mnist.npz.")


def _finish(ds, *, batch_size, shuffle, seed, augment=None, prepare=None):
    """Shuffled, batched, then per batch augmented (`augment(x, y, seed)`) and prepared (`prepare(x, y)`),
    prefetched."""
    if shuffle:
        ds = ds.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        # Stateless random ops, each batch's seed drawn from a stream of `seed`: stateful ones in a parallel
        # map draw in thread order, and without a global seed from a fresh seed at every build, so two runs
        # with one seed trained on other crops from their first step. The stream is redrawn every epoch
        # (`rerandomize_each_iteration`), so a repeat augments anew.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda batch, pair: augment(*batch, pair),
                                                  num_parallel_calls=AUTOTUNE, deterministic=True)
    if prepare is not None:
        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def load_digits(*, batch_size=64, seed=0, test_fraction=0.25):
    """sklearn's 8x8 digits (1,797 images, shipped in its wheel) as (train, test) datasets, stratified."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target.astype("int32"), test_size=test_fraction,
                                              stratify=d.target, random_state=seed)
    train = _finish(tf.data.Dataset.from_tensor_slices((x_tr, y_tr)), batch_size=batch_size, shuffle=len(x_tr),
                    seed=seed)
    test = _finish(tf.data.Dataset.from_tensor_slices((x_te, y_te)), batch_size=batch_size, shuffle=0, seed=seed)
    return train, test


def load_mnist(split, *, data_dir=None, batch_size=128, limit=None, shuffle=False, seed=0):
    """MNIST from `mnist.npz`: (28, 28, 1) images."""
    _check_split(split)
    path = os.path.join(datasets_dir(data_dir), "mnist.npz")
    with np.load(path) as f:
        x, y = f[f"x_{split}"], f[f"y_{split}"]
    x, y = x[:limit], y[:limit]
    ds = tf.data.Dataset.from_tensor_slices(((x / 255.0).astype("float32"), y.astype("int32")))
    return _finish(ds, batch_size=batch_size, shuffle=len(x) if shuffle else 0, seed=seed)


def load_cifar10(split, *, data_dir=None, batch_size=128, augment=False, limit=None, skip=0, shuffle=False,
                 seed=0):
    """CIFAR-10 (JPEG copy) from `cifar10_jpeg/{split}.tfrecord`: (32, 32, 3) images in [0, 1].

    # Arguments
        split: "train" or "test".
        augment: 4-pixel pad, random 32x32 crop and horizontal flip (the benchmark's pipeline).
        limit / skip: take `limit` records after skipping `skip`; the records are pre-shuffled, so the last
            records of "train" make a class-balanced validation split (`skip=45000`).
        shuffle: shuffle with a buffer of the whole (limited) split, reshuffled every pass.
    """
    _check_split(split)
    path = os.path.join(datasets_dir(data_dir), "cifar10_jpeg", f"{split}.tfrecord")
    if not os.path.exists(path):
        raise DatasetError(f"{path} not found; point BITAT_DATASETS / --data-dir at the datasets folder.")
    ds = tf.data.TFRecordDataset(path).skip(skip)
    if limit is not None:
        ds = ds.take(limit)
    total = (50000 if split == "train" else 10000) - skip
    size = min(limit, total) if limit is not None else total
    # TFRecord files have unknown length; stating it lets Keras show progress and size schedules.
    # The cache holds the decoded bytes (150 MB for the training split, 600 MB as float32); the shuffle
    # buffer and the batches move a quarter of the memory, and batches become floats at the end.
    ds = ds.map(_decode_cifar, num_parallel_calls=AUTOTUNE, deterministic=True).cache()
    ds = ds.apply(tf.data.experimental.assert_cardinality(size))
    return _finish(ds, batch_size=batch_size, shuffle=size if shuffle else 0, seed=seed,
                   augment=_augment if augment else None, prepare=_to_unit_interval)


CIFAR10_VALIDATION = 1000  # the last (pre-shuffled, class-balanced) training records


def cifar10_splits(*, train_limit=50000 - CIFAR10_VALIDATION, data_dir=None, batch_size=128, seed=0):
    """(train, validation, test) as the examples and benchmarks use them: the first `train_limit` training
    records shuffled and augmented, the last `CIFAR10_VALIDATION` training records for choices, and the
    test split, read once at the end."""
    load = dict(data_dir=data_dir, batch_size=batch_size, seed=seed)
    return (load_cifar10("train", limit=train_limit, augment=True, shuffle=True, **load),
            load_cifar10("train", skip=50000 - CIFAR10_VALIDATION, **load),
            load_cifar10("test", **load))


_FEATURES = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}


def _decode_cifar(record):
    example = tf.io.parse_single_example(record, _FEATURES)
    image = tf.io.decode_jpeg(example["image"], channels=3)
    return tf.ensure_shape(image, (32, 32, 3)), tf.cast(example["label"], tf.int32)


def _to_unit_interval(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def _augment(images, labels, seed, pad=4):
    """Random crops of the zero-padded images (`pad` pixels a side, every offset equally likely) and random
    horizontal flips, each image its own, a batch at a time: per image (`tf.image.stateless_random_crop`
    in a map over images) it took the input pipeline's threads ~5 ms a batch of 128 beside the train step."""
    crop, flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([n, 2], seed=crop, maxval=2 * pad + 1, dtype=tf.int32)
    images = tf.gather(padded, offsets[:, :1] + tf.range(height), axis=1, batch_dims=1)
    images = tf.gather(images, offsets[:, 1:] + tf.range(width), axis=2, batch_dims=1)
    mirrored = tf.random.stateless_uniform([n], seed=flip) < 0.5
    return tf.where(mirrored[:, None, None, None], tf.reverse(images, [2]), images), labels


def load_tfds(name, split, *, batch_size=128, shuffle=False, seed=0, **kwargs):
    """`tfds.load(name, split=split, as_supervised=True)`, scaled to [0, 1], for users with internet."""
    try:
        import tensorflow_datasets as tfds

        ds = tfds.load(name, split=split, as_supervised=True, **kwargs)
    except Exception as err:  # tfds raises many kinds: network, unknown name, missing files
        raise DatasetError(f"tfds.load({name!r}, split={split!r}) failed: {err}. Without internet, use the "
                           "local copies (digits, mnist, cifar10) or pass data_dir= with prepared tfds data.") from err
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int32)), num_parallel_calls=AUTOTUNE)
    return _finish(ds, batch_size=batch_size, shuffle=10000 if shuffle else 0, seed=seed)


def load(name, split, *, batch_size=128, data_dir=None, **kwargs):
    """Dispatch on a dataset name: "digits", "mnist", "cifar10" or "tfds:<name>"."""
    if name == "digits":
        _check_split(split)
        return load_digits(batch_size=batch_size)[0 if split == "train" else 1]
    if name == "mnist":
        return load_mnist(split, data_dir=data_dir, batch_size=batch_size, **kwargs)
    if name == "cifar10":
        return load_cifar10(split, data_dir=data_dir, batch_size=batch_size, **kwargs)
    if name.startswith("tfds:"):
        return load_tfds(name[5:], split, batch_size=batch_size, **kwargs)
    raise DatasetError(f"unknown dataset {name!r}; use one of {NAMES}.")


def _check_split(split):
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}.")
