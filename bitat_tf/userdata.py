"""The user's own data for the command line: a folder of class folders, an `.npz`, or TFRecord files.

    train, val = load_user_data("photos/", input_shape=(96, 96, 3), validation_split=0.1)

- A folder whose subfolders are the classes (`photos/cat/*.jpg`, `photos/dog/*.jpg`), read with
  `image_dataset_from_directory`; class indices follow the sorted folder names.
- An `.npz` with arrays `x` (images, (n, h, w, c) or (n, h, w)) and `y` (class indices).
- TFRecord files (`.tfrecord`, `.tfrec`, or a folder of them) of `tf.train.Example`s with an encoded
  image (JPEG/PNG bytes) under `image_key` and an int64 class index under `label_key` (default "image"
  and "label", the layout of the CIFAR-10 copy).
Images are resized to the model's input size, cast to float32 and multiplied by `rescale` (default
1/255: pixels in [0, 1], as the bundled data sets). The last `validation_split` of the examples (after a
seeded shuffle for files read whole) is held out for validation.
"""

import glob
import os

import numpy as np

from bitat_tf._compat import keras, tf
from bitat_tf.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TFRECORD_SUFFIXES = (".tfrecord", ".tfrec", ".tfrecords")


def is_user_data(value):
    """Whether a `--data` value names a path (rather than a bundled data set such as "cifar10")."""
    return os.sep in value or value.endswith((".npz", *TFRECORD_SUFFIXES)) or os.path.exists(value)


def load_user_data(path, *, input_shape, validation_split=0.1, batch_size=32, seed=0, rescale=1 / 255,
                   image_key="image", label_key="label"):
    """(train, validation) datasets of `(image, label)` batches from `path`, resized to `input_shape`."""
    if not os.path.exists(path):
        raise DatasetError(f"--data {path!r} does not exist; pass a folder of class folders of images, an "
                           ".npz with x and y arrays, or TFRecord files.")
    if not 0 <= validation_split < 1:
        raise DatasetError(f"validation_split must be in [0, 1), got {validation_split!r}.")
    height, width, channels = _image_shape(input_shape)
    if os.path.isdir(path) and not _tfrecords_in(path):
        return _from_folder(path, (height, width), channels, validation_split, batch_size, seed, rescale)
    if path.endswith(".npz"):
        x, y = _read_npz(path, channels)
    else:
        files = _tfrecords_in(path) if os.path.isdir(path) else [path]
        x, y = _read_tfrecords(files, channels, image_key, label_key)
    _check_classes(y, path)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_val = int(round(len(x) * validation_split))
    split = len(x) - n_val
    make = lambda a, b, shuffle: _finish(a, b, (height, width), batch_size, seed, rescale, shuffle)  # noqa: E731
    return make(x[:split], y[:split], True), (make(x[split:], y[split:], False) if n_val else None)


def _image_shape(input_shape):
    shape = tuple(input_shape)
    if len(shape) != 3 or None in shape[:2]:
        raise DatasetError(f"the model takes inputs of shape {shape}; --data paths hold images, which need a "
                           "model input of (height, width, channels) with a fixed size.")
    return shape


def _from_folder(path, size, channels, validation_split, batch_size, seed, rescale):
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if len(classes) < 2:
        raise DatasetError(f"--data folder {path!r} has {len(classes)} class folder(s) {classes}; a classifier "
                           "needs at least two (one subfolder of images per class).")
    color = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
    if color is None:
        raise DatasetError(f"the model takes {channels} channels; image folders give 1, 3 or 4.")
    common = dict(labels="inferred", label_mode="int", class_names=classes, color_mode=color, image_size=size,
                  batch_size=batch_size, seed=seed, shuffle=True)
    if validation_split:
        train = keras.utils.image_dataset_from_directory(path, validation_split=validation_split,
                                                         subset="training", **common)
        val = keras.utils.image_dataset_from_directory(path, validation_split=validation_split,
                                                       subset="validation", **dict(common, shuffle=False))
    else:
        train, val = keras.utils.image_dataset_from_directory(path, **common), None
    scale = lambda x, y: (x * rescale, tf.cast(y, tf.int32))  # noqa: E731
    return train.map(scale), (val.map(scale) if val is not None else None)


def _read_npz(path, channels):
    try:
        with np.load(path) as f:
            x, y = f["x"], f["y"]
    except KeyError as err:
        raise DatasetError(f"{path} must hold arrays named 'x' (images) and 'y' (class indices); "
                           f"it holds {sorted(np.load(path).files)}.") from err
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != channels or len(x) != len(y) or y.ndim != 1:
        raise DatasetError(f"{path}: x has shape {x.shape} and y {y.shape}; expected x of (n, height, width, "
                           f"{channels}) and y of (n,) class indices for this model.")
    return x, y


def _tfrecords_in(path):
    if not os.path.isdir(path):
        return []
    return sorted(f for f in glob.glob(os.path.join(path, "*")) if f.endswith(TFRECORD_SUFFIXES))


def _read_tfrecords(files, channels, image_key, label_key):
    spec = {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}
    images, labels = [], []
    try:
        for record in tf.data.TFRecordDataset(files):
            example = tf.io.parse_single_example(record, spec)
            images.append(tf.io.decode_image(example[image_key], channels=channels, expand_animations=False))
            labels.append(int(example[label_key]))
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as err:
        raise DatasetError(f"{files[0]}: could not read tf.train.Examples with an encoded image under "
                           f"{image_key!r} and an int64 label under {label_key!r} ({str(err).splitlines()[0]}). "
                           "Name the features with --image-key/--label-key.") from err
    if not images:
        raise DatasetError(f"{files}: no records.")
    size = images[0].shape[:2]
    x = np.stack([tf.image.resize(i, size).numpy() if i.shape[:2] != size else i.numpy() for i in images])
    return x, np.asarray(labels)


def _check_classes(y, path):
    if len(np.unique(y)) < 2:
        raise DatasetError(f"{path}: the labels hold {len(np.unique(y))} class; a classifier needs at least "
                           "two.")


def _finish(x, y, size, batch_size, seed, rescale, shuffle):
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def prepare(image, label):
        image = tf.cast(image, tf.float32)
        if image.shape[:2] != size:
            image = tf.image.resize(image, size)
        return image * rescale, label

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


__all__ = ["is_user_data", "load_user_data"]
