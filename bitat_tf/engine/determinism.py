"""Deterministic runs (`deterministic=True` in either config): one seed, one binary model, in any process.

What a deterministic run adds to the seeds every run sets:

- **TensorFlow's op determinism** (`tf.config.experimental.enable_op_determinism()`): ops pick
  implementations that do not add in thread order, and tf.data runs `map`/`interleave` in order
  (stateful functions serially) whatever their `deterministic=` says. It is process-wide state, turned on
  before the run copies the model and left on after `binarize` returns: TensorFlow has no public switch
  to turn it off (only `enable_op_determinism`), and TensorFlow documents it as a switch for the whole
  program; the user's later work with the returned model in the same process stays deterministic too.
- **Seeds** for Python, NumPy and TensorFlow (`keras.utils.set_random_seed(seed)`) before the run makes
  anything random (its copies of the model), and again where the run always seeds them.
- **Epochs in the order the run reads them.** The run reads its training data through two iterators (the
  train step's, and the captures' and recalibrations'). Every iterator of one reshuffled dataset
  (`shuffle(..., seed=s)`, `Dataset.random(seed=s)`) draws each new epoch's order from one shared seed
  generator, so which stream gets which order depends on which one starts its next epoch first. tf.data
  puts a prefetch above the run's `repeat()` that starts the next epoch in a background thread as soon as
  its buffer reaches the end of the current one, ahead of the run: which stream took which order then
  depended on thread timing (`tests/test_deterministic.py` shows the read-ahead). Measured: two processes
  binarizing the ReActNet-A twin (the default recipe, 16 batches an epoch) on a machine loaded by other
  jobs were bit-identical up to the train step's first batch of its sixth epoch and differed from there
  on; on a quiet machine the same pair agreed throughout, and with this mode it agreed under load too.
  Deterministic runs switch that prefetch off (`inject_prefetch`), so a stream starts an epoch when the
  run asks for its first batch. The dataset's own `prefetch` works within an epoch and stays.
- **k-means** (`transforms`) adds its threads' partial sums in lock order; it runs on at most two threads
  in every run, where that order cannot change a sum.

What no setting here can repeat: random numbers the user's data draws without a seed (`shuffle` without
`seed=`, a stateful random op in a `map` built before any global seed was set). `check_seeded` refuses
the ones it can see in the pipeline (Python objects of tf.data); a seed drawn in Python when the data was
built (`image_dataset_from_directory(seed=None)` picks one with NumPy) or a `tf.random.Generator` from
non-deterministic state cannot be seen. Nor is a run under a distribution strategy covered: its
distributed iterator prefetches on its own.
"""

from bitat_tf._compat import keras, tf
from bitat_tf.errors import DatasetError

# Stateful random ops: their seed attributes both 0 means "seeded from the clock" (random_seed.get_seed
# turns a seeded (0, 0) into (0, 2**31 - 1)).
_RANDOM_OPS = {"RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal", "RandomShuffle",
               "RandomGamma", "RandomPoisson", "RandomPoissonV2", "Multinomial", "ParameterizedTruncatedNormal",
               "RandomCrop"}


def begin(seed, dataset, validation_data=None):
    """Start a deterministic run: refuse data that draws without a seed, seed Python, NumPy and
    TensorFlow, turn on op determinism (process-wide, left on), and return `dataset` with the options its
    training streams need (epochs started when asked for, in order)."""
    check_seeded(dataset, "dataset")
    if validation_data is not None:
        check_seeded(validation_data, "validation_data")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return dataset.with_options(stream_options())


def stream_options():
    """tf.data options of a deterministic run's training data: no prefetch above its `repeat()` (a new
    epoch's order is drawn when the run reads its first batch) and elements in order."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.inject_prefetch = False
    return options


def check_seeded(dataset, what):
    """Raise a `DatasetError` naming the random sources of `dataset` that draw without a seed."""
    found = unseeded(dataset)
    if found:
        raise DatasetError(
            f"deterministic=True, but {what} draws random numbers without a seed ({'; '.join(found)}): another "
            "process would shuffle or augment it otherwise, and no setting of bitat_tf can repeat that. Give "
            "each a seed (dataset.shuffle(n, seed=0), the seed= of random ops), or call "
            "tf.keras.utils.set_random_seed(seed) before building the dataset.")


def unseeded(dataset):
    """What in `dataset`'s pipeline draws random numbers without a seed, as phrases (empty when nothing
    visible does). Reads tf.data's Python objects; a pipeline they do not describe reads as seeded."""
    found = []
    try:
        for node in _pipeline(dataset):
            if _seeds(node) == (0, 0):
                found.append(f"{_kind(node)} without a seed")
            for op in _random_ops_in_functions(node):
                found.append(f"{op} without a seed in the function of {_kind(node)}")
    except Exception:  # noqa: BLE001 - private structure of tf.data: an unknown one is not an error
        return found
    return list(dict.fromkeys(found))


def _pipeline(dataset):
    """`dataset` and every dataset it reads, once each."""
    seen, stack = set(), [dataset]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(node._inputs())


def _seeds(node):
    """The (seed, seed2) a shuffle or random dataset was made with, or None."""
    seed, seed2 = getattr(node, "_seed", None), getattr(node, "_seed2", None)
    if seed is None or seed2 is None:
        return None
    return int(seed), int(seed2)


def _kind(node):
    name = type(node).__name__.strip("_").replace("Dataset", "")
    return {"Shuffle": "Dataset.shuffle", "Random": "Dataset.random"}.get(name, f"a {name or 'dataset'} step")


def _random_ops_in_functions(node):
    """Stateful random ops without a seed in the functions a dataset step runs (map, filter, ...), nested
    functions included."""
    for value in vars(node).values():
        graph = getattr(getattr(value, "function", None), "graph", None)
        if graph is None or not hasattr(graph, "as_graph_def"):
            continue
        graph_def = graph.as_graph_def()
        nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
        for op in nodes:
            if op.op in _RANDOM_OPS and op.attr["seed"].i == 0 and op.attr["seed2"].i == 0:
                yield op.op


__all__ = ["begin", "check_seeded", "stream_options", "unseeded"]
