"""Budgets: how many optimizer steps each phase of a run takes, from the config and the dataset's length."""

from bitat_tf.errors import ConfigError


def steps(steps, epochs, steps_per_epoch):
    """A phase's optimizer steps: `steps` when given, else `epochs` of the dataset, at least one (0 epochs:
    none); a fraction of an epoch of a small dataset would otherwise round to no training at all."""
    if steps is not None:
        return int(steps)
    if not epochs:
        return 0
    if steps_per_epoch is None:
        raise ConfigError(f"the dataset repeats forever, so a budget of {epochs:g} epochs is undefined; give "
                          "the phase's budget in steps (steps_per_layer, finetune_steps, "
                          "final_finetune_steps) or pass a finite dataset.")
    return max(1, int(round(epochs * steps_per_epoch)))


class PassBudget:
    """The optimizer steps of a BiTAT run (`BinarizeConfig`): each stage's quantize and fine-tune-above
    phases, the activation warm-up and the last phase.

    # Arguments
        config: the run's `BinarizeConfig`.
        steps_per_epoch: batches in the dataset, None when it repeats forever.
        stages: (block index, [layer names]) per stage, bottom to top.
        plan: the run's `graph.Plan` (where each layer sits in the model).
        top: the index of the model's last layer; a stage there has nothing above it to fine-tune.
    """

    def __init__(self, config, steps_per_epoch, stages, plan, *, top):
        self.config, self.steps_per_epoch, self.stages, self.plan, self.top = config, steps_per_epoch, stages, plan, top

    @staticmethod
    def check(config, steps_per_epoch):
        """Refuse epoch budgets on a dataset that repeats forever (`"pass"` needs none of its own)."""
        if steps_per_epoch is None and (config.steps_per_layer is None or config.finetune_steps is None or (
                config.final_finetune_steps is None and config.final_finetune_epochs not in ("pass", 0.0))):
            raise ConfigError("the dataset repeats forever, so epoch budgets are undefined: set "
                              "steps_per_layer, finetune_steps (and final_finetune_steps for a last phase) in "
                              "BinarizeConfig.")

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
    if steps_per_epoch is None and config.steps is None:
        raise ConfigError("the dataset repeats forever, so an epoch budget is undefined: set "
                          "EndToEndConfig(steps=...).")
    total = steps(config.steps, config.epochs, steps_per_epoch)
    if config.method == "reactnet":
        total = max(total, 2)
        return [total // 2, total - total // 2]
    return [total]


__all__ = ["PassBudget", "end_to_end_phases", "steps"]
