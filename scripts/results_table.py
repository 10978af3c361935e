"""Print the README's results table from the committed JSON files in results/ (never typed by hand).

    python scripts/results_table.py            # markdown to stdout
    python scripts/results_table.py --readme   # replace the block between the RESULTS markers in README.md
"""

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def table():
    rows = ["| run | FP test acc | BiTAT binary test acc | binarize time | total time | s+V params (aggregated / "
            "unaggregated) | LceBconv2d | Keras vs LCE top-1 | LCE / FP TFLite size |",
            "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(ROOT, "results", "*.json"))):
        with open(path) as f:
            record = json.load(f)
        fig = record["figures"]
        export = fig.get("export") or {}
        sizes = (f"{export['lce_bytes']:,} / {export['tflite_fp_bytes']:,} B "
                 f"({export['tflite_fp_bytes'] / export['lce_bytes']:.1f}x smaller)") if export else "-"
        ratio = fig["transform_params"] / fig["unaggregated_params"] if fig.get("unaggregated_params") else None
        rows.append(" | ".join([
            f"| `{os.path.relpath(path, ROOT)}`", _pct(fig["fp_test_accuracy"]), _pct(fig["binary_test_accuracy"]),
            f"{fig['binarize_seconds']:.0f} s", f"{fig['total_seconds']:.0f} s",
            f"{fig['transform_params']:,} / {fig['unaggregated_params']:,} ({100 * ratio:.2f}%)" if ratio else "-",
            f"{export['lce_bconv2d']} of {export['binarized_convolutions']}" if export else "-",
            _pct(export.get("top1_agreement")) if export else "-", sizes]) + " |")
    return "\n".join(rows)


def main(argv):
    text = table()
    if "--readme" not in argv:
        print(text)
        return 0
    path = os.path.join(ROOT, "README.md")
    readme = open(path).read()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    with open(path, "w") as f:
        f.write(f"{head}{START}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
