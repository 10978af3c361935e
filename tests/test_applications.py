"""Keras Applications, bare and inside a transfer-learning Sequential, binarize and export.

MobileNet runs in CI; the heavier ones are marked `slow` (`bash scripts/test.sh -m slow`), and
`python benchmarks/applications.py` records all of them in results/applications.json.
"""

import importlib.util
import os

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "applications", os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "applications.py"))
applications = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(applications)

CASES = [pytest.param(name, transfer, id=f"{name}-{'transfer' if transfer else 'bare'}",
                      marks=() if name == "MobileNet" else pytest.mark.slow)
         for name in applications.MODELS for transfer in (False, True)]


@pytest.mark.parametrize("name,transfer", CASES)
def test_application_binarizes_and_exports(name, transfer):
    row = applications.measure(name, applications.MODELS[name], transfer)
    assert row["error"] is None, row
    assert row["binarized"] > 0
    assert row["lce_bconv2d"] == row["binarized"]  # every binarized layer reached LCE as a binary conv
    assert row["lce_bytes"] < row["tflite_fp_bytes"]
