"""The recipes a `BinarizeConfig` can name: the paper's ablation variants and Algorithm 1 as published.

A new BiTAT variant is a row of `VARIANTS` (and a reduction in `transforms.py` if it needs one).
"""

# The paper's ablation (Figure 7, left), each a setting of the same code: (transform on, cross-layer
# blocks, how input dimensions are reduced).
VARIANTS = {
    "bitat": (True, True, "kmeans"),
    "sequential": (False, False, "none"),
    "intra": (True, False, "none"),
    "cross": (True, True, "none"),
    "filterwise": (True, True, "filterwise"),
    "svd": (True, True, "svd"),
}
# Algorithm 1 as published (`BinarizeConfig.paper()`): the pass alone, task loss only, the budgets and step
# sizes we started from.
PAPER = dict(epochs_per_layer=1.0, finetune_epochs=0.5, final_finetune_epochs=0.0, final_pass_multiple=1.0,
             final_phase="finetune", final_learning_rate=None, distill_weight=0.0, learning_rate=1e-3,
             finetune_learning_rate=5e-4, evaluate_every="block", pass_normalization="recalibrated")

__all__ = ["PAPER", "VARIANTS"]
