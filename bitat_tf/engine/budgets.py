"""Budgets: how many optimizer steps each phase of a run takes, from the config and the dataset's length.

A budget in steps needs no length; one in epochs needs the batches in an epoch (`steps_per_epoch`: the
dataset's cardinality or the user's number, never counted by reading the data). Without it the run is
refused before it starts (`check_epoch_length`).
"""

from bitat_tf.errors import DatasetError

# (steps setting, epochs setting) of each budget of the configs; the steps, when given, replace the epochs
_BUDGETS = (("steps_per_layer", "epochs_per_layer"), ("finetune_steps", "finetune_epochs"),
            ("final_finetune_steps", "final_finetune_epochs"), ("steps", "epochs"))


def steps(steps, epochs, steps_per_epoch):
    """A phase's optimizer steps: `steps` when given, else `epochs` of the dataset, at least one (0 epochs:
    none); a fraction of an epoch of a small dataset would otherwise round to no training at all."""
    if steps is not None:
        return int(steps)
    if not epochs:
        return 0
    if steps_per_epoch is None:
        raise DatasetError(_no_length(f"a phase of {epochs:g} epochs", "the dataset's length is unknown", None))
    return max(1, round(epochs * steps_per_epoch))


def epoch_budgets(config):
    """The budgets of `config` given in epochs (as `"name=value"`), which need the length of an epoch.

    The last phase's `"pass"` is a multiple of the pass and needs none of its own; a budget of 0 epochs
    is no phase at all."""
    found = []
    for steps_name, epochs_name in _BUDGETS:
        epochs = getattr(config, epochs_name, None)
        if getattr(config, steps_name, None) is None and epochs and epochs != "pass":
            found.append(f"{epochs_name}={epochs:g}")
    return found


def check_epoch_length(config, steps_per_epoch, *, why=None, budget=None):
    """Refuse a run whose budgets are in epochs when the dataset's epoch has no length (`steps_per_epoch`
    None): a `DatasetError` that says what to pass, raised before anything is copied, captured or trained.

    `why` says why the length is unknown (`inputs.unknown_length`); `budget` names the epoch budget as the
    user gave it (by default the config's epoch settings)."""
    found = epoch_budgets(config)
    if steps_per_epoch is not None or not found:
        return
    budget = budget or f"{type(config).__name__}({', '.join(found)})"
    raise DatasetError(_no_length(budget, why or "the dataset's length is unknown", config))


def _no_length(budget, why, config):
    if config is not None and not hasattr(config, "steps_per_layer"):
        in_steps = "EndToEndConfig(steps=...)"
    else:
        in_steps = ("BinarizeConfig(steps_per_layer=..., finetune_steps=...), with final_finetune_steps=... "
                    "unless the last phase is final_finetune_epochs='pass'")
    return (f"{budget} is a budget in epochs, and {why}, so an epoch has no length. Pass binarize(..., "
            f"steps_per_epoch=N), N the batches in one epoch, or give every budget in steps: {in_steps}. "
            "Nothing was trained.")


class PassBudget:
    """The optimizer steps of a BiTAT run (`BinarizeConfig`): each stage's quantize and fine-tune-above
    phases, the activation warm-up and the last phase.

    # Arguments
        config: the run's `BinarizeConfig`.
        steps_per_epoch: batches in an epoch of the dataset, None when it has no known length.
        stages: (block index, [layer names]) per stage, bottom to top.
        plan: the run's `graph.Plan` (where each layer sits in the model).
        top: the index of the model's last layer; a stage there has nothing above it to fine-tune.
    """

    def __init__(self, config, steps_per_epoch, stages, plan, *, top):
        self.config, self.steps_per_epoch, self.stages, self.plan, self.top = config, steps_per_epoch, stages, plan, top

    @staticmethod
    def check(config, steps_per_epoch):
        """Refuse epoch budgets on a dataset whose epoch has no length (`"pass"` needs none of its own)."""
        check_epoch_length(config, steps_per_epoch)

    def quantize(self, names):
        """The quantize phase of a stage of `names`: the budget of a layer for each."""
        return len(names) * steps(self.config.steps_per_layer, self.config.epochs_per_layer, self.steps_per_epoch)

    def finetune(self, names):
        """The fine-tune-above phase of a stage of `names`; zero for the top stage: nothing is above it."""
        if self.plan[names[-1]].index >= self.top:
            return 0
        return len(names) * steps(self.config.finetune_steps, self.config.finetune_epochs, self.steps_per_epoch)

    def stage(self, names):
        return self.quantize(names) + self.finetune(names)

    def pass_steps(self):
        """Optimizer steps of the progressive pass: every stage's quantize and fine-tune-above phases."""
        return sum(self.stage(names) for _, names in self.stages)

    def final(self):
        """The last phase: `final_pass_multiple` passes when `final_finetune_epochs="pass"` (at least one step
        unless the multiple is 0), else its own budget."""
        config = self.config
        if config.final_finetune_steps is None and config.final_finetune_epochs == "pass":
            total = round(config.final_pass_multiple * self.pass_steps())
            return max(total, 1) if config.final_pass_multiple > 0 else 0  # a multiple of 0: no last phase
        return steps(config.final_finetune_steps, config.final_finetune_epochs, self.steps_per_epoch)

    def run(self):
        """Every optimizer step of the run: warm-up, pass and last phase."""
        return self.config.activation_warmup_steps + self.pass_steps() + self.final()


def end_to_end_phases(config, steps_per_epoch):
    """The steps of each phase of a baseline (`EndToEndConfig`): "reactnet" halves its budget between its two
    steps (a fraction of an epoch rounds up to a step in each), "ste" trains in one phase."""
    check_epoch_length(config, steps_per_epoch)
    total = steps(config.steps, config.epochs, steps_per_epoch)
    if config.method == "reactnet":
        total = max(total, 2)
        return [total // 2, total - total // 2]
    return [total]


__all__ = ["PassBudget", "check_epoch_length", "end_to_end_phases", "epoch_budgets", "steps"]
