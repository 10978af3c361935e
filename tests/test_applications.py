"""Keras Applications, bare and inside a transfer-learning Sequential, binarize and export.

MobileNet with the paper's pass runs in the fast suite (tests/test_export_recipes.py runs every recipe on a
small CNN); the other models and recipes are marked `slow` (`bash scripts/test.sh -m slow`), and
`python benchmarks/applications.py` records all of them in results/applications.json.
"""

import importlib.util
import os

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "applications", os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "applications.py"))
applications = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(applications)

# Every layer became an LceBconv2d, but the file's output differed from Keras' beyond the export's tolerance
# (by up to 0.24-0.72 on 3 random inputs), so the export refused to write it (results/applications.json):
# not understood yet. The marks go when the cause is fixed (strict: a pass fails until then).
PARITY_FAILURES = {("ResNet50", "reactnet"), ("DenseNet121", "default"), ("DenseNet121", "reactnet"),
                   ("DenseNet121", "ste")}


def _marks(name, recipe):
    marks = [] if name == "MobileNet" and recipe == "paper" else [pytest.mark.slow]
    if (name, recipe) in PARITY_FAILURES:
        marks.append(pytest.mark.xfail(strict=True, reason="LCE file differs from Keras after the recipe's "
                                                           "whole-network phase; export refuses it"))
    return marks


CASES = [pytest.param(name, transfer, recipe, id=f"{name}-{'transfer' if transfer else 'bare'}-{recipe}",
                      marks=_marks(name, recipe))
         for name in applications.MODELS for recipe in applications.RECIPES
         for transfer in ((False,) if name == applications.STANDARD else (False, True))]


@pytest.mark.parametrize("name,transfer,recipe", CASES)
def test_application_binarizes_and_exports(name, transfer, recipe):
    row = applications.measure(name, applications.MODELS[name], transfer, recipe)
    assert row["error"] is None, row
    assert row["binarized"] > 0
    assert row["lce_bconv2d"] == row["binarized"]  # every binarized layer reached LCE as a binary conv
    assert row["lce_bytes"] < row["tflite_fp_bytes"]
