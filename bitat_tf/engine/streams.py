"""The run's data: one stream of training batches, read on across phases, and memory-bounded forward passes.

The run reads its training data as one stream: phases, captures and recalibrations continue where the last
one stopped, so a shuffle buffer fills once per epoch, not once per phase. `batches_drawn` counts what was
read; checkpoints keep it, and a resumed run skips as many batches and reads the same stream on. Every read
takes a number of batches the run asked for: nothing reads the dataset through, so an endless one (or one
whose length tf.data cannot tell) streams as any other.
"""

import threading

from bitat_tf._compat import tf


class DataStreams:
    """Mixin of `Engine`: the training stream ("train" for the train step, "plain" for forward passes)."""

    def stream(self, kind):
        """The run's iterator over the repeated training data: "train" for the train step (distributed
        under a strategy), "plain" for captures and recalibration (batches of plain tensors)."""
        if kind not in self._streams:
            data = self.dataset.repeat()
            if self.batches_drawn[kind]:  # resumed: the same stream from where the checkpoint left it
                data = data.skip(self.batches_drawn[kind])
            self._streams[kind] = iter(_distribute(data) if kind == "train" else data)
        return self._streams[kind]

    def take(self, count):
        """The next `count` batches of the plain stream."""
        for _ in range(count):
            batch = next(self.stream("plain"))
            self.batches_drawn["plain"] += 1
            yield batch

    def passes(self, count, images=None):
        """The inputs of the next `count` plain batches (or fewer: as many as hold `images` images, at
        least one), concatenated into as few forward passes as `capture_memory_mb` allows; yields
        `(inputs, images in each of its batches)`.

        A pass holds every binarized layer's input at once (the compiled forward returns them all), so
        that is what the bound counts. One pass of many images costs less than many of a few: on
        MobileNet at 32 images a batch the call itself dominated a forward pass.
        """
        limit = max(1, int(self.config.capture_memory_mb * 2**20 // self._pass_bytes_per_image))
        pending, sizes, read = [], [], 0
        for x, *_ in self.take(count):
            n = int(tf.shape(tf.nest.flatten(x)[0])[0])
            if pending and sum(sizes) + n > limit:
                yield _concatenate(pending), sizes
                pending, sizes = [], []
            pending.append(x)
            sizes.append(n)
            read += n
            if images is not None and read >= images:
                break
        if pending:
            yield _concatenate(pending), sizes

    def _release_streams(self):
        streams, self._streams = self._streams, {}
        _release(streams)  # the dict then holds the only references to the iterators


def _release(iterators):
    """Drop the run's tf.data iterators on a background thread.

    Destroying an iterator of an autotuned input pipeline waits until the pipeline's autotuning thread
    wakes from its sleep: idle time (0.2 s of CPU), but up to ~30 s for each of the two streams at the end
    of a standard CIFAR-10 run, measured, which `binarize` would otherwise spend before returning. The
    thread is not a daemon: interpreter exit waits for it, since a daemon thread killed inside
    TensorFlow's C++ aborts the process ("terminate called ... exception not rethrown", seen in a script
    that exits right after `binarize`).
    """
    threading.Thread(target=iterators.clear, name="bitat_tf-release-iterators").start()


def _distribute(dataset):
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy().experimental_distribute_dataset(dataset)
    return dataset


def _concatenate(batches):
    """One batch of the inputs of several (nested structures of tensors)."""
    if len(batches) == 1:
        return batches[0]
    return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *batches)


__all__ = ["DataStreams"]
