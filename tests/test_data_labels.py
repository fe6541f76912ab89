"""Labels CSV: every form, every interpolation mode, every bad input (named by row and file)."""

import subprocess
import sys
from dataclasses import dataclass

import pytest

from conftest import gray_frames, write_video
from movinet.data.labels import LabelError, read_labels


@dataclass(frozen=True)
class Info:
    frames: int
    fps: float = 10.0


VIDEOS = {"a.mp4": Info(20), "b.mp4": Info(10, 5.0), "sub/c.avi": Info(30)}


def _csv(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_per_frame_ranges_timestamps_and_whole_video(tmp_path):
    path = _csv(
        tmp_path,
        "filename,frame,start_frame,end_frame,timestamp,label\n"
        "a.mp4,3,,,,jump\n"
        "a.mp4,,5,7,,run\n"
        "b.mp4,,,,,sit\n"
        "sub/c.avi,,,,1.25,run\n"
        "sub/c.avi,,,,0.0,background\n",
    )
    labels = read_labels(path, VIDEOS)
    assert labels.frames["a.mp4"] == {3: "jump", 5: "run", 6: "run", 7: "run"}
    assert labels.frames["b.mp4"] == dict.fromkeys(range(10), "sit")
    assert labels.frames["sub/c.avi"] == {0: "background", 12: "run"}  # round(1.25 * 10) = 12
    assert labels.classes == ["jump", "run", "sit"]


SPARSE = "filename,frame,label\na.mp4,2,walk\na.mp4,6,walk\na.mp4,10,run\na.mp4,13,run\n"


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("none", {2: "walk", 6: "walk", 10: "run", 13: "run"}),
        ("hold", {**dict.fromkeys(range(2, 10), "walk"), **dict.fromkeys(range(10, 14), "run")}),
        # different labels switch at the midpoint of 6..10: 7, 8 -> walk, 9 -> run
        ("nearest", {**dict.fromkeys(range(2, 9), "walk"), **dict.fromkeys(range(9, 14), "run")}),
    ],
)
def test_sparse_keyframes_interpolation(tmp_path, mode, expected):
    labels = read_labels(_csv(tmp_path, SPARSE), VIDEOS, interpolation=mode)
    assert labels.frames["a.mp4"] == expected  # nothing before the first or after the last keyframe


def test_interpolation_never_overrides_explicit_labels(tmp_path):
    path = _csv(
        tmp_path, "filename,frame,start_frame,end_frame,label\na.mp4,0,,,walk\na.mp4,,3,4,background\na.mp4,8,,,walk\n"
    )
    labels = read_labels(path, VIDEOS, interpolation="hold")
    assert labels.frames["a.mp4"] == {
        0: "walk",
        1: "walk",
        2: "walk",
        3: "background",
        4: "background",
        5: "walk",
        6: "walk",
        7: "walk",
        8: "walk",
    }


@pytest.mark.parametrize(
    "body,row,message",
    [
        ("a.mp4,3,jump\nzzz.mp4,1,run\n", 3, "unknown video 'zzz.mp4'"),
        ("a.mp4,20,jump\n", 2, "frame 20 is past the end (the video has 20 frames, 0..19)"),
        ("a.mp4,-1,jump\n", 2, "negative frame -1"),
        ("a.mp4,x,jump\n", 2, "frame 'x' is not a whole number"),
        ("a.mp4,4,jump\na.mp4,4,run\n", 3, "conflicting labels on frame 4: 'run' here, 'jump' from row 2"),
        ("a.mp4,4,\n", 2, "empty label"),
    ],
)
def test_bad_rows_name_row_and_file(tmp_path, body, row, message):
    path = _csv(tmp_path, "filename,frame,label\n" + body)
    with pytest.raises(LabelError) as err:
        read_labels(path, VIDEOS)
    assert any(i.row == row and message in i.message for i in err.value.issues), err.value.issues
    assert f"row {row}" in str(err.value) and str(path) in str(err.value)


def test_unknown_column_is_named(tmp_path):
    with pytest.raises(LabelError, match="row 1: unknown column 'frames'"):
        read_labels(_csv(tmp_path, "filename,frames,label\na.mp4,1,x\n"), VIDEOS)


def test_empty_class_list(tmp_path):
    with pytest.raises(LabelError, match="no classes"):
        read_labels(_csv(tmp_path, "filename,frame,label\na.mp4,1,background\n"), VIDEOS)
    with pytest.raises(LabelError, match="no classes"):
        read_labels(_csv(tmp_path, "filename,frame,label\n"), VIDEOS)


def test_skip_mode_drops_bad_rows_and_reports_them(tmp_path):
    path = _csv(tmp_path, "filename,frame,label\na.mp4,1,jump\nzzz.mp4,1,run\na.mp4,1,run\na.mp4,99,run\nb.mp4,2,run\n")
    labels = read_labels(path, VIDEOS, on_error="skip")
    assert labels.frames == {"a.mp4": {1: "jump"}, "b.mp4": {2: "run"}}
    assert [(i.row, i.file) for i in labels.skipped] == [(3, "zzz.mp4"), (4, "a.mp4"), (5, "a.mp4")]


def test_conflicting_given_splits(tmp_path):
    path = _csv(tmp_path, "filename,frame,label,split\na.mp4,1,x,train\na.mp4,2,x,test\n")
    with pytest.raises(LabelError, match="row 3: a.mp4: split 'test' conflicts with 'train' from row 2"):
        read_labels(path, VIDEOS)


def test_labels_check_cli_on_real_videos(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", gray_frames(20), 10, "libx264")
    write_video(videos / "b.avi", gray_frames(12), 10, "mpeg4")
    good = _csv(tmp_path, "filename,frame,start_frame,end_frame,label\na.mp4,,0,9,wave\nb.avi,,,,clap\n")
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "labels", "check", str(good), "--videos", str(videos)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "classes (2): clap, wave" in done.stdout
    assert "frames per class: clap 12, wave 10" in done.stdout
    assert "videos per split:" in done.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("filename,frame,label\na.mp4,25,wave\nmissing.mp4,1,wave\na.mp4,-2,clap\n")
    done = subprocess.run(
        [sys.executable, "-m", "movinet.cli", "labels", "check", str(bad), "--videos", str(videos)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"{bad}: row 2: a.mp4: frame 25 is past the end (the video has 20 frames, 0..19)",
        f"{bad}: row 3: missing.mp4: unknown video 'missing.mp4' (not among the videos, or it could not be decoded)",
        f"{bad}: row 4: a.mp4: negative frame -2",
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_non_finite_timestamp_is_a_row_error_that_honours_on_error(tmp_path, value):
    path = _csv(tmp_path, f"filename,timestamp,label\na.mp4,0.5,jump\na.mp4,{value},run\n")
    with pytest.raises(LabelError, match=rf"row 3: a.mp4: timestamp '{value}' is not a finite number of seconds"):
        read_labels(path, VIDEOS)
    labels = read_labels(path, VIDEOS, on_error="skip")
    assert labels.frames == {"a.mp4": {5: "jump"}} and [i.row for i in labels.skipped] == [3]


@pytest.mark.parametrize(
    "value,message",
    [
        ("soon", "timestamp 'soon' is not a number"),
        ("-0.5", "negative timestamp -0.5"),
        ("2.0", "timestamp 2.0s is past the end (the video lasts 2.000s, 20 frames)"),  # frame 20 of 0..19
        ("1.96", "timestamp 1.96s is past the end (the video lasts 2.000s, 20 frames)"),  # rounds to frame 20
    ],
)
def test_bad_timestamps_are_named_exactly(tmp_path, value, message):
    path = _csv(tmp_path, f"filename,timestamp,label\na.mp4,{value},jump\n")
    with pytest.raises(LabelError) as err:
        read_labels(path, VIDEOS)
    assert [(i.row, i.file, i.message) for i in err.value.issues] == [(2, "a.mp4", message)]


def test_the_last_frame_by_timestamp_and_the_rounding(tmp_path):
    path = _csv(tmp_path, "filename,timestamp,label\na.mp4,1.9,jump\na.mp4,0.04,run\na.mp4,0.06,walk\n")
    assert read_labels(path, VIDEOS).frames["a.mp4"] == {0: "run", 1: "walk", 19: "jump"}  # 10 fps: round(t * 10)
    slow = _csv(tmp_path, "filename,timestamp,label\nb.mp4,1.5,sit\n")  # b.mp4 is 5 fps: frame 8 (7.5 to even)
    assert read_labels(slow, VIDEOS).frames["b.mp4"] == {8: "sit"}


def test_the_error_lists_every_problem_one_per_line(tmp_path):
    path = _csv(tmp_path, "filename,frame,label\nzzz.mp4,1,run\na.mp4,x,run\n")
    with pytest.raises(LabelError) as err:
        read_labels(path, VIDEOS)
    assert str(err.value).splitlines() == [
        f"2 problem(s) in {path}:",
        f"  {path}: row 2: zzz.mp4: unknown video 'zzz.mp4' (not among the videos, or it could not be decoded)",
        f"  {path}: row 3: a.mp4: frame 'x' is not a whole number",
    ]
    from movinet.data.labels import LabelIssue

    assert str(LabelIssue(None, None, "no classes")) == "file: no classes"
    assert str(LabelIssue(None, "a.mp4", "unreadable")) == "file: a.mp4: unreadable"


def _issues(path, **kwargs) -> list[str]:
    """Every problem ``read_labels`` reports for ``path``, as printed (``row N: file: message``)."""
    with pytest.raises(LabelError) as err:
        read_labels(path, VIDEOS, **kwargs)
    return [str(issue) for issue in err.value.issues]


def test_each_bad_row_is_reported_with_its_exact_message(tmp_path):
    header = "filename,frame,start_frame,end_frame,timestamp,label,split\n"
    body = (
        ",1,,,,x,\n"  # row 2
        "a.mp4,1,,,,,\n"  # row 3
        "a.mp4,1,,,,x,later\n"  # row 4
        "a.mp4,1,2,,,x,\n"  # row 5
        "a.mp4,,5,4,,x,\n"  # row 6
        "a.mp4,,x,4,,x,\n"  # row 7: one bad end of a range is one problem
        "a.mp4,,4,99,,x,\n"  # row 8
    )
    assert _issues(_csv(tmp_path, header + body)) == [
        "row 2: empty filename",
        "row 3: a.mp4: empty label",
        "row 4: a.mp4: split 'later' is not one of train, val, test",
        "row 5: a.mp4: give one of: frame | start_frame and end_frame | timestamp (got frame, start_frame)",
        "row 6: a.mp4: end_frame 4 is before start_frame 5",
        "row 7: a.mp4: start_frame 'x' is not a whole number",
        "row 8: a.mp4: end_frame 99 is past the end (the video has 20 frames, 0..19)",
    ]


def test_a_range_of_one_frame_is_that_frame(tmp_path):
    labels = read_labels(_csv(tmp_path, "filename,start_frame,end_frame,label\na.mp4,4,4,x\n"), VIDEOS)
    assert labels.frames == {"a.mp4": {4: "x"}}


@pytest.mark.parametrize(
    "first",
    ["a.mp4,,,,,jump", "a.mp4,4,,,,jump", "a.mp4,,,,0.4,jump", "a.mp4,,2,6,,jump"],
    ids=["whole video", "frame", "timestamp", "range"],
)
def test_every_form_of_row_keeps_its_number_and_its_split(tmp_path, first):
    """A clash names the row that labelled the frame first, whatever form that row has; the split
    given on it is the video's, and a later row giving the same split agrees with it."""
    header = "filename,frame,start_frame,end_frame,timestamp,label,split\n"
    rows = f"{first},val\na.mp4,4,,,,run,val\nb.mp4,,,,,sit,test\nb.mp4,3,,,,sit,test\n"
    path = _csv(tmp_path, header + rows)
    assert _issues(path) == ["row 3: a.mp4: conflicting labels on frame 4: 'run' here, 'jump' from row 2"]
    labels = read_labels(path, VIDEOS, on_error="skip")
    assert labels.given_splits == {"a.mp4": "val", "b.mp4": "test"}


def test_rows_after_a_split_conflict_still_count(tmp_path):
    body = "a.mp4,1,x,train\na.mp4,2,x,test\na.mp4,3,y,train\nb.mp4,1,y,val\n"
    labels = read_labels(_csv(tmp_path, "filename,frame,label,split\n" + body), VIDEOS, on_error="skip")
    assert labels.frames == {"a.mp4": {1: "x", 3: "y"}, "b.mp4": {1: "y"}}
    assert labels.given_splits == {"a.mp4": "train", "b.mp4": "val"}
    assert [str(i) for i in labels.skipped] == ["row 3: a.mp4: split 'test' conflicts with 'train' from row 2"]


def test_timestamps_are_keyframes_and_whole_video_rows_are_not(tmp_path):
    """Interpolation fills between keyframes (frames and timestamps); a whole-video row is explicit
    everywhere, so it is no keyframe (and no interpolation runs across its frames)."""
    sparse = "filename,timestamp,label\na.mp4,0.2,walk\na.mp4,0.6,run\nb.mp4,,sit\n"
    labels = read_labels(_csv(tmp_path, sparse), VIDEOS, interpolation="hold")
    assert labels.frames["a.mp4"] == {2: "walk", 3: "walk", 4: "walk", 5: "walk", 6: "run"}
    assert labels.frames["b.mp4"] == dict.fromkeys(range(10), "sit")


def test_majority_label_of_a_video(tmp_path):
    body = "a.mp4,0,5,zeta\na.mp4,6,8,alpha\nb.mp4,0,1,run\nb.mp4,2,3,jump\n"
    labels = read_labels(_csv(tmp_path, "filename,start_frame,end_frame,label\n" + body), VIDEOS)
    assert labels.majority("a.mp4") == "zeta"  # 6 frames against 3: not the first name
    assert labels.majority("b.mp4") == "jump"  # a tie: the first name
    assert labels.majority("sub/c.avi") is None  # no labels


def test_bad_options_and_a_bad_header_are_named(tmp_path):
    path = _csv(tmp_path, "filename,frame,label\na.mp4,1,x\n")
    with pytest.raises(ValueError, match=r"^interpolation must be one of \('none', 'hold', 'nearest'\), got 'linear'$"):
        read_labels(path, VIDEOS, interpolation="linear")
    with pytest.raises(ValueError, match="^on_error must be 'fail' or 'skip', got 'ignore'$"):
        read_labels(path, VIDEOS, on_error="ignore")
    header = _csv(tmp_path, "filename,frames,label\na.mp4,1,x\n")
    with pytest.raises(LabelError) as err:
        read_labels(header, VIDEOS)
    known = "filename, label, frame, start_frame, end_frame, timestamp, split"
    assert str(err.value) == f"1 problem(s) in {header}:\n  {header}: row 1: unknown column 'frames' (known: {known})"
    only_background = _csv(tmp_path, "filename,frame,label\na.mp4,1,background\n")
    with pytest.raises(LabelError, match=f"in {only_background}:"):
        read_labels(only_background, VIDEOS)


def test_a_spreadsheet_s_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("filename,frame,label\na.mp4,1,x\n".encode("utf-8-sig"))  # as Excel saves "CSV UTF-8"
    assert read_labels(path, VIDEOS).frames == {"a.mp4": {1: "x"}}
