"""Distillation from a teacher that is trained, and from one that is not: what the student learns.

    python benchmarks/teacher.py                      # the runs (resumable) and the summary
    python benchmarks/teacher.py --summary-only

Quick mode (ReActNet-A twin, 16,000 CIFAR-10 training images), the default recipe at the learning-rate scale
its trials chose, from two full-precision start points: one trained for the mode's epochs and one for a single
epoch (under-trained: the teacher is wrong on most examples). For each: the default as it is (KL to the
teacher on every example, `distill_target="teacher"`), the default with `distill_target="corrected"` (the
teacher where it is right, the label where it is wrong), and end-to-end STE on the labels alone (no teacher).
Every run of one start point has the same optimizer steps. Writes `results/teacher_quick/teacher.json` and
`teacher.md`; choices are read on validation.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402
import trials  # noqa: E402

ROOT = bench.ROOT
OUT = os.path.join(ROOT, "results", "teacher_quick")
TEACHERS = {"fp_e1": 1, "fp_e4": 4}  # folder: full-precision epochs
VARIANTS = {  # folder: (method, extra run.py arguments)
    "teacher": ("bitat_e2e_p12", []),
    "corrected": ("bitat_e2e_p12", ["--set", "distill_target=corrected"]),
    "corrected_w0.5": ("bitat_e2e_p12", ["--set", "distill_target=corrected", "--distill-weight", "0.5"]),
    "labels": ("ste", []),
}
SCALE = 8  # the default's and STE's best learning-rate scale in the quick trials


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args(argv)
    if not args.summary_only:
        for teacher, epochs in TEACHERS.items():
            for variant, (method, extra) in VARIANTS.items():
                subprocess.call([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--mode", "quick",
                                 "--fp-epochs", str(epochs), "--methods", method, "--no-export",
                                 *trials.rate_flags(SCALE), *extra, "--out", os.path.join(OUT, teacher, variant)])
    summary = summarize()
    with open(os.path.join(OUT, "teacher.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    with open(os.path.join(OUT, "teacher.md"), "w") as f:
        f.write(markdown(summary) + "\n")
    print(markdown(summary))
    return 0


def summarize():
    from bitat_tf import runinfo

    rows = []
    for teacher, epochs in TEACHERS.items():
        for variant, (method, _) in VARIANTS.items():
            folder = os.path.join(OUT, teacher, variant)
            path, fp = os.path.join(folder, f"{method}.json"), os.path.join(folder, "fp.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                figures = json.load(f)["figures"]
            with open(fp) as f:
                fp_figures = json.load(f)["figures"]
            rows.append({"teacher": teacher, "fp_epochs": epochs, "variant": variant, "method": method,
                         "fp_val_accuracy": fp_figures["fp_val_accuracy"],
                         "fp_test_accuracy": fp_figures["fp_test_accuracy"],
                         "val_accuracy": figures["val_accuracy"], "test_accuracy": figures["test_accuracy"],
                         "budget_steps": figures["budget_steps"]})
    return {"rows": rows, "learning_rate_scale": SCALE, "mode": "quick", "seed": 0,
            "command": "python benchmarks/teacher.py", **runinfo.provenance()}


def markdown(summary):
    lines = ["| full-precision start point | its val / test top-1 | student | val top-1 | test top-1 |",
             "|---|---|---|---|---|"]
    words = {"teacher": "the default (KL to the teacher everywhere)",
             "corrected": "the default, distill_target=\"corrected\"",
             "corrected_w0.5": "the default, distill_target=\"corrected\", distill_weight=0.5",
             "labels": "end-to-end STE on the labels"}
    for r in summary["rows"]:
        fp = f"{100 * r['fp_val_accuracy']:.1f}% / {100 * r['fp_test_accuracy']:.1f}%" if r["fp_val_accuracy"] else "-"
        lines.append(f"| {r['fp_epochs']} epoch(s) | {fp} | {words[r['variant']]} | {100 * r['val_accuracy']:.1f}% | "
                     f"{100 * r['test_accuracy']:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
