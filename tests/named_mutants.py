"""The regression list of named mutants (docs/testing.md): each is a wrong version of the code that
once passed the suite. Every one must now fail the test named beside it.

    python tests/named_mutants.py [--only NAME]

For each mutant: ``src/`` is copied to a temporary folder, one exact piece of text is replaced, and
the named tests run with that copy first on ``PYTHONPATH`` (so the CLI and the stage scripts the
tests start as subprocesses run the mutant too). A mutant that passes its tests is reported, and the
script exits 1. ``make mutate`` runs it after mutmut.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # under src/movinet/
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "base timeline answers uniform probabilities",
        "inference/predictor.py",
        "return p.clip_probabilities(clip[None])[0].numpy()",
        "return np.full(len(p.class_names), 1 / len(p.class_names), np.float32)",
        ("tests/test_predictor.py::test_a_base_model_timeline_is_the_model_on_each_sliding_clip",),
    ),
    Mutant(
        "center crop takes the top-left corner",
        "data/dataset.py",
        "    top, left = (h - size) // 2, (w - size) // 2\n    return clip[:, :, top : top + size, left : left + size]",
        "    top, left = 0, 0\n    return clip[:, :, top : top + size, left : left + size]",
        ("tests/test_data_dataset.py::test_center_crop_resizes_the_short_side_then_cuts_the_middle",),
    ),
    Mutant(
        "random resized crop always at the top-left",
        "data/dataset.py",
        "top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)",
        "top, left = 0, 0",
        ("tests/test_data_dataset.py::test_random_crops_are_windows_of_the_drawn_size_anywhere_in_the_frame",),
    ),
    Mutant(
        "params --check never reports drift",
        "config/params.py",
        "    if written == composed:\n        return None",
        "    if True:\n        return None",
        ("tests/test_config.py::test_check_names_the_keys_that_drifted",),
    ),
    Mutant(
        "stochastic depth switched off",
        "models/layers.py",
        "if self.training and self.drop_rate > 0:",
        "if False and self.drop_rate > 0:",
        ("tests/test_model_shapes.py::test_stochastic_depth_only_in_training",),
    ),
    Mutant(
        "a stream session keeps every frame (memory grows with the video)",
        "inference/predictor.py",
        "        chunk = prepare_frames(kept, self.predictor.prep)\n",
        "        chunk = prepare_frames(kept, self.predictor.prep)\n"
        "        self.__dict__.setdefault('_every_frame', []).append(chunk)\n",
        ("tests/test_inference.py::test_streaming_memory_does_not_grow_with_video_length",),
    ),
    Mutant(
        "a live stream at a higher frame rate is not resampled",
        "inference/predictor.py",
        "self.keep_every = source_fps / prep.fps if",
        "self.keep_every = 1.0 if",
        ("tests/test_predictor.py::test_a_live_stream_keeps_the_frames_the_extraction_keeps",),
    ),
    Mutant(
        "macro F1 weighted by support",
        "training/metrics.py",
        '"macro_f1": MulticlassF1Score(num_classes, average="macro")',
        '"macro_f1": MulticlassF1Score(num_classes, average="weighted")',
        ("tests/test_metrics.py::test_accuracy_macro_f1_and_clip_count_by_hand",),
    ),
    Mutant(
        "confusion matrix transposed (rows predicted)",
        "training/metrics.py",
        "return multiclass_confusion_matrix(logits, labels, num_classes).tolist()",
        "return multiclass_confusion_matrix(logits, labels, num_classes).T.tolist()",
        ("tests/test_metrics.py::test_per_class_table_and_confusion_matrix_by_hand",),
    ),
    Mutant(
        "per-class table with precision and recall swapped",
        "training/metrics.py",
        '"precision": round(float(p), 4), "recall": round(float(r), 4)',
        '"precision": round(float(r), 4), "recall": round(float(p), 4)',
        ("tests/test_evaluate.py::test_the_stage_writes_and_logs_the_metrics_of_the_test_clips",),
    ),
    Mutant(
        "evaluation scores one (the middle) clip per video",
        "data/clips.py",
        "    if count <= 1 or last == 0:",
        "    if True:",
        ("tests/test_evaluate.py::test_the_stage_writes_and_logs_the_metrics_of_the_test_clips",),
    ),
    Mutant(
        "promotion on a tie",
        "tracking/promotion.py",
        "    if new > old:",
        "    if new >= old:",
        ("tests/test_registry.py::test_the_promotion_rule",),
    ),
    Mutant(
        "freeze_backbone trains the backbone too",
        "training/optim.py",
        '        param.requires_grad_(name.startswith("classifier."))',
        "        param.requires_grad_(True)",
        ("tests/test_training_options.py::test_freeze_backbone_steps_the_head_alone",),
    ),
    Mutant(
        "warmup one step short",
        "training/optim.py",
        "            return (step + 1) / warmup",
        "            return step / warmup",
        ("tests/test_training_options.py::test_warmup_then_cosine_schedule",),
    ),
    Mutant(
        "pretrained weights: an unknown tensor ignored",
        "models/weights.py",
        "    if unexpected:",
        "    if False:",
        ("tests/test_training_options.py::test_pretrained_file_with_an_unknown_tensor_is_refused_by_name",),
    ),
    Mutant(
        "a stopped run restarts from step 0",
        "training/run.py",
        "    trainer.fit(module, datamodule=data, ckpt_path=run.resume_from)",
        "    trainer.fit(module, datamodule=data, ckpt_path=None)",
        ("tests/test_pipeline.py::test_a_stopped_run_resumes_exactly_where_it_stopped",),
    ),
]


def run(mutant: Mutant, workdir: Path) -> tuple[bool, str]:
    """(killed?, the tests' last lines) for one mutant."""
    src = workdir / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    path = src / "movinet" / mutant.file
    text = path.read_text()
    if text.count(mutant.old) != 1:
        return False, f"the text to replace is not in {mutant.file} exactly once: update this list"
    path.write_text(text.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *mutant.tests]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = "\n".join(done.stdout.strip().splitlines()[-3:])
    return done.returncode == 1, tail  # 1: tests failed (2-5: interrupted, usage, nothing collected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the mutants whose name contains this")
    args = parser.parse_args()
    survivors = []
    for mutant in MUTANTS:
        if args.only and args.only not in mutant.name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            killed, tail = run(mutant, Path(tmp))
        print(f"{'killed  ' if killed else 'SURVIVED'} {mutant.name}", flush=True)
        if not killed:
            survivors.append(mutant.name)
            print("    " + tail.replace("\n", "\n    "))
    if survivors:
        print(f"{len(survivors)} named mutant(s) not killed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
