"""``movinet labels import``: class folders, Label Studio and CVAT exports, each built here in the tool's
documented format, turned into our labels CSV and read back to per-frame labels; malformed exports
are refused naming the file and the element."""

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from conftest import gray_frames, write_video
from movinet.data.imports import ExportFormatError, from_cvat, from_folders, from_label_studio, write_csv
from movinet.data.labels import read_labels


@dataclass(frozen=True)
class Info:
    frames: int
    fps: float = 10.0


LENGTHS = {"a.mp4": Info(12), "b.avi": Info(6)}


def per_frame(rows, tmp_path, lengths=LENGTHS):
    """The rows through the labels CSV and its reader: what ingestion will see."""
    return read_labels(write_csv(rows, tmp_path / "labels.csv"), lengths).frames


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "movinet.cli", "labels", "import", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_class_folders(tmp_path):
    for rel in ("wave/a.mp4", "clap/b.avi", "clap/more/c.mp4"):
        (tmp_path / "videos" / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(
            tmp_path / "videos" / rel, gray_frames(5, 16, 16), 10, "mpeg4" if rel.endswith("avi") else "libx264"
        )
    done = cli("folders", tmp_path / "videos", "-o", tmp_path / "labels.csv")
    assert done.returncode == 0, done.stderr
    assert "3 rows, 3 videos, classes: clap, wave" in done.stdout
    assert (tmp_path / "labels.csv").read_text().splitlines() == [
        "filename,frame,start_frame,end_frame,label",
        "clap/b.avi,,,,clap",
        "clap/more/c.mp4,,,,clap",
        "wave/a.mp4,,,,wave",
    ]
    write_video(tmp_path / "videos" / "loose.mp4", gray_frames(5, 16, 16), 10, "libx264")
    with pytest.raises(ExportFormatError, match="loose.mp4 not inside a class folder"):
        from_folders(tmp_path / "videos")


def label_studio_export() -> list[dict]:
    """Two tasks as Label Studio's JSON export writes them (an uploaded file and a URL)."""
    return [
        {
            "id": 1,
            "data": {"video": "/data/upload/1/3f2a9c1d-a.mp4"},
            "annotations": [
                {
                    "id": 11,
                    "was_cancelled": True,
                    "result": [
                        {
                            "id": "x",
                            "type": "choices",
                            "from_name": "choice",
                            "to_name": "video",
                            "value": {"choices": ["nod"]},
                        }
                    ],
                },
                {
                    "id": 12,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "updated_at": "2026-11-01T10:00:00Z",
                    "result": [
                        {
                            "id": "r1",
                            "type": "timelinelabels",
                            "from_name": "videoLabels",
                            "to_name": "video",
                            "origin": "manual",
                            "value": {"ranges": [{"start": 1, "end": 5}], "timelinelabels": ["wave"]},
                        },
                        {
                            "id": "r2",
                            "type": "timelinelabels",
                            "from_name": "videoLabels",
                            "to_name": "video",
                            "origin": "manual",
                            "value": {"ranges": [{"start": 8, "end": 10}], "timelinelabels": ["clap"]},
                        },
                    ],
                },
            ],
        },
        {
            "id": 2,
            "data": {"video": "https://example.org/media/b.avi"},
            "annotations": [
                {
                    "id": 21,
                    "was_cancelled": False,
                    "result": [
                        {
                            "id": "c1",
                            "type": "choices",
                            "from_name": "choice",
                            "to_name": "video",
                            "value": {"choices": ["clap"]},
                        }
                    ],
                }
            ],
        },
    ]


EXPECTED = {
    "a.mp4": {**dict.fromkeys(range(5), "wave"), **dict.fromkeys(range(7, 10), "clap")},
    "b.avi": dict.fromkeys(range(6), "clap"),
}


def test_label_studio_json_round_trip(tmp_path):
    (tmp_path / "videos").mkdir()
    for name in LENGTHS:
        (tmp_path / "videos" / name).write_bytes(b"")  # names to match: the upload prefix is dropped
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export()))
    rows = from_label_studio(export, tmp_path / "videos")
    assert per_frame(rows, tmp_path) == EXPECTED
    done = cli("label-studio", export, "--videos", tmp_path / "videos", "-o", tmp_path / "cli.csv")
    assert done.returncode == 0 and "3 rows, 2 videos, classes: clap, wave" in done.stdout, done.stderr


def test_label_studio_json_min_round_trip(tmp_path):
    export = tmp_path / "export_min.json"
    export.write_text(
        json.dumps(
            [
                {
                    "video": "/data/upload/1/a.mp4",
                    "id": 1,
                    "annotator": "me@example.org",
                    "annotation_id": 12,
                    "videoLabels": [
                        {"ranges": [{"start": 1, "end": 5}], "timelinelabels": ["wave"]},
                        {"ranges": [{"start": 8, "end": 10}], "timelinelabels": ["clap"]},
                    ],
                    "created_at": "2026-11-01T10:00:00Z",
                    "updated_at": "2026-11-01T10:00:00Z",
                    "lead_time": 4.2,
                },
                {"video": "/data/upload/1/b.avi", "id": 2, "choice": "clap", "annotator": 1, "annotation_id": 21},
            ]
        )
    )
    assert per_frame(from_label_studio(export), tmp_path) == EXPECTED


def test_label_studio_frame_rate_differs_from_the_videos(tmp_path):
    write_video(tmp_path / "a.mp4", gray_frames(12, 16, 16), 10, "libx264")
    export = tmp_path / "export.json"
    export.write_text(json.dumps([label_studio_export()[0]]))
    rows = from_label_studio(export, tmp_path, frame_rate=20.0)  # labelled at 20 fps, the file is 10 fps
    assert [(r.label, r.start, r.end) for r in rows] == [("wave", 0, 2), ("clap", 4, 4)]  # frames 1-5 -> 0..2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"id": 1}', "expected a list of tasks"),
        ('[{"id": 7, "data": {"text": "hello"}, "annotations": []}]', "task 7: no video in the task's data"),
        (
            '[{"id": 7, "data": {"video": "a.mp4"}, "annotations": [{"result": [{"id": "r9", "type": "timelinelabels",'
            ' "value": {"ranges": [{"start": 0, "end": 3}], "timelinelabels": ["x"]}}]}]}]',
            "task 7, result 'r9': range 0..3 (frames count from 1, end >= start)",
        ),
        (
            '[{"id": 7, "data": {"video": "a.mp4"}, "annotations": [{"result": [{"id": "r9", "type": "timelinelabels",'
            ' "value": {"ranges": [{"begin": 1}], "timelinelabels": ["x"]}}]}]}]',
            "task 7, result 'r9': a range must be {start, end} frame numbers",
        ),
        (
            '[{"id": 7, "data": {"video": "a.mp4"}, "annotations": [{"result": [{"id": "c", "type": "choices",'
            ' "value": {"choices": "x"}}]}]}]',
            "task 7, result 'c': value.choices must be a list of labels",
        ),
    ],
)
def test_label_studio_malformed_exports_are_named(tmp_path, content, message):
    export = tmp_path / "bad.json"
    export.write_text(content)
    with pytest.raises(ExportFormatError) as caught:
        from_label_studio(export)
    assert str(caught.value).startswith(f"{export}: ") and message in str(caught.value)


def cvat_images_export(source="a.mp4", tags=None) -> str:
    """A "CVAT for images 1.1" export of a video task, as CVAT writes it (one <image> per frame)."""
    tags = tags if tags is not None else {0: ["wave"], 1: ["wave"], 3: ["clap"], 4: ["clap"], 5: ["clap"], 9: ["nod"]}
    images = "".join(
        f'  <image id="{i}" name="frame_{i:06d}" width="16" height="16">\n'
        + "".join(f'    <tag label="{label}" source="manual">\n    </tag>\n' for label in tags.get(i, []))
        + "  </image>\n"
        for i in range(12)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n  <meta><task>'
        f"<id>7</id><name>clip</name><size>12</size><mode>interpolation</mode><start_frame>0</start_frame>"
        f"<stop_frame>11</stop_frame><frame_filter></frame_filter><labels><label><name>wave</name>"
        f"<type>tag</type></label></labels><original_size><width>16</width><height>16</height>"
        f"</original_size><source>{source}</source></task><dumped>2026-11-01</dumped></meta>\n{images}</annotations>\n"
    )


def test_cvat_images_round_trip(tmp_path):
    export = tmp_path / "annotations.xml"
    export.write_text(cvat_images_export())
    rows = from_cvat(export)
    assert [(r.label, r.frame, r.start, r.end) for r in rows] == [
        ("wave", None, 0, 1),
        ("clap", None, 3, 5),
        ("nod", 9, None, None),
    ]
    assert per_frame(rows, tmp_path) == {"a.mp4": {0: "wave", 1: "wave", 3: "clap", 4: "clap", 5: "clap", 9: "nod"}}
    done = cli("cvat", export, "-o", tmp_path / "cli.csv")
    assert done.returncode == 0 and "3 rows, 1 videos, classes: clap, nod, wave" in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<annotations><image", "not XML"),
        ("<dataset/>", "the root element is <dataset>, not <annotations>"),
        (
            "<annotations><meta><task><mode>interpolation</mode><source>a.mp4</source></task></meta>"
            '<track id="0" label="car"/></annotations>',
            "'CVAT for video 1.1' export carries no tags",
        ),
        (cvat_images_export(source=""), "no <meta><task><source> names the video"),
        (cvat_images_export().replace('name="frame_000003"', 'name="img3.png"'), "<image id='3'> is named 'img3.png'"),
        (
            cvat_images_export().replace('<tag label="nod"', '<tag label=""'),
            "<image name='frame_000009'> has a <tag> without",
        ),
    ],
)
def test_cvat_malformed_exports_are_named(tmp_path, content, message):
    export = tmp_path / "annotations.xml"
    export.write_text(content)
    with pytest.raises(ExportFormatError) as caught:
        from_cvat(export)
    assert str(caught.value).startswith(f"{export}: ") and message in str(caught.value)
    done = cli("cvat", export, "-o", tmp_path / "out.csv")
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.csv").exists()
