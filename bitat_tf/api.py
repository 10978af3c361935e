"""`binarize`: check what the user passes, read the model, and run the method its config names.

The methods are peers on one engine: BiTAT's progressive pass (`progressive.ProgressiveRun`, for a
`BinarizeConfig`) and the end-to-end baselines (`baselines.EndToEndRun`, for an `EndToEndConfig`).
"""

import dataclasses

from bitat_tf import budget, graph, inputs, nesting, outputs
from bitat_tf._compat import is_keras3_model, keras
from bitat_tf.baselines import EndToEndConfig, EndToEndRun
from bitat_tf.config import BinarizeConfig
from bitat_tf.engine.budgets import check_epoch_length
from bitat_tf.errors import ConfigError, UnsupportedModelError
from bitat_tf.inputs import check_checkpoint_dir, check_dataset, check_verbose, with_data_input_size
from bitat_tf.progressive import ProgressiveRun


@graph.float32_policy()  # Larq computes in float32: a caller's mixed-precision policy is set aside, then restored
def binarize(model, dataset, *, validation_data=None, config=None, epochs=None, seed=None, deterministic=None,
             steps_per_epoch=None, checkpoint_dir=None, verbose=1):
    """Binarize a trained Keras model with BiTAT: 1-bit weights and 1-bit activations, layer by layer.

    # Arguments
        model: a built tf_keras Functional or Sequential model (a Keras 3 model of common layers is
            converted first). It is never modified.
        dataset: a `tf.data.Dataset` of `(x, y)` batches, preferably shuffled; labels as the model's loss
            takes them (class indices, one-hot, or 0/1 for a sigmoid), every batch's checked (the first
            before anything trains). The run reads it on as one stream, repeated, and never reads it through
            to count it: endless data (`.repeat()`, a generator without end) and data whose length tf.data
            cannot tell (`from_generator`, `filter`, `interleave`) train on budgets in steps, or in epochs
            when `steps_per_epoch` is given.
        validation_data: a dataset of the same kind, on which accuracy is measured: of the full-precision
            model, at the end of the run, and during it where `config.evaluate_every` says (by default
            once, after the progressive pass); each evaluation reads it to its end, so it must end. A few
            training batches stand in when it is absent.
        config: a `BinarizeConfig` (defaults otherwise), or an `EndToEndConfig` for the baselines.
        epochs: the whole run's budget in epochs of `dataset`, when no config is given: the run takes
            the recipe that led the measured curves at that budget a binarized layer (`bitat_tf.budget`;
            the report's `recipe` says which and why): ReActNet's two steps at small budgets, BiTAT's pass
            as a warm start for end-to-end distillation above them. Without it, `BinarizeConfig()`'s own
            budget (1.5 epochs a binarized layer), which runs `BinarizeConfig()`.
        seed, deterministic: the chosen recipe's `seed` (0 by default) and `deterministic` (False), when no
            config is given; with a config, set them on it.
        steps_per_epoch: the batches in one epoch of `dataset`, which budgets in epochs (`epochs`, a
            config's `epochs_per_layer`, `finetune_epochs`, `final_finetune_epochs`, `EndToEndConfig`'s
            `epochs`) are counted in; by default `dataset.cardinality()`. Needed for epoch budgets when
            tf.data cannot tell the length (a `DatasetError` says so before anything trains); with it an
            epoch is that many batches, as in Keras' `fit`. Budgets in steps need no length, but with one
            `verbose=2` prints a line and whole-network phases checkpoint once an epoch, else once a phase.
        checkpoint_dir: where the state after each finished layer, and after every epoch of the phases that
            train the whole network (the last phase, the activation warm-up, the baselines' phases), is
            kept; a rerun with the same arguments resumes at the first unfinished layer or epoch.
        verbose: 0 silent; 1 (the default) a progress bar per stage on a terminal, collapsing to a summary
            line when the stage ends (in a log or a pipe only the summary lines); 2 a line per epoch.

    # Returns
        A `BinarizeResult` with `.model` (Larq quantized layers carrying `ScaledSign` weights and
        `ThresholdSign` inputs; a model whose input size was open takes the dataset's), `.report` (with
        what was read from the model, `report.task`, and each phase's optimizer steps) and `.history`.

    # References
        - BiTAT: Neural Network Binarization with Task-dependent Aggregated Transformation
          (Park et al., ECCV 2022 Workshops), Algorithm 1.

    !!! example
        ```python
        result = bitat_tf.binarize(model, train_ds, validation_data=val_ds)
        print(result.report.to_markdown())
        ```
    """
    if epochs is not None and config is not None:
        raise ConfigError("binarize: pass the budget either as epochs= (the recipe is then chosen for it) or "
                          "inside config (its epochs/steps settings), not both.")
    if config is not None and (seed is not None or deterministic is not None):
        given = ", ".join(n for n, v in (("seed", seed), ("deterministic", deterministic)) if v is not None)
        raise ConfigError(f"binarize: {given}= applies to the recipe binarize chooses when no config is given; "
                          f"with config=, set {given} on the config instead.")
    if config is not None and not isinstance(config, (BinarizeConfig, EndToEndConfig)):
        raise ConfigError(f"config must be a bitat_tf.BinarizeConfig (or an EndToEndConfig for the baselines), "
                          f"got {type(config).__name__}.")
    verbose = check_verbose(verbose)
    if checkpoint_dir is not None:
        checkpoint_dir = check_checkpoint_dir(checkpoint_dir)
    compiled_loss = outputs.compiled_loss(model)  # conversion and flattening drop it
    model = _prepared(model, dataset)
    choice = None
    if config is None:  # the recipe for the budget; the layer policy is the same for every recipe
        layers = len(graph.make_plan(model, BinarizeConfig()).binarized)
        config, choice = budget.choose(budget.default_epochs(layers) if epochs is None else epochs, layers,
                                       seed=seed, deterministic=deterministic)
    plan = graph.make_plan(model, config)
    loss = compiled_loss if config.loss is None else config.loss
    steps_per_epoch, task = check_dataset(dataset, model, loss=loss, steps_per_epoch=steps_per_epoch)
    if validation_data is not None:
        check_dataset(validation_data, model, what="validation_data", task=task)
        inputs.check_ends(validation_data, "validation_data")
    # An epoch budget without an epoch length is refused here, before the run copies the model or reads data.
    check_epoch_length(config, steps_per_epoch, why=inputs.unknown_length(dataset),
                       budget=_budget_words(choice, epochs))
    method = EndToEndRun if isinstance(config, EndToEndConfig) else ProgressiveRun
    run = method(model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose)
    result = run.execute(checkpoint_dir)
    if choice is not None:
        result.report.recipe = dataclasses.asdict(choice)
    return result


def _budget_words(choice, epochs):
    """The epoch budget as the user gave it, when binarize chose the config (None: the config's settings)."""
    if choice is None:
        return None
    if epochs is not None:
        return f"binarize(epochs={epochs:g})"
    return "binarize's default budget (neither config nor epochs= given: BinarizeConfig()'s, in epochs)"


def _prepared(model, dataset):
    """The user's model as one flat tf_keras graph whose input size is the data's."""
    model = _as_tf_keras(model)
    if isinstance(model, keras.Model) and nesting.has_nested_models(model):
        model = nesting.flatten(model)  # outputs checked equal; layers named by their nested path
    model = graph.in_float32(model)  # a model built under mixed precision
    return with_data_input_size(model, dataset)  # an input of open size takes the data's


def _as_tf_keras(model):
    if not is_keras3_model(model):
        return model
    try:
        from bitat_tf.keras3 import to_tf_keras
    except ImportError as err:  # pragma: no cover - the module ships with the package
        raise UnsupportedModelError(f"{type(model).__name__} is a Keras 3 model; rebuild it with tf_keras.") from err
    return to_tf_keras(model)


__all__ = ["binarize"]
