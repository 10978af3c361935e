"""The deployment benchmark's "sizes" case writes its table and chart from the figures it keeps (no timing)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import deployment  # noqa: E402


def _timing(median):
    return {"median": median, "q1": median - 0.5, "q3": median + 0.5, "min": median - 1, "max": median + 2}


FILES = (("quicknet", "reference", 16), ("mobilenet", "fp_tflite", 0), ("mobilenet", "lce", 13))


def _summary():
    rows = [{"model": model, "size": size, "file": kind, "bytes": 2048 * size, "lce_bconv2d": bconvs,
             "bitpacked_outputs": 0, "ms_per_image": {"1": _timing(10.0 + size), "2": _timing(6.0 + size)}}
            for size in (96, 224) for model, kind, bconvs in FILES]
    return {"rows": rows, "labels": deployment.SIZE_FILES, "threads": [1, 2], "machine": {"cpu_model": "a CPU"},
            "census_vs_reference": [{"family": "mobilenet", "reference": "quicknet", "size": 96,
                                     "markdown": "| op | mobilenet: count |"}]}


def test_sizes_table_gives_median_spread_and_census(tmp_path):
    table = deployment.sizes_table(_summary()).splitlines()
    assert table[0].startswith("| model | input | file | size | ms/image, 1 thread: median [IQR] (min-max)")
    assert "| mobilenet | 224x224 | our LCE file | 448 KiB | 234.00 [233.50-234.50] (233.00-236.00) | " \
           "230.00 [229.50-230.50] (229.00-232.00) | 13 | 0 |" in table
    assert "Ops per binary convolution, mobilenet (our LCE file) against quicknet at 96x96:" in table
    deployment.sizes_chart(_summary(), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_sizes_flags_parse():
    import argparse

    p = argparse.ArgumentParser()
    deployment.add_sizes_arguments(p)
    args = p.parse_args(["--sizes", "32", "--threads", "1", "--references", ""])
    assert args.sizes == "32" and args.threads == "1" and args.references == "" and args.mobilenet_alpha == 1.0
