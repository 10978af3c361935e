"""The benchmark's bookkeeping: equal-time reading of a curve, trial summaries that keep every trial, seed spreads."""

import argparse
import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import budgets  # noqa: E402
import levers  # noqa: E402
import run as bench  # noqa: E402
import seeds  # noqa: E402
import regime  # noqa: E402
import starvation  # noqa: E402
import trials  # noqa: E402


def test_curve_is_read_linearly_in_log_time_and_never_extrapolated():
    points = [{"seconds": 100.0, "test_accuracy": 0.40}, {"seconds": 400.0, "test_accuracy": 0.50}]
    assert budgets.at_time(points, 200.0, "test_accuracy") == pytest.approx(0.45)  # halfway in log-time
    assert budgets.at_time(points, 100.0, "test_accuracy") == pytest.approx(0.40)
    assert budgets.at_time(points, 400.0, "test_accuracy") == pytest.approx(0.50)
    assert budgets.at_time(points, 99.0, "test_accuracy") is None
    assert budgets.at_time(points, 401.0, "test_accuracy") is None
    assert budgets.at_time(points[:1], 100.0, "test_accuracy") == pytest.approx(0.40)


def test_run_folder_summary_keeps_earlier_methods_with_the_same_settings(tmp_path):
    """A second invocation into a folder (one more method) must not drop the first one's methods from the
    folder's summary; a result run with other settings (another learning rate) stays out."""
    args = bench.parse_args(["--mode", "quick", "--methods", "ste", "--out", str(tmp_path)])
    same = {"method": "reactnet", "settings": bench.settings(args), "figures": {"val_accuracy": 0.4}}
    other = {"method": "bitat", "settings": {**bench.settings(args), "learning_rate": 1.0}, "figures": {}}
    (tmp_path / "reactnet.json").write_text(json.dumps(same))
    (tmp_path / "bitat.json").write_text(json.dumps(other))
    (tmp_path / "ste.json").write_text(json.dumps({**same, "method": "ste"}))  # this invocation's own
    assert bench._stored_results(args) == {"reactnet": {"val_accuracy": 0.4}}


def test_set_overrides_are_read_as_json_and_keep_results_apart(tmp_path):
    """`--set` values are numbers where they parse; a run with an override is not reused for one without
    (or with another); keys the runner derives itself and malformed items are refused."""
    plain = bench.parse_args(["--mode", "quick", "--out", str(tmp_path)])
    lever = bench.parse_args(["--mode", "quick", "--out", str(tmp_path), "--set", "quant_weight=10",
                              "--set", "threshold_init=median"])
    assert lever.overrides == {"quant_weight": 10, "threshold_init": "median"}
    assert "overrides" not in bench.settings(plain)  # older results (no overrides) stay reusable
    assert bench.settings(lever) != bench.settings(plain)
    assert bench.settings(lever)["overrides"] == {"quant_weight": 10, "threshold_init": "median"}
    for bad in ("learning_rate=1", "quant_weight"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--mode", "quick", "--set", bad])


def test_trials_summary_keeps_every_trial_on_disk(tmp_path):
    """Each invocation runs some scales; the summary must cover all of them, and pick on validation."""
    def write(scale, method, val, test):
        folder = tmp_path / f"lr_x{scale}"
        folder.mkdir(exist_ok=True)
        figures = {"val_accuracy": val, "test_accuracy": test, "binarize_seconds": 1.0}
        (folder / f"{method}.json").write_text(json.dumps({"figures": figures}))
        (folder / "fp.json").write_text(json.dumps({"figures": {}}))

    write(1, "reactnet", 0.40, 0.60)
    write(2, "reactnet", 0.45, 0.10)  # best on validation, worst on test: validation decides
    write(2, "ste", 0.30, 0.30)
    trials.write_summary(str(tmp_path))
    summary = json.loads((tmp_path / "trials.json").read_text())
    assert summary["scales"] == ["1", "2"]
    assert set(summary["methods"]) == {"reactnet", "ste"}
    assert summary["methods"]["reactnet"]["best_scale"] == "2"
    assert math.isclose(summary["methods"]["reactnet"]["best_val_accuracy"], 0.45)
    assert list(summary["methods"]["ste"]["trials"]) == ["2"]


def test_budget_summary_reads_every_method_folder_beside_its_own_files(tmp_path):
    """A second invocation (other methods, other budgets) must summarise everything on disk, its own
    budgets.json and plot included in the folder."""
    for method, budget, seconds in (("reactnet", 1, 100.0), ("reactnet", 2, 200.0), ("ste", 1, 120.0)):
        folder = tmp_path / method / f"x{budget}"
        folder.mkdir(parents=True)
        figures = {"budget_steps": 10 * budget, "binarize_seconds": seconds, "val_accuracy": 0.4,
                   "test_accuracy": 0.5}
        (folder / f"{method}.json").write_text(json.dumps({"figures": figures}))
    (tmp_path / "budgets.json").write_text("{}")
    summary = budgets.write_summary(str(tmp_path), "quick", {"reactnet": "4", "ste": "8"})
    assert set(summary["curves"]) == {"reactnet", "ste"}
    assert [row["reference"] for row in summary["equal_time"]] == ["reactnet at x1", "reactnet at x2"]
    assert summary["equal_time"][0]["methods"]["ste"]["test_accuracy"] is None  # 100 s is before STE's point


def test_seed_summary_gives_mean_and_sample_spread_of_each_method(tmp_path):
    """Only budget-1 points count; the spread is the sample standard deviation over the seeds on disk."""
    for seed, test in ((0, 0.60), (1, 0.64), (2, 0.62)):
        for method, budget in (("reactnet", 1), ("reactnet", 2)):
            folder = tmp_path / f"s{seed}" / method / f"x{budget}"
            folder.mkdir(parents=True)
            figures = {"budget_steps": 10, "binarize_seconds": 100.0 + seed, "val_accuracy": test - 0.01,
                       "test_accuracy": test if budget == 1 else 0.99, "timing": {"overhead_seconds": 10.0}}
            (folder / f"{method}.json").write_text(json.dumps({"figures": figures}))
    (tmp_path / "notes").mkdir()  # other folders are ignored
    args = type("Args", (), {"mode": "standard", "fp_seed": 0})()
    summary = seeds.write_summary(str(tmp_path), args)
    row = summary["methods"]["reactnet"]
    assert sorted(row["seeds"]) == [0, 1, 2]
    assert row["test_accuracy"]["mean"] == pytest.approx(0.62)
    assert row["test_accuracy"]["std"] == pytest.approx(0.02)
    assert (row["test_accuracy"]["min"], row["test_accuracy"]["max"], row["test_accuracy"]["n"]) == (0.60, 0.64, 3)
    assert row["seconds"]["mean"] == pytest.approx(101.0) and row["overhead_seconds"]["std"] == 0.0


def test_lever_summary_lists_each_lever_on_disk_with_its_overrides(tmp_path):
    for name, val in (("default", 0.60), ("lambda_x10", 0.62)):
        folder = tmp_path / name
        folder.mkdir()
        figures = {"val_accuracy": val, "test_accuracy": 0.5, "binarize_seconds": 10.0,
                   "timing": {"overhead_seconds": 1.0}}
        (folder / f"{levers.METHOD}.json").write_text(json.dumps({"settings": {"seed": 0}, "figures": figures}))
    args = argparse.Namespace(mode="quick", seed=0)
    summary = levers.write_summary(str(tmp_path), args, 8.0)
    assert list(summary["levers"]) == ["default", "lambda_x10"]
    assert summary["levers"]["lambda_x10"]["overrides"] == {"quant_weight": 10.0}
    assert "--levers default,lambda_x10" in summary["command"]


def test_lever_flags_scale_the_pass_rates_alone_and_set_the_rest():
    flags = levers.lever_flags({"pass_rates": 0.25, "quant_weight": 10.0}, 8.0)
    assert "--learning-rate=0.006" in flags and "--finetune-learning-rate=0.001" in flags
    assert "--baseline-learning-rate=0.008" in flags  # the last phase's rate keeps the trials' scale
    assert "--set=quant_weight=10.0" in flags
    assert levers.lever_flags({}, 8.0) == ["--learning-rate=0.024", "--baseline-learning-rate=0.008",
                                           "--finetune-learning-rate=0.004"]


def test_the_benchmarks_default_method_is_binarizes_default_recipe():
    """The runner builds BiTAT configs from `paper()`; the method it labels "the default" must set every
    recipe field in which `BinarizeConfig()` differs from `paper()`, except those the runner derives from
    its own flags and the budget (learning rates, phase lengths, when accuracy is measured)."""
    import bitat_tf
    from bitat_tf.recipes import PAPER

    derived = {"epochs_per_layer", "finetune_epochs", "final_finetune_epochs", "final_pass_multiple",
               "final_learning_rate", "learning_rate", "finetune_learning_rate", "evaluate_every"}
    default, kind_extra = bitat_tf.BinarizeConfig().get_config(), bench.METHODS["bitat_e2e_p12"]
    assert "the default" in bench.LABELS["bitat_e2e_p12"]
    recipe = {k for k in PAPER if PAPER[k] != default[k]} - derived
    assert recipe and {k: kind_extra[1].get(k) for k in recipe} == {k: default[k] for k in recipe}


def test_a_stored_method_result_is_reused_only_with_the_library_defaults_it_ran_with():
    """Changing a default of BinarizeConfig changes what the same flags run: such a result must run again
    (the full-precision figures depend on the recipe alone and stay reusable)."""
    args = bench.parse_args(["--mode", "quick"])
    record = {"settings": bench.settings(args), "defaults": bench.library_defaults()}
    assert bench.reusable(record, args, "bitat_e2e_p12")
    stale = json.loads(json.dumps(record))
    stale["defaults"]["BinarizeConfig"]["pass_normalization"] = "recalibrated"
    assert not bench.reusable(stale, args, "bitat_e2e_p12")
    assert not bench.reusable({"settings": record["settings"]}, args, "reactnet")  # written before the check
    assert bench.reusable({"settings": record["settings"]}, args, "fp")


def test_each_method_and_setting_resumes_from_a_checkpoint_folder_of_its_own():
    """An interrupted benchmark run resumes from its checkpoints; a run with another method, setting or seed
    must never meet them (the fingerprint check would refuse the run instead of starting afresh)."""
    args = bench.parse_args(["--mode", "standard"])
    again = bench.parse_args(["--mode", "standard"])
    assert bench.checkpoint_dir(args, "bitat") == bench.checkpoint_dir(again, "bitat")
    others = {bench.checkpoint_dir(args, "reactnet"),
              bench.checkpoint_dir(bench.parse_args(["--mode", "standard", "--seed", "1"]), "bitat"),
              bench.checkpoint_dir(bench.parse_args(["--mode", "standard", "--steps-per-layer", "448"]), "bitat")}
    assert bench.checkpoint_dir(args, "bitat") not in others and len(others) == 3


def test_starvation_runs_are_reused_only_with_their_settings_and_summarized_per_block(tmp_path):
    """The diagnostic's summary reads every run on disk, orders each method's runs by factor, and gives the
    validation points each block costs (against the block below, the first against full precision)."""
    args = starvation.parse_args(["--out", str(tmp_path), "--scale", "2"])
    for factor, after in ((4.0, [0.60, 0.50, 0.45]), (1.0, [0.50, 0.40, 0.30])):
        record = {"settings": starvation.run_settings(args, "bitat", factor), "figures": {
            "fp_val_accuracy": 0.70, "seconds": 10.0 * factor, "optimizer_steps": int(320 * factor),
            "per_block": [{"val_accuracy": a, "task_loss_end_of_quantize": [1.0]} for a in after]}}
        (tmp_path / f"bitat_x{factor:g}.json").write_text(json.dumps(record))
    summary = starvation.write_summary(args)
    points = summary["curves"]["bitat"]
    assert [p["factor"] for p in points] == [1.0, 4.0]
    assert points[0]["drop_per_block"] == pytest.approx([0.20, 0.10, 0.10])
    assert points[1]["drop_per_block"] == pytest.approx([0.10, 0.10, 0.05])
    assert points[0]["steps_per_layer"] == 28 and points[1]["finetune_steps"] == 48
    assert (tmp_path / "starvation.png").exists()
    assert starvation._stored(str(tmp_path / "bitat_x1.json"), starvation.run_settings(args, "bitat", 1.0))
    assert not starvation._stored(str(tmp_path / "bitat_x1.json"), starvation.run_settings(args, "bitat", 4.0))


def test_regime_page_derives_time_from_steps_at_the_1x_step_times_and_names_each_budgets_leader(tmp_path):
    """A 4x run resumed in another session has meaningless wall seconds: its time is its steps at the 1x
    run's seconds a step plus the 1x run's time outside the steps. Leaders are read at equal steps."""
    def write(method, budget, steps, test, seconds):
        folder = tmp_path / method / f"x{budget:g}"
        folder.mkdir(parents=True)
        timing = {"phases": {"phase": {"steps": steps, "seconds_per_step": 0.2}}, "wall_seconds": seconds,
                  "training_seconds": 0.2 * steps}
        (folder / f"{method}.json").write_text(json.dumps({"figures": {
            "label": method, "budget_steps": steps, "binarize_seconds": seconds, "val_accuracy": test,
            "test_accuracy": test, "config": {}, "timing": timing, "cpu_model": "AMD EPYC"}}))
        (folder / "summary.json").write_text(json.dumps({"commit": "abc", "machine": {"platform": f"vm-{method}"}}))
    write("reactnet", 1, 100, 0.60, 30.0)  # 20 s of steps, 10 s outside them
    write("reactnet", 4, 400, 0.70, 9999.0)  # resumed: its own seconds are not read
    write("bitat", 1, 100, 0.40, 40.0)
    write("bitat", 4, 400, 0.72, 50.0)
    page = regime.build(str(tmp_path), ["reactnet", "bitat", "ste_kd"])
    assert [p["derived_seconds"] for p in page["curves"]["reactnet"]] == pytest.approx([30.0, 90.0])
    assert [p["derived_seconds"] for p in page["curves"]["bitat"]] == pytest.approx([40.0, 100.0])
    assert [(r["budget"], r["leader"]) for r in page["leaders"]] == [(1.0, "reactnet"), (4.0, "bitat")]
    assert page["leaders"][1]["lead_points"] == pytest.approx(2.0)
    assert (page["leaders"][1]["val_leader"], page["leaders"][1]["val_lead_points"]) == ("bitat", pytest.approx(2.0))
    assert "ste_kd" not in page["curves"]
    assert page["sitting"]["bitat"]["platform"] == "vm-bitat" and page["sitting"]["bitat"]["cpu"]["model"] == "AMD EPYC"
    assert not page["one_sitting"]  # the two 1x runs name two platforms


def test_starvation_runs_on_fewer_blocks_sit_beside_the_three_block_runs_with_their_own_command(tmp_path):
    args = starvation.parse_args(["--out", str(tmp_path), "--scale", "2"])
    one = starvation.parse_args(["--out", str(tmp_path), "--scale", "2", "--blocks", "1"])
    assert starvation._path(args, "bitat", 16.0) != starvation._path(one, "bitat", 16.0)
    for a, after in ((args, [0.5, 0.4, 0.3]), (one, [0.6])):
        record = {"settings": starvation.run_settings(a, "bitat", 16.0), "figures": {
            "fp_val_accuracy": 0.7, "seconds": 1.0, "optimizer_steps": 1,
            "per_block": [{"val_accuracy": v, "task_loss_end_of_quantize": [1.0]} for v in after]}}
        with open(starvation._path(a, "bitat", 16.0), "w") as f:
            json.dump(record, f)
    summary = starvation.write_summary(args)
    assert [len(p["val_after_block"]) for p in summary["curves"]["bitat"]] == [1, 3]
    assert summary["command"] == ("python benchmarks/starvation.py --methods bitat --factors 16; "
                                  "python benchmarks/starvation.py --methods bitat --factors 16 --blocks 1")


def test_the_committed_full_precision_start_point_is_copied_into_the_cache(tmp_path, monkeypatch):
    """A new machine must not retrain the standard start point (20-65 minutes): the committed weights are
    used when the cache lacks them, and a recipe without committed weights is trained into the cache."""
    monkeypatch.setattr(bench, "ROOT", str(tmp_path))
    args = bench.parse_args(["--mode", "standard", "--cache-dir", str(tmp_path / "cache")])
    shipped = tmp_path / "benchmarks" / "checkpoints" / f"{bench.recipe(args)}.h5"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"weights")
    assert open(bench.fp_cache(args), "rb").read() == b"weights"
    other = bench.parse_args(["--mode", "standard", "--cache-dir", str(tmp_path / "cache"), "--fp-epochs", "2"])
    assert not os.path.exists(bench.fp_cache(other))
