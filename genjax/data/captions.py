"""Captions for Fashion-MNIST: class names -> phrasings (templates x synonyms), with a
held-out split of phrasings, and a deterministic choice per (seed, example, step).

  phrasings(5, "train")[:2]   # ['a photo of a sandal', 'a photo of a flip-flop']
  caption_ids(labels_B, index_B, step, seed=0, split="train")  # phrasing row per example

Split (fixed here, so every run and test agrees):
  train    TRAIN_TEMPLATES x the "train" synonyms of the class.
  heldout  every phrasing that uses a HELDOUT template or a "heldout" synonym (or both);
           never seen in training. Each held-out template and synonym is a new arrangement
           of words that training captions use (tested), so held-out accuracy measures
           composition, not words the text encoder never saw.
A template takes the singular ({s}) or plural ({p}) form of a synonym. Several synonyms
share words across classes on purpose ("shirt" / "t-shirt", "running shoe" / "open-toe
shoe", "long sleeve" / "long pants"): the encoder must read the whole phrase.

The choice of phrasing is a hash of (seed, example index, step): a resumed run draws the
same captions, and an example gets a different phrasing each time it is seen.
"""
from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np

from genjax.data.image_builders import FASHION_MNIST_CLASSES

SPLITS = ("train", "heldout")

TRAIN_TEMPLATES = (
    "a photo of a {s}", "a picture of the {s}", "{s}", "a {s} on white",
    "{p} on a white background", "a product photo of {p}", "a grey {s}",
    "a small image of a {s}", "a pair of {p}", "some {p}", "a black and white picture of a {s}",
    "a low resolution photo of the {s}", "the {s} in a small photo")
HELDOUT_TEMPLATES = (
    "{s} on white", "a picture of some {p}", "a small grey {s}", "the {s} in black and white",
    "a white background photo of a {s}")

# class name -> {"train": [(singular, plural), ...], "heldout": [...]}
SYNONYMS = {
    "T-shirt/top": {
        "train": [("t-shirt", "t-shirts"), ("tee", "tees"), ("top", "tops"),
                  ("short sleeve top", "short sleeve tops"),
                  ("cotton t-shirt", "cotton t-shirts")],
        "heldout": [("short sleeve tee", "short sleeve tees"), ("cotton top", "cotton tops")]},
    "Trouser": {
        "train": [("trousers", "trousers"), ("pants", "pants"), ("jeans", "jeans"),
                  ("long pants", "long pants"), ("denim jeans", "denim jeans")],
        "heldout": [("long trousers", "long trousers"), ("denim pants", "denim pants")]},
    "Pullover": {
        "train": [("pullover", "pullovers"), ("sweater", "sweaters"), ("jumper", "jumpers"),
                  ("knit sweater", "knit sweaters"), ("wool pullover", "wool pullovers")],
        "heldout": [("knit jumper", "knit jumpers"), ("wool sweater", "wool sweaters")]},
    "Dress": {
        "train": [("dress", "dresses"), ("gown", "gowns"), ("summer dress", "summer dresses"),
                  ("evening gown", "evening gowns"), ("midi dress", "midi dresses")],
        "heldout": [("evening dress", "evening dresses"), ("summer gown", "summer gowns")]},
    "Coat": {
        "train": [("coat", "coats"), ("jacket", "jackets"), ("overcoat", "overcoats"),
                  ("winter coat", "winter coats"), ("rain jacket", "rain jackets")],
        "heldout": [("winter jacket", "winter jackets"), ("rain coat", "rain coats")]},
    "Sandal": {
        "train": [("sandal", "sandals"), ("flip-flop", "flip-flops"),
                  ("strappy sandal", "strappy sandals"), ("open-toe shoe", "open-toe shoes"),
                  ("beach sandal", "beach sandals")],
        "heldout": [("beach flip-flop", "beach flip-flops"),
                    ("strappy flip-flop", "strappy flip-flops")]},
    "Shirt": {
        "train": [("shirt", "shirts"), ("button-up shirt", "button-up shirts"),
                  ("blouse", "blouses"), ("long sleeve shirt", "long sleeve shirts"),
                  ("flannel shirt", "flannel shirts")],
        "heldout": [("long sleeve blouse", "long sleeve blouses"),
                    ("button-up blouse", "button-up blouses")]},
    "Sneaker": {
        "train": [("sneaker", "sneakers"), ("running shoe", "running shoes"),
                  ("trainer", "trainers"), ("canvas sneaker", "canvas sneakers"),
                  ("sports shoe", "sports shoes")],
        "heldout": [("running sneaker", "running sneakers"),
                    ("canvas trainer", "canvas trainers")]},
    "Bag": {
        "train": [("bag", "bags"), ("handbag", "handbags"), ("purse", "purses"),
                  ("leather bag", "leather bags"), ("tote bag", "tote bags")],
        "heldout": [("leather handbag", "leather handbags"), ("leather purse", "leather purses")]},
    "Ankle boot": {
        "train": [("ankle boot", "ankle boots"), ("boot", "boots"), ("bootie", "booties"),
                  ("chelsea boot", "chelsea boots"), ("suede boot", "suede boots")],
        "heldout": [("suede ankle boot", "suede ankle boots"),
                    ("chelsea bootie", "chelsea booties")]},
}
assert tuple(SYNONYMS) == FASHION_MNIST_CLASSES

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")  # letters/digits, inner hyphens/apostrophes


def words(text: str) -> list[str]:
    """NFKC, case-folded words; everything else (punctuation, controls, markup) separates."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def check_class_names(class_names) -> None:
    if tuple(class_names) != FASHION_MNIST_CLASSES:
        raise ValueError(f"captions exist for the Fashion-MNIST classes {FASHION_MNIST_CLASSES}, "
                         f"not {tuple(class_names)}")


def _fill(template: str, synonym: tuple[str, str]) -> str:
    return template.format(s=synonym[0], p=synonym[1])


@functools.lru_cache(maxsize=None)
def phrasings(label: int, split: str = "train") -> tuple[str, ...]:
    """Every caption of class `label` in `split`, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"caption split {split!r}: choose one of {SPLITS}")
    syn = SYNONYMS[FASHION_MNIST_CLASSES[label]]
    if split == "train":
        pairs = [(t, s) for t in TRAIN_TEMPLATES for s in syn["train"]]
    else:
        pairs = [(t, s) for t in HELDOUT_TEMPLATES for s in syn["train"] + syn["heldout"]]
        pairs += [(t, s) for t in TRAIN_TEMPLATES for s in syn["heldout"]]
    return tuple(_fill(t, s) for t, s in pairs)


def default_caption(label: int) -> str:
    """The first training phrasing: 'a photo of a t-shirt', ... (sample grids)."""
    return phrasings(label, "train")[0]


# ------------------------------------------------------------------ deterministic choice
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele et al. 2014), elementwise on uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def choice_hash(seed: int, index_B, step: int) -> np.ndarray:
    """uint64[B]: a well-mixed hash of (seed, example index, step)."""
    index_B = np.asarray(index_B, np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(np.full(index_B.shape, np.uint64(seed % 2**64)) + _GOLDEN)
        h = _mix(h ^ index_B)
        return _mix(h ^ np.uint64(step % 2**64))


def caption_ids(labels_B, index_B, step: int, *, seed: int, split: str = "train") -> np.ndarray:
    """int64[B]: which phrasing of its class (row of `phrasings(label, split)`) each
    example gets at `step`."""
    labels_B = np.asarray(labels_B, np.int64)
    counts = np.array([len(phrasings(c, split)) for c in range(len(FASHION_MNIST_CLASSES))],
                      np.uint64)
    return (choice_hash(seed, index_B, step) % counts[labels_B]).astype(np.int64)


def captions(labels_B, index_B, step: int, *, seed: int, split: str = "train") -> list[str]:
    """The caption strings (for inspection; the pipeline uses token tables)."""
    ids = caption_ids(labels_B, index_B, step, seed=seed, split=split)
    return [phrasings(int(y), split)[int(i)] for y, i in zip(np.asarray(labels_B), ids)]


# ------------------------------------------------------------------ prompt -> class
@functools.lru_cache(maxsize=None)
def _synonym_words() -> tuple[tuple[tuple[str, ...], int], ...]:
    """(word sequence, class) for both forms of every synonym."""
    out = {(tuple(words(form)), label)
           for label, name in enumerate(FASHION_MNIST_CLASSES)
           for split in SPLITS for pair in SYNONYMS[name][split] for form in pair}
    return tuple(sorted(out))


def prompt_class(prompt: str) -> int | None:
    """The class a prompt names through a synonym (matched as whole words); None when it
    names none, or several classes ('a shirt and a bag')."""
    ws = words(prompt)
    found = {label for seq, label in _synonym_words()
             if any(tuple(ws[i:i + len(seq)]) == seq for i in range(len(ws) - len(seq) + 1))}
    return found.pop() if len(found) == 1 else None
