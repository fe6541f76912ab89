"""MoViNet A0–A5 as data: the block tables of the paper / TF Model Garden ``BLOCK_SPECS``.

Each model is a stem width, five blocks of layers and a head width. A layer is
``(expand, kernel, spatial_stride)``; every layer of a block has the block's output width, and the
input width of a layer is the output width of the one before it. The temporal stride is 1 everywhere,
so the number of frames never changes inside the network.

The parameter counts these tables give (tests/test_model_specs.py) equal the official figures exactly,
which is what proves the tables right.
"""

from __future__ import annotations

from dataclasses import dataclass

Kernel = tuple[int, int, int]  # (t, h, w)

K13: Kernel = (1, 3, 3)
K15: Kernel = (1, 5, 5)
K33: Kernel = (3, 3, 3)
K53: Kernel = (5, 3, 3)

CLASSIFIER_HIDDEN = 2048
STOCHASTIC_DEPTH = 0.2


@dataclass(frozen=True)
class Block:
    out: int
    layers: list[tuple[int, Kernel, int]]  # (expand, kernel, spatial stride)


@dataclass(frozen=True)
class LayerSpec:
    """One MoViNet layer with its input width resolved (what the block constructor needs)."""

    name: str  # "b{i}_l{j}", the TF/port naming
    cin: int
    expand: int
    out: int
    kernel: Kernel
    stride: int


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    stem: int
    blocks: list[Block]
    head: int
    resolution: int  # eval/train image size (square)
    eval_frames: int  # frames of the official eval clip
    fps: int  # frame rate the published models were trained at
    dropout: dict[str, float]  # classifier dropout per variant
    positional_encoding: bool  # stream SE adds a sinusoid (A3–A5)

    def layers(self) -> list[LayerSpec]:
        out, cin = [], self.stem
        for i, block in enumerate(self.blocks):
            for j, (expand, kernel, stride) in enumerate(block.layers):
                out.append(LayerSpec(f"b{i}_l{j}", cin, expand, block.out, kernel, stride))
                cin = block.out
        return out


SPECS: dict[str, ModelSpec] = {
    "a0": ModelSpec(
        "a0",
        stem=8,
        head=480,
        resolution=172,
        eval_frames=50,
        fps=5,
        dropout={"base": 0.2, "stream": 0.2},
        positional_encoding=False,
        blocks=[
            Block(8, [(24, K15, 2)]),
            Block(32, [(80, K33, 2), (80, K33, 1), (80, K33, 1)]),
            Block(56, [(184, K53, 2), (112, K33, 1), (184, K33, 1)]),
            Block(56, [(184, K53, 1), (184, K33, 1), (184, K33, 1), (184, K33, 1)]),
            Block(104, [(384, K53, 2), (280, K15, 1), (280, K15, 1), (344, K15, 1)]),
        ],
    ),
    "a1": ModelSpec(
        "a1",
        stem=16,
        head=600,
        resolution=172,
        eval_frames=50,
        fps=5,
        dropout={"base": 0.5, "stream": 0.2},
        positional_encoding=False,
        blocks=[
            Block(16, [(40, K15, 2), (40, K33, 1)]),
            Block(40, [(96, K33, 2), (120, K33, 1), (96, K33, 1), (96, K33, 1)]),
            Block(64, [(216, K53, 2), (128, K33, 1), (216, K33, 1), (168, K33, 1), (216, K33, 1)]),
            Block(64, [(216, K53, 1), (216, K33, 1), (216, K33, 1), (128, K33, 1), (128, K15, 1), (216, K33, 1)]),
            Block(
                136,
                [
                    (456, K53, 2),
                    (360, K15, 1),
                    (360, K15, 1),
                    (360, K15, 1),
                    (456, K15, 1),
                    (456, K33, 1),
                    (544, K13, 1),
                ],
            ),
        ],
    ),
    "a2": ModelSpec(
        "a2",
        stem=16,
        head=640,
        resolution=224,
        eval_frames=50,
        fps=5,
        dropout={"base": 0.5, "stream": 0.5},
        positional_encoding=False,
        blocks=[
            Block(16, [(40, K15, 2), (40, K33, 1), (64, K33, 1)]),
            Block(40, [(96, K33, 2), (120, K33, 1), (96, K33, 1), (96, K33, 1), (120, K33, 1)]),
            Block(72, [(240, K53, 2), (160, K33, 1), (240, K33, 1), (192, K33, 1), (240, K33, 1)]),
            Block(72, [(240, K53, 1), (240, K33, 1), (240, K33, 1), (240, K33, 1), (144, K15, 1), (240, K33, 1)]),
            Block(
                144,
                [
                    (480, K53, 2),
                    (384, K15, 1),
                    (384, K15, 1),
                    (480, K15, 1),
                    (480, K15, 1),
                    (480, K33, 1),
                    (576, K13, 1),
                ],
            ),
        ],
    ),
    "a3": ModelSpec(
        "a3",
        stem=16,
        head=744,
        resolution=256,
        eval_frames=120,
        fps=12,
        dropout={"base": 0.5, "stream": 0.5},
        positional_encoding=True,
        blocks=[
            Block(16, [(40, K15, 2), (40, K33, 1), (64, K33, 1), (40, K33, 1)]),
            Block(48, [(112, K33, 2), (144, K33, 1), (112, K33, 1), (112, K15, 1), (144, K33, 1), (144, K33, 1)]),
            Block(80, [(240, K53, 2), (152, K33, 1), (240, K33, 1), (192, K33, 1), (240, K33, 1)]),
            Block(
                88,
                [
                    (264, K53, 1),
                    (264, K33, 1),
                    (264, K33, 1),
                    (264, K33, 1),
                    (160, K15, 1),
                    (264, K33, 1),
                    (264, K33, 1),
                    (264, K33, 1),
                ],
            ),
            Block(
                168,
                [
                    (560, K53, 2),
                    (448, K15, 1),
                    (448, K15, 1),
                    (560, K15, 1),
                    (560, K15, 1),
                    (560, K33, 1),
                    (448, K15, 1),
                    (448, K15, 1),
                    (560, K33, 1),
                    (672, K13, 1),
                ],
            ),
        ],
    ),
    "a4": ModelSpec(
        "a4",
        stem=24,
        head=856,
        resolution=290,
        eval_frames=80,
        fps=8,
        dropout={"base": 0.5, "stream": 0.5},
        positional_encoding=True,
        blocks=[
            Block(24, [(64, K15, 2), (64, K33, 1), (96, K33, 1), (64, K33, 1), (96, K33, 1), (64, K33, 1)]),
            Block(
                56,
                [
                    (168, K33, 2),
                    (168, K33, 1),
                    (136, K33, 1),
                    (136, K33, 1),
                    (168, K33, 1),
                    (168, K33, 1),
                    (168, K33, 1),
                    (136, K15, 1),
                    (136, K33, 1),
                ],
            ),
            Block(
                96,
                [
                    (320, K53, 2),
                    (160, K33, 1),
                    (320, K33, 1),
                    (192, K33, 1),
                    (320, K33, 1),
                    (160, K33, 1),
                    (320, K33, 1),
                    (256, K33, 1),
                    (320, K33, 1),
                ],
            ),
            Block(
                96,
                [
                    (320, K53, 1),
                    (320, K33, 1),
                    (320, K33, 1),
                    (320, K33, 1),
                    (192, K15, 1),
                    (320, K33, 1),
                    (320, K33, 1),
                    (192, K33, 1),
                    (320, K33, 1),
                    (320, K33, 1),
                ],
            ),
            Block(
                192,
                [
                    (640, K53, 2),
                    (512, K15, 1),
                    (512, K15, 1),
                    (640, K15, 1),
                    (640, K15, 1),
                    (640, K33, 1),
                    (512, K15, 1),
                    (512, K15, 1),
                    (640, K15, 1),
                    (768, K15, 1),
                    (640, K15, 1),
                    (640, K33, 1),
                    (768, K33, 1),
                ],
            ),
        ],
    ),
    "a5": ModelSpec(
        "a5",
        stem=24,
        head=992,
        resolution=320,
        eval_frames=120,
        fps=12,
        dropout={"base": 0.5, "stream": 0.5},
        positional_encoding=True,
        blocks=[
            Block(24, [(64, K15, 2), (64, K15, 1), (96, K33, 1), (64, K33, 1), (96, K33, 1), (64, K33, 1)]),
            Block(
                64,
                [
                    (192, K53, 2),
                    (152, K33, 1),
                    (152, K33, 1),
                    (152, K33, 1),
                    (192, K33, 1),
                    (192, K33, 1),
                    (192, K33, 1),
                    (152, K33, 1),
                    (152, K33, 1),
                    (192, K33, 1),
                    (192, K33, 1),
                ],
            ),
            Block(
                112,
                [
                    (376, K53, 2),
                    (224, K33, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                    (296, K33, 1),
                    (376, K33, 1),
                    (224, K33, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                    (296, K33, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                ],
            ),
            Block(
                120,
                [
                    (376, K53, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                    (224, K15, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                    (224, K33, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                    (376, K33, 1),
                ],
            ),
            Block(
                224,
                [
                    (744, K53, 2),
                    (744, K33, 1),
                    (600, K15, 1),
                    (600, K15, 1),
                    (744, K15, 1),
                    (744, K15, 1),
                    (744, K33, 1),
                    (896, K15, 1),
                    (600, K15, 1),
                    (600, K15, 1),
                    (896, K15, 1),
                    (744, K15, 1),
                    (744, K33, 1),
                    (896, K15, 1),
                    (600, K15, 1),
                    (600, K15, 1),
                    (744, K15, 1),
                    (744, K33, 1),
                ],
            ),
        ],
    ),
}

ARCHS = tuple(SPECS)
VARIANTS = ("base", "stream")
