"""binarize(model, data, epochs=E): the recipe that led the measured curves at that budget, spending E epochs."""

import json
import math
import os

import pytest

import bitat_tf
from bitat_tf import budget

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The measured curves the table rests on: (file, method name of ReActNet's steps, of the default recipe).
CURVES = os.path.join(ROOT, "results", "budgets_standard", "budgets.json")
NAMES = {"reactnet": "reactnet", "default": "bitat_e2e_p12"}
# The regime study's runs (4x and above), each in <runs>/<method>/x<budget>/<method>.json.
REGIME_RUNS = os.path.join(ROOT, "results", "regime_standard", "runs")


def _regime_points(name):
    """{budget: validation top-1} of one method's regime runs (none when the study has not run it)."""
    folder = os.path.join(REGIME_RUNS, name)
    points = {}
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, entry, f"{name}.json")
        if entry.startswith("x") and os.path.exists(path):
            with open(path) as f:
                points[float(entry[1:])] = json.load(f)["figures"]["val_accuracy"]
    return points


def _total_epochs(config, layers):
    """Whole-run epochs a config spends on a model of `layers` binarized layers (epoch budgets)."""
    if isinstance(config, bitat_tf.EndToEndConfig):
        return config.epochs
    return layers * (config.epochs_per_layer + config.finetune_epochs) * (1 + config.final_pass_multiple)


@pytest.mark.parametrize("epochs, layers", [(0.3, 31), (3.2, 31), (6.4, 31), (13.0, 31), (46.5, 31), (2.0, 3)])
def test_the_chosen_recipe_spends_the_budget_it_was_given(epochs, layers):
    config, choice = budget.choose(epochs, layers)
    assert _total_epochs(config, layers) == pytest.approx(epochs, rel=1e-9)
    assert choice.epochs_per_layer == pytest.approx(epochs / layers)
    expected = next(recipe for limit, recipe in budget.LEADERS if epochs / layers <= limit)
    assert choice.recipe == expected
    assert isinstance(config, bitat_tf.EndToEndConfig if expected == "reactnet" else bitat_tf.BinarizeConfig)
    assert f"{epochs:g} epochs over {layers} binarized layers" in choice.reason


def test_small_budgets_run_reactnet_and_large_ones_the_default():
    standard = budget.STANDARD_EPOCHS_PER_LAYER * 31
    assert budget.choose(standard, 31)[1].recipe == "reactnet"
    assert budget.choose(16 * standard, 31)[1].recipe == "default"


def test_without_a_budget_binarize_runs_the_default_config():
    """The default budget is BinarizeConfig()'s own, so binarize(model, data) runs exactly BinarizeConfig()."""
    for layers in (3, 31, 54):
        config, choice = budget.choose(budget.default_epochs(layers), layers)
        assert choice.recipe == "default"
        assert config == bitat_tf.BinarizeConfig()


@pytest.mark.parametrize("epochs", [0.3, 13.0])  # one budget of each recipe
def test_seed_and_deterministic_reach_the_chosen_config(epochs):
    assert budget.choose(epochs, 31)[0].seed == 0 and budget.choose(epochs, 31)[0].deterministic is False
    config, _ = budget.choose(epochs, 31, seed=7, deterministic=True)
    assert config.seed == 7 and config.deterministic is True


def test_seed_with_a_config_is_refused_naming_where_it_goes(trained_cnn, digits_ds):
    with pytest.raises(bitat_tf.ConfigError, match="set seed, deterministic on the config"):
        bitat_tf.binarize(trained_cnn, digits_ds[0], config=bitat_tf.BinarizeConfig(), seed=1, deterministic=True,
                          verbose=0)


@pytest.mark.parametrize("epochs", [0, -1.0, math.inf, math.nan, True, "3"])
def test_bad_budgets_are_refused(epochs):
    with pytest.raises(bitat_tf.ConfigError, match="epochs must be a positive number"):
        budget.choose(epochs, 10)


def test_the_table_follows_the_measured_leader():
    """At every budget where both recipes were measured, the table picks the leader on validation (the mean
    over seeds where the seeds study has that budget), or one within a point of it (1,000 validation
    images: one point is about two thirds of a standard error at these accuracies)."""
    with open(CURVES) as f:
        curves = json.load(f)["curves"]
    points = {recipe: {p["budget"]: p["val_accuracy"] for p in curves[name]} for recipe, name in NAMES.items()}
    with open(os.path.join(ROOT, "results", "seeds_standard", "seeds.json")) as f:
        seeds = json.load(f)["methods"]
    for recipe, name in NAMES.items():  # 1x: the three seeds' mean; larger budgets from the regime study
        points[recipe][1.0] = seeds[name]["val_accuracy"]["mean"]
        for factor, accuracy in _regime_points(name).items():
            points[recipe].setdefault(factor, accuracy)
    budgets = sorted(set(points["reactnet"]) & set(points["default"]))
    assert len(budgets) >= 3
    for factor in budgets:
        per_layer = factor * budget.STANDARD_EPOCHS_PER_LAYER
        chosen = next(recipe for limit, recipe in budget.LEADERS if per_layer <= limit)
        best = max(points[r][factor] for r in points)
        assert points[chosen][factor] >= best - 0.01, (factor, chosen, {r: points[r][factor] for r in points})


def test_epochs_and_a_config_together_are_refused(trained_cnn, digits_ds):
    with pytest.raises(bitat_tf.ConfigError, match="either as epochs="):
        bitat_tf.binarize(trained_cnn, digits_ds[0], epochs=1, config=bitat_tf.BinarizeConfig(), verbose=0)


def test_binarize_with_epochs_reports_the_recipe_and_its_steps(trained_cnn, digits_ds):
    """A small budget on a small model: ReActNet's steps, as many optimizer steps as the epochs give."""
    train, _ = digits_ds
    steps_per_epoch = int(train.cardinality())
    result = bitat_tf.binarize(trained_cnn, train, epochs=0.5, verbose=0)
    recipe = result.report.recipe
    assert recipe["recipe"] == "reactnet" and recipe["epochs"] == 0.5
    assert "recipe: ReActNet" in result.report.to_markdown()
    steps = sum(result.report.timing["phase_steps"].values())
    assert abs(steps - 0.5 * steps_per_epoch) <= 2
