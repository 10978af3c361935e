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


def _marks(name, recipe):
    return [] if name == "MobileNet" and recipe == "paper" else [pytest.mark.slow]


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
