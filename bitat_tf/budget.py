"""The budget a user gives, in epochs of their data, and the recipe that led the measured curves there.

`binarize(model, data, epochs=E)` runs the recipe that led, on validation, the standard benchmark's curves
of accuracy against budget (docs/results.md), with its budget spread over its phases so that the whole
run takes E epochs of `data`. Budgets are compared per binarized layer: the progressive pass spends its
budget a layer at a time, so a deeper model needs more epochs for the same budget a layer. That is an
assumption: the curves were measured on one model (the ReActNet-A twin, 31 binarized layers, where the
standard budget, "1x", is 1,240 optimizer steps of 383 an epoch: 0.104 epoch a layer).
"""

import dataclasses
import math

from bitat_tf.baselines import EndToEndConfig
from bitat_tf.config import BinarizeConfig
from bitat_tf.errors import ConfigError

STANDARD_EPOCHS_PER_LAYER = 1240 / 383 / 31  # "1x" of the standard benchmark, in epochs a binarized layer

# (up to this many epochs a binarized layer, the recipe), in order: the leader on validation at each
# measured budget (tests/test_budget.py checks the table against the result files docs/results.md cites).
# Measured at 0.5x, 1x (three seeds), 2x and 4x (one seed each): ReActNet's steps led on validation up to
# 2x (at 2x by 0.2 point, while the default led on test by 0.7: a tie), the default at 4x (73.7% against
# 71.9% validation, results/regime_standard/). Above 4x nothing is measured yet: the default stays the choice.
LEADERS = (
    (2.0 * STANDARD_EPOCHS_PER_LAYER, "reactnet"),
    (math.inf, "default"),
)

DESCRIPTIONS = {
    "reactnet": "ReActNet's two steps with distillation (binary activations, then binary weights too)",
    "default": "BiTAT's progressive pass on an eighth of the budget, then end-to-end distillation",
}


@dataclasses.dataclass
class Choice:
    """Which recipe a budget runs, and why; kept in the report (`report.recipe`)."""

    recipe: str
    description: str
    epochs: float
    binarized_layers: int
    epochs_per_layer: float
    reason: str


def default_epochs(binarized_layers):
    """The budget of `binarize(model, data)` without epochs or config: `BinarizeConfig()`'s own (its pass's
    epochs a layer, times one plus the last phase's multiple), so that the call runs that config."""
    config = BinarizeConfig()
    return binarized_layers * (config.epochs_per_layer + config.finetune_epochs) * (1 + config.final_pass_multiple)


def choose(epochs, binarized_layers, *, seed=None, deterministic=None):
    """The recipe for a whole-run budget of `epochs` epochs on a model with `binarized_layers` binary layers:
    `(config, Choice)`. `seed` and `deterministic` go to the chosen config (its defaults when None)."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not math.isfinite(epochs) or epochs <= 0:
        raise ConfigError(f"binarize: epochs must be a positive number of epochs of the dataset (the whole run's "
                          f"budget), got {epochs!r}.")
    if binarized_layers < 1:
        raise ConfigError("binarize: the model has no layer to binarize, so there is nothing to spend epochs on.")
    per_layer = epochs / binarized_layers
    limit, recipe = next((limit, recipe) for limit, recipe in LEADERS if per_layer <= limit)
    scale = per_layer / STANDARD_EPOCHS_PER_LAYER
    if math.isinf(limit):
        below = max(limit for limit, _ in LEADERS if not math.isinf(limit))
        where = f"above {below / STANDARD_EPOCHS_PER_LAYER:g}x"
    else:
        where = f"up to {limit / STANDARD_EPOCHS_PER_LAYER:g}x"
    reason = (f"{epochs:g} epochs over {binarized_layers} binarized layers is {per_layer:.3g} epoch a layer, "
              f"{scale:.2g}x the standard benchmark's budget; {where} it, this recipe led on validation "
              "(docs/results.md)")
    shared = {key: value for key, value in (("seed", seed), ("deterministic", deterministic)) if value is not None}
    return _config(recipe, epochs, binarized_layers, shared), Choice(recipe, DESCRIPTIONS[recipe], float(epochs),
                                                             binarized_layers, per_layer, reason)


def _config(recipe, epochs, layers, shared):
    if recipe == "reactnet":
        return EndToEndConfig(method="reactnet", epochs=epochs, **shared)
    # The default: the pass on an eighth (quantize : fine-tune = 2 : 1 a layer), the last phase the rest.
    defaults = BinarizeConfig()
    share = 1.0 / (1.0 + defaults.final_pass_multiple)
    pass_per_layer = epochs * share / layers
    return BinarizeConfig(epochs_per_layer=pass_per_layer * 2 / 3, finetune_epochs=pass_per_layer / 3, **shared)


__all__ = ["Choice", "LEADERS", "STANDARD_EPOCHS_PER_LAYER", "choose", "default_epochs"]
