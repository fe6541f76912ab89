"""Train/val/test splits that never come out empty.

A split is a list of *stretches*: a video's source frames ``start..end`` (inclusive) given to one
split. ``data.labels.split_by`` chooses how:

* ``video``: every video whole in one split, stratified by its majority class and seeded. A class
  needs a video for each split (given ``split``-column videos count): with fewer, ingest refuses
  with one line per such class, naming its video count and the fixes.
* ``time``: every video cut in time: its first ``fractions[0]`` of frames train, the next
  ``fractions[1]`` val, the rest test. The clip index keeps clips half a clip span away from each
  inner cut, so no clip crosses a cut and clips of two splits are a span apart or more.
* ``auto`` (the default): ``video`` for each class with enough videos, ``time`` for the others.

Videos pinned by the CSV's ``split`` column stay whole in their split. A split with a fraction of 0
is meant to be empty; any other split that comes out empty is an error.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from movinet.data.labels import Labels

SPLIT_NAMES = ("train", "val", "test")
SPLIT_BY = ("auto", "video", "time")


@dataclass(frozen=True)
class Stretch:
    video: str
    split: str
    start: int  # first source frame
    end: int  # last source frame (inclusive)


class SplitError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        fixes = (
            "fixes: add videos of these classes, give some videos a split in the CSV's `split` column, "
            "or split in time (data.labels.split_by=time or auto)"
        )
        super().__init__("cannot split the videos into train, val and test:\n  " + "\n  ".join([*problems, fixes]))


def assign_splits(
    labels: Labels,
    lengths: Mapping[str, int],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    split_by: str = "auto",
) -> list[Stretch]:
    """The stretches of every labelled video (``lengths``: its source frame count). Seeded: the same
    videos, labels and seed always give the same split."""
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three shares >= 0 that sum to 1, got {tuple(fractions)}")
    wanted = [s for s, f in zip(SPLIT_NAMES, fractions) if f > 0]
    pinned = {v: s for v, s in labels.given_splits.items() if v in labels.frames}
    stretches = [Stretch(v, s, 0, lengths[v] - 1) for v, s in pinned.items()]
    pinned_splits: dict[str, set[str]] = defaultdict(set)
    strata: dict[str, list[str]] = defaultdict(list)
    for video in sorted(labels.frames):
        label = labels.majority(video) or ""
        if video in pinned:
            pinned_splits[label].add(pinned[video])
        else:
            strata[label].append(video)
    rng, problems = random.Random(seed), []
    for label in sorted(strata):
        members = strata[label]
        rng.shuffle(members)
        needed = [s for s in wanted if s not in pinned_splits[label]]
        if split_by == "time" or (split_by == "auto" and len(members) < len(needed)):
            stretches += [s for v in members for s in by_time(v, lengths[v], fractions)]
        elif len(members) < len(needed):
            problems.append(f"class {label!r}: {len(members)} video(s) for {len(needed)} splits ({', '.join(needed)})")
        else:
            counts = _video_counts(len(members), fractions, needed)
            names = [
                s for s in ("test", "val", "train") for _ in range(counts[s])
            ]  # test, val, then train: the demo keeps its split
            stretches += [Stretch(v, s, 0, lengths[v] - 1) for v, s in zip(members, names)]
    if problems:
        raise SplitError(problems)
    empty = [s for s in wanted if not any(st.split == s for st in stretches)]
    if empty:
        raise SplitError([f"the {s} split would be empty" for s in empty])
    return sorted(stretches, key=lambda s: (s.video, s.start))


def _video_counts(n: int, fractions: tuple[float, float, float], needed: list[str]) -> dict[str, int]:
    """Videos per split: val and test ``round(n * share)``, train the rest; then a video moved from the
    fullest split to each needed split that has none."""
    counts = {"test": round(n * fractions[2]), "val": round(n * fractions[1])}
    counts["train"] = n - counts["test"] - counts["val"]
    while any(counts[s] < 0 or (s in needed and counts[s] < 1) for s in SPLIT_NAMES):
        short = next(s for s in SPLIT_NAMES if counts[s] < 0 or (s in needed and counts[s] < 1))
        donor = max((d for d in SPLIT_NAMES if d != short), key=lambda d: counts[d] - (d in needed))
        counts[donor] -= 1
        counts[short] += 1
    return counts


def by_time(video: str, frames: int, fractions: tuple[float, float, float]) -> list[Stretch]:
    """``video``'s frames cut in time by ``fractions`` (train first, then val, then test)."""
    cuts = [0, round(frames * fractions[0]), round(frames * (fractions[0] + fractions[1])), frames]
    return [Stretch(video, s, a, b - 1) for s, a, b in zip(SPLIT_NAMES, cuts, cuts[1:]) if b > a]


def videos_per_split(stretches: list[Stretch]) -> dict[str, int]:
    return {s: len({st.video for st in stretches if st.split == s}) for s in SPLIT_NAMES}
