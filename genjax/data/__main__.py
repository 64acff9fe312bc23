"""Prepare or inspect a dataset from the shell.

  python -m genjax.data prepare shakespeare        # or fashion_mnist, FILE.txt, IMAGE_FOLDER/
  python -m genjax.data inspect shakespeare        # the data card + a few examples
  python -m genjax.data inspect fashion_mnist      # + a PNG grid of images (path printed)

Both build the dataset if it is not prepared yet (never downloading) and write its data card.
  --data_dir DIR     default $GENJAX_DATA_DIR or ~/.cache/genjax/tfds (as training uses)
  --cleaning SPEC    text: "default" (genjax.data.cleaning.DEFAULTS, what the LM config uses),
                     "none" (the text as it is), or comma-separated stage names
  --source_dir DIR   Fashion-MNIST IDX folder; --image_size/--channels/--test_percent: folders
  --examples N       examples shown by inspect; --out PATH: where inspect writes the grid
A missing dataset, file or folder prints one line `error: ...` and exits with status 2.
"""
from __future__ import annotations

import os
import sys
import types

TEXT_NAMES, IMAGE_NAMES = ("shakespeare",), ("fashion_mnist",)


class CliError(Exception):
    """Bad input: printed as one `error:` line, exit status 2."""


def _kind(target: str) -> str:
    if target in TEXT_NAMES or os.path.isfile(target):
        return "text"
    if target in IMAGE_NAMES or os.path.isdir(target):
        return "images"
    raise CliError(f"no dataset, file or folder {target!r}: give one of "
                   f"{', '.join(TEXT_NAMES + IMAGE_NAMES)}, a text file or an image folder")


def _quiet() -> None:
    import absl.logging
    import tensorflow_datasets as tfds
    absl.logging.set_verbosity(absl.logging.ERROR)
    tfds.disable_progress_bar()


# ----------------------------------------------------------------------- text
def _text_builder(args):
    from genjax.data import cleaning, text_builders
    if args.cleaning == "default":  # what configs/lm_shakespeare.py asks for
        pipeline = cleaning.CleaningPipeline()
    elif args.cleaning == "none" and args.target not in TEXT_NAMES:
        pipeline = None  # a text file as it is (the text-file builder's default)
    else:
        pipeline = cleaning.CleaningPipeline(args.cleaning)
    return text_builders.prepare(args.target, args.data_dir, pipeline)


def _inspect_text(builder, n: int) -> None:
    from genjax.data import text_builders
    for split in sorted(builder.info.splits.keys(), key=lambda s: (s != "train", s)):
        text = text_builders.read_split(builder, split)
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        if len(paragraphs) < n:  # prose without blank lines: show lines
            paragraphs = [l for l in text.split("\n") if l.strip()]
        print(f"\n## {split}: first {min(n, len(paragraphs))} examples\n")
        for p in paragraphs[:n]:
            print(p[:400] + ("..." if len(p) > 400 else ""))
            print("-" * 40)


# ----------------------------------------------------------------------- images
def _image_builder(args):
    from genjax.data import image_builders
    if args.target in IMAGE_NAMES:
        return image_builders.prepare_images(args.target, args.data_dir,
                                             source_dir=args.source_dir)
    return image_builders.prepare_images(args.target, args.data_dir, image_size=args.image_size,
                                         channels=int(args.channels), test_percent=args.test_percent)


def _image_grid(builder, n: int, out: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    source = builder.as_data_source("train")
    names = list(builder.info.metadata["class_names"])
    n = min(n, len(source))
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ex = source[k]
            image = np.asarray(ex["image"], np.uint8)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray",
                      vmin=0, vmax=255)
            ax.set_title(names[int(ex["label"])] if names else str(int(ex["label"])),
                         fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return os.path.abspath(out)


# ----------------------------------------------------------------------- main
def parse(argv: list[str]) -> types.SimpleNamespace:
    """The flags (absl, on their own FlagValues: main() runs in-process too) plus
    `command` and `target`; bad input raises CliError."""
    from absl import flags
    fv = flags.FlagValues()
    flags.DEFINE_string("data_dir", "", "default $GENJAX_DATA_DIR or ~/.cache/genjax/tfds",
                        flag_values=fv)
    flags.DEFINE_string("cleaning", "default", "text: default | none | stage,stage,...",
                        flag_values=fv)
    flags.DEFINE_string("source_dir", "", "Fashion-MNIST IDX folder", flag_values=fv)
    flags.DEFINE_integer("image_size", 0, "image folders: side in pixels (0 = native)",
                         lower_bound=0, upper_bound=2048, flag_values=fv)
    flags.DEFINE_enum("channels", "0", ["0", "1", "3"], "image folders: 1 | 3 (0 = native)",
                      flag_values=fv)
    flags.DEFINE_integer("test_percent", 10, "image folders: test split", lower_bound=1,
                         upper_bound=99, flag_values=fv)
    flags.DEFINE_integer("examples", 3, "examples shown by inspect", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_string("out", "", "where inspect writes the image grid", flag_values=fv)
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(__doc__ + "\n" + fv.get_help())
        raise SystemExit(0)
    try:
        rest = fv(["python -m genjax.data", *argv])[1:]
    except flags.Error as e:
        raise CliError(str(e).strip().splitlines()[0]) from None
    if len(rest) != 2 or rest[0] not in ("prepare", "inspect"):
        raise CliError(f"usage: python -m genjax.data prepare|inspect TARGET [--flags]; "
                       f"got {rest}")
    return types.SimpleNamespace(**fv.flag_values_dict(), command=rest[0], target=rest[1])


def main(argv: list[str]) -> None:
    args = parse(argv)
    kind = _kind(args.target)
    _quiet()
    from genjax.data import data_card
    builder = _text_builder(args) if kind == "text" else _image_builder(args)
    directory = builder.data_dir
    if args.command == "prepare":
        card = data_card.read_card(directory)
        sizes = ", ".join(f"{s} {v['examples']}" for s, v in card["splits"].items())
        print(f"prepared {card['dataset']} ({sizes} examples)")
        print(f"data card: {os.path.join(directory, data_card.CARD_MD)}")
        return
    with open(os.path.join(directory, data_card.CARD_MD), encoding="utf-8") as f:
        print(f.read())
    if kind == "text":
        _inspect_text(builder, args.examples)
    else:
        out = args.out or f"inspect_{builder.name}.png"
        print(f"image grid: {_image_grid(builder, max(args.examples, 16), out)}")


def run(argv: list[str] | None = None) -> None:
    """main() with bad input turned into one `error:` line and exit status 2."""
    from genjax import runtime
    from genjax.errors import ConfigError, UserError
    try:
        runtime.refuse_multi_process_launch("genjax.data")  # every host would build the same
        main(sys.argv[1:] if argv is None else argv)
    except (CliError, UserError, ConfigError, FileNotFoundError, ValueError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a path that cannot be written or read
        why = ("is a file where a folder is needed"
               if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror or e)
        print(f"error: {e.filename!r} {why}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
