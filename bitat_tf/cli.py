"""The `bitat-tf` command line.

    bitat-tf demo                      train a small CNN on sklearn's digits, binarize it, compare
    bitat-tf binarize MODEL --data D   binarize a saved tf_keras model on a named dataset
    bitat-tf export MODEL OUT          write a TFLite / LCE flatbuffer of a binarized model

This entry point, unlike the library, may set process-wide state: it chooses Keras 2 before TensorFlow
loads, because Larq needs it.
"""

import argparse
import os
import sys


def _prepare_environment():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _load_tensorflow_quietly()


def _load_tensorflow_quietly():
    """Import TensorFlow and probe its devices with native stderr silenced.

    TensorFlow's C++ start-up (absl, oneDNN and, on machines without a GPU, CUDA's "failed call to
    cuInit") writes to stderr before TF_CPP_MIN_LOG_LEVEL takes effect; a CPU user should not see it.
    Python-level errors are raised after stderr is restored, so nothing the user needs is hidden.
    """
    if os.environ.get("BITAT_TF_VERBOSE_STARTUP"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _config_arguments(parser):
    group = parser.add_argument_group("BiTAT configuration (see bitat_tf.BinarizeConfig; unset = its default)")
    group.add_argument("--paper", action="store_true",
                       help="Algorithm 1 as published (BinarizeConfig.paper): the pass alone, no distillation, "
                            "no last phase")
    group.add_argument("--variant")
    group.add_argument("--max-groups", type=int)
    group.add_argument("--quant-weight", type=float)
    group.add_argument("--epochs-per-layer", type=float)
    group.add_argument("--finetune-epochs", type=float)
    group.add_argument("--steps-per-layer", type=int)
    group.add_argument("--finetune-steps", type=int)
    group.add_argument("--final-finetune-epochs", type=_epochs_or_pass,
                       help='epochs, or "pass" (--final-pass-multiple times as long as the pass)')
    group.add_argument("--final-pass-multiple", type=float, help="the last phase's length in passes (default 7)")
    group.add_argument("--learning-rate", type=float)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--deterministic", action="store_true", default=None,
                       help="the same binary model and report from the same seed in any process (TensorFlow's op "
                            "determinism and ordered data; slower): BinarizeConfig(deterministic=True)")


def _epochs_or_pass(text):
    return text if text == "pass" else float(text)


_CONFIG_FIELDS = ("variant", "max_groups", "quant_weight", "epochs_per_layer", "finetune_epochs", "steps_per_layer",
                  "finetune_steps", "final_finetune_epochs", "final_pass_multiple", "learning_rate", "seed",
                  "deterministic")


def _config_from(args, **overrides):
    import bitat_tf

    fields = {k: getattr(args, k) for k in _CONFIG_FIELDS if getattr(args, k, None) is not None}
    fields.update(overrides)
    return (bitat_tf.BinarizeConfig.paper if args.paper else bitat_tf.BinarizeConfig)(**fields)


def _configuration_flags(args):
    """The flags of the "BiTAT configuration" group given on the command line, but --seed and --deterministic,
    which --epochs passes to the recipe it chooses."""
    given = [f"--{name.replace('_', '-')}" for name in _CONFIG_FIELDS
             if name not in ("seed", "deterministic") and getattr(args, name, None) is not None]
    return (["--paper"] if args.paper else []) + given


def _check_epochs(args):
    """--epochs chooses the recipe and all its settings, so it cannot come with flags that set them."""
    flags = _configuration_flags(args)
    if args.epochs is not None and flags:
        from bitat_tf.errors import ConfigError

        raise ConfigError(f"--epochs {args.epochs:g} chooses the recipe and its settings for that budget, and "
                          f"{', '.join(flags)} set{'s' if len(flags) == 1 else ''} them yourself: choose one "
                          "(--epochs alone, or the configuration flags without it).")


def _write_outputs(result, args):
    if args.report:
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        result.report.to_json(args.report)
        print(f"report written to {args.report}")
    if getattr(args, "output", None):
        result.model.save(args.output)
        print(f"binary model written to {args.output}")


def run_demo(args):
    """Main job on the embedded default: sklearn digits, no download."""
    import bitat_tf
    from bitat_tf import data, fp_training, zoo
    from bitat_tf.inputs import check_output_file

    if getattr(args, "output", None):
        check_output_file(args.output, "--output")

    from bitat_tf._compat import keras

    keras.utils.set_random_seed(args.seed)  # the full-precision CNN too: the same figures run after run
    train, test = data.load_digits(batch_size=64, seed=args.seed)
    model = zoo.small_cnn(input_shape=(8, 8, 1), num_classes=10)
    model, info = fp_training.train_full_precision(model, train, epochs=args.fp_epochs, learning_rate=3e-3,
                                                   validation_data=test, verbose=0)
    print(f"full-precision small CNN trained in {info['seconds']:.0f}s")
    config = _config_from(args)
    result = bitat_tf.binarize(model, train, validation_data=test, config=config,
                               checkpoint_dir=args.checkpoint_dir, verbose=args.verbose)
    report = result.report
    if args.verbose >= 2:
        print(report.to_markdown())
    print(f"\n{'model':<16}{'test accuracy':>14}\n{'full precision':<16}{report.fp_accuracy:>14.4f}\n"
          f"{'binary (BiTAT)':<16}{report.binary_accuracy:>14.4f}")
    if args.verbose == 1 and not args.report:
        print("per-layer report: --verbose 2 (markdown) or --report FILE (JSON)")
    _write_outputs(result, args)
    return 0


def run_binarize(args):
    import bitat_tf
    from bitat_tf import data
    from bitat_tf.inputs import check_output_file, load_saved_model
    from bitat_tf.userdata import is_user_data, load_user_data

    _check_epochs(args)
    if args.output:  # checked before hours of training, not after
        check_output_file(args.output, "--output")
    model = load_saved_model(args.model)
    if is_user_data(args.data):
        train, test = load_user_data(args.data, input_shape=model.input_shape[1:],
                                     validation_split=args.validation_split, batch_size=args.batch_size,
                                     seed=args.seed, rescale=args.rescale, image_key=args.image_key,
                                     label_key=args.label_key)
    else:
        train = data.load(args.data, "train", batch_size=args.batch_size, data_dir=args.data_dir)
        test = data.load(args.data, "test", batch_size=args.batch_size, data_dir=args.data_dir)
    # --epochs: binarize chooses the recipe for the budget (no config); else the configuration flags'
    config = None if args.epochs is not None else _config_from(args)
    chosen = {} if config is not None else {"seed": args.seed, "deterministic": args.deterministic}
    result = bitat_tf.binarize(model, train, validation_data=test, config=config, epochs=args.epochs, **chosen,
                               checkpoint_dir=args.checkpoint_dir, verbose=args.verbose)
    recipe = result.report.recipe
    if recipe is not None and args.verbose >= 1:
        print(f"recipe: {recipe['description']}: {recipe['reason']}")
    print(result.report.to_markdown())
    _write_outputs(result, args)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="bitat-tf", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="binarize a small CNN trained on sklearn's digits (no download)")
    demo.add_argument("--fp-epochs", type=int, default=20)
    demo.set_defaults(func=run_demo)

    binarize = sub.add_parser("binarize", help="binarize a saved tf_keras model")
    binarize.add_argument("model", help="a saved tf_keras model (.keras, .h5 or SavedModel directory)")
    binarize.add_argument("--data", required=True,
                          help="digits, mnist, cifar10, tfds:<name>, or your data: a folder of class folders "
                               "of images, an .npz with x and y, or TFRecord files (image and label features)")
    binarize.add_argument("--validation-split", type=float, default=0.1,
                          help="share of your data held out to measure accuracy (default 0.1)")
    binarize.add_argument("--rescale", type=float, default=1 / 255,
                          help="pixel scale for your images (default 1/255: [0, 1]; 1 keeps 0-255)")
    binarize.add_argument("--image-key", default="image", help="TFRecord feature holding the encoded image")
    binarize.add_argument("--label-key", default="label", help="TFRecord feature holding the class index")
    binarize.add_argument("--data-dir", help="folder with the data copies (default: $BITAT_DATASETS or "
                                             "../shared/datasets)")
    binarize.add_argument("--batch-size", type=int, default=128)
    binarize.add_argument("--output", help="where to save the binary model (.keras)")
    binarize.add_argument("--epochs", type=float,
                          help="the whole run's budget in epochs of the data: binarize runs the recipe that led the "
                               "measured curves at that budget a binarized layer (bitat_tf.binarize(epochs=)); "
                               "not with the BiTAT configuration flags (--seed aside)")
    binarize.set_defaults(func=run_binarize)

    for command in (demo, binarize):
        _config_arguments(command)
        command.add_argument("--checkpoint-dir", help="resume from / save to this folder after each layer")
        command.add_argument("--report", help="write the report as JSON here")
        command.add_argument("--verbose", type=int, default=1,
                             help="0 silent; 1 (default) a progress bar per stage on a terminal, summary lines in "
                                  "a log; 2 a line per epoch (and the demo's per-layer report)")
    # digits has 22 batches an epoch: a few epochs per layer still take seconds (and seven times the pass
    # in the default recipe's last phase)
    demo.set_defaults(epochs_per_layer=1.5, finetune_epochs=0.5, max_groups=16)

    try:
        from bitat_tf import export
    except ImportError:  # pragma: no cover - export ships with the package
        export = None
    if export is not None and hasattr(export, "add_cli_arguments"):
        export_parser = sub.add_parser("export", help="write a TFLite or LCE flatbuffer")
        export.add_cli_arguments(export_parser)
        export_parser.set_defaults(func=export.run_cli)
    return parser


def main(argv=None):
    _prepare_environment()
    args = build_parser().parse_args(argv)
    from bitat_tf.errors import BitatError, TrainingError

    try:
        return args.func(args)
    except (BitatError, TrainingError) as err:  # bad input, or a run that diverged: a message, no traceback
        print(f"bitat-tf: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


