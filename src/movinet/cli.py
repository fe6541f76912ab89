"""The ``movinet`` command. Each subcommand is a thin shell over a library function.

Heavy imports (torch, onnx) happen inside the handlers so ``movinet --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys

from movinet.console import UsageError, report, run


def _weights_download(args: argparse.Namespace) -> int:
    from movinet.models.weights import download

    print(download(args.arch, args.variant, force=args.force, progress=sys.stderr.isatty()))
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from movinet.inference.onnx_export import export_preprocessing, export_stream_onnx

    videos = _calibration_videos(args)  # checked before the export's work, not after
    model, class_names, config = _export_model(args)
    size = tuple(args.size) if len(args.size) == 2 else args.size[0]
    prep = export_preprocessing(config, size)
    if videos and prep is None:
        raise UsageError("--int8 calibrates on square center crops: give one --size")
    if not args.int8:
        print(
            export_stream_onnx(
                model, args.output, size, args.frames_per_step, class_names=class_names, preprocessing=prep
            )
        )
        return 0
    import tempfile
    from pathlib import Path

    from movinet.inference.onnx_int8 import calibration_clips, quantize_stream_onnx

    with tempfile.TemporaryDirectory() as tmp:  # the fp32 step is an intermediate here
        fp32 = export_stream_onnx(model, Path(tmp) / "fp32.onnx", size, class_names=class_names, preprocessing=prep)
        print(quantize_stream_onnx(fp32, args.output, calibration_clips(videos, prep, args.calibration_frames)))
    return 0


def _calibration_videos(args: argparse.Namespace) -> list:
    """The ``--calibration`` videos of an ``--int8`` export (none without ``--int8``)."""
    if args.calibration and not args.int8:
        raise UsageError("--calibration is for --int8 exports")
    if not args.int8:
        return []
    if not args.calibration:
        raise UsageError(
            "--int8 needs --calibration VIDEO_OR_FOLDER: videos like the ones the model will see. Dynamic "
            "quantisation, which needs none, made the stream step slower than fp32 (docs/benchmarks.md, int8)"
        )
    if args.frames_per_step != 1:
        raise UsageError("--int8 exports one frame per step: drop --frames-per-step")
    if args.calibration_frames < 1:
        raise UsageError(f"--calibration-frames must be 1 or more, got {args.calibration_frames}")
    from movinet.inference.onnx_int8 import calibration_videos

    try:
        return calibration_videos(args.calibration)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--calibration: {exc}") from None


def _export_model(args: argparse.Namespace):
    """(model on ``--device``, class names, the training config or None) from ``--weights`` or ``--arch``."""
    from movinet.models import build, kinetics600_classes, load_pretrained
    from movinet.models.device import resolve_device
    from movinet.models.weights import CHECKPOINT_FORMAT, read_checkpoint

    arch, variant, num_classes, class_names, config = args.arch, args.variant, args.num_classes, None, None
    if args.weights:
        payload, _ = read_checkpoint(args.weights)
        if payload.get("format") == CHECKPOINT_FORMAT:
            arch, variant = payload["arch"], payload["variant"]
            num_classes, class_names = payload["num_classes"], payload.get("class_names")
            config = payload.get("config")
        else:  # the published Kinetics-600 files
            num_classes, class_names = 600, list(kinetics600_classes())
    if arch is None:
        raise UsageError("give --arch (or --weights with a movinet checkpoint)")
    model = build(arch, variant, num_classes)
    if args.weights:
        load_pretrained(model, args.weights)
    return model.to(resolve_device(args.device)), class_names, config


def _extract(args: argparse.Namespace) -> int:
    from movinet.data.extract import REPORT_FILE, extract_videos

    report = extract_videos(
        args.video_dir, args.out_dir, fps=args.fps, size=args.size, workers=args.workers, strict=args.strict
    )
    print(
        f"extracted {len(report.extracted)}, unchanged {len(report.unchanged)}, "
        f"removed {len(report.removed)}, skipped {len(report.skipped)} "
        f"(report: {args.out_dir}/{REPORT_FILE})"
    )
    for skipped in report.skipped:
        print(f"skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)
    return 0


def _labels_check(args: argparse.Namespace) -> int:
    from movinet.data.ingest import summarize
    from movinet.data.labels import LabelError, read_labels
    from movinet.data.splits import assign_splits
    from movinet.data.video import list_videos, probe

    videos, unreadable = {}, []
    for rel, path in list_videos(args.videos).items():
        try:
            videos[rel] = probe(path)
        except ValueError as exc:
            unreadable.append(f"{rel}: {exc}")
    for line in unreadable:
        print(f"unreadable video {line}", file=sys.stderr)
    try:
        labels = read_labels(args.labels, videos, args.interpolation, on_error="fail")
    except LabelError as exc:  # the command's report: one line per bad row
        for issue in exc.issues:
            print(f"{args.labels}: {issue}", file=sys.stderr)
        return 1
    lengths = {v: info.frames for v, info in videos.items()}
    summary = summarize(labels, assign_splits(labels, lengths, args.seed, split_by=args.split_by))
    print(f"{args.labels}: OK, {summary['videos']} labelled videos")
    print(f"classes ({len(summary['classes'])}): {', '.join(summary['classes'])}")
    print("frames per class: " + ", ".join(f"{k} {v}" for k, v in summary["frames_per_class"].items()))
    print("videos per split: " + ", ".join(f"{k} {v}" for k, v in summary["videos_per_split"].items()))
    if summary["videos_split_in_time"]:
        print(f"split in time (too few videos of their class): {', '.join(summary['videos_split_in_time'])}")
    return 1 if unreadable and args.strict else 0


def _labels_import(args: argparse.Namespace) -> int:
    from movinet.data import imports

    if args.format == "folders":
        if len(args.sources) != 1:
            raise UsageError("folders takes one VIDEOS folder (VIDEOS/<class>/<video>)")
        rows = imports.from_folders(args.sources[0])
    elif args.format == "label-studio":
        rows = [r for source in args.sources for r in imports.from_label_studio(source, args.videos, args.frame_rate)]
    else:
        rows = [r for source in args.sources for r in imports.from_cvat(source, args.video)]
    path = imports.write_csv(rows, args.output)
    videos = len({r.filename for r in rows})
    print(f"{path}: {len(rows)} rows, {videos} videos, classes: {', '.join(sorted({r.label for r in rows}))}")
    if args.videos and args.format != "folders":
        print(f"check it: movinet labels check {path} --videos {args.videos}")
    return 0


def _params(args: argparse.Namespace) -> int:
    from movinet.config import params_drift, write_params

    if args.check:
        drift = params_drift(args.overrides)
        if drift:
            print(f"error: {drift}", file=sys.stderr)
            return 1
        print("params.yaml matches conf/")
        return 0
    print(write_params(args.overrides))
    return 0


def _registry_client():
    from movinet.tracking.client import TrackingClient
    from movinet.tracking.store import tracking_uri

    return TrackingClient(tracking_uri())


def _promote(args: argparse.Namespace) -> int:
    from movinet.tracking.promotion import promote

    result = promote(_registry_client(), args.name, args.version, args.metric, args.force)
    print(result.message)
    return 0 if result.promoted else 1


def _models(args: argparse.Namespace) -> int:
    from movinet.tracking.promotion import describe

    client = _registry_client()
    names = [args.name] if args.name else [m.name for m in client.search_registered_models()]
    for name in names:
        print(name)
        for row in describe(client, name):
            metrics = " ".join(f"{k}={v}" for k, v in row.items() if k.startswith("test_"))
            aliases = f" @{row['aliases']}" if row["aliases"] else ""
            print(f"  v{row['version']}{aliases} {metrics} {row['promotion']}".rstrip())
    return 0


def _video_args(paths: list[str]) -> list[str]:
    """Files as given; folders expanded to the videos under them (batch mode)."""
    from pathlib import Path

    from movinet.data.video import list_videos

    out = []
    for path in paths:
        out += [str(p) for p in list_videos(path).values()] if Path(path).is_dir() else [path]
    if not out:
        raise UsageError(f"no videos in {', '.join(paths)}")
    return out


def _predict(args: argparse.Namespace) -> int:
    import json

    from movinet.inference.load import load_predictor
    from movinet.tracking.store import tracking_uri

    predictor = load_predictor(args.model, tracking_uri(), args.device)
    videos = _video_args(args.videos)
    results = []
    for video in videos:
        try:
            result = predictor.predict(video, per_frame=bool(args.per_frame or args.plot), progress=sys.stderr.isatty())
        except (ValueError, FileNotFoundError) as exc:  # skip and report; the others still run
            report(exc)
            continue
        results.append(result)
        top = result.top(args.top_k)
        print(
            json.dumps({"video": video, "top": top})
            if args.json
            else f"{video}: " + ", ".join(f"{name} {p:.3f}" for name, p in top)
        )
    _write_reports(args, results)
    return 1 if len(results) < len(videos) else 0


def _write_reports(args: argparse.Namespace, results: list) -> None:
    from movinet.inference.report import plot_timeline, write_timeline_csv

    if args.per_frame and results:
        print(f"per-frame timeline: {write_timeline_csv(results, args.per_frame)}", file=sys.stderr)
    if args.plot and results:
        print(f"timeline plot: {plot_timeline(results, args.plot)}", file=sys.stderr)


def _stream(args: argparse.Namespace) -> int:
    from movinet.inference.load import load_predictor
    from movinet.inference.stream_source import av_frames, paced
    from movinet.tracking.store import tracking_uri

    predictor = load_predictor(args.model, tracking_uri(), args.device)
    fps, frames = av_frames(args.source)
    if args.realtime and args.source != "-":
        frames = paced(frames, fps)
    session = predictor.session(source_fps=fps)
    rate = predictor.prep.fps if predictor.prep.fps and predictor.prep.fps < fps else fps
    shown, every = None, max(1, round(rate * args.every))
    try:
        for frame in frames:
            for position, probs in session.push(frame):
                label = predictor.class_names[int(probs.argmax())]
                if label != shown or position % every == 0:
                    print(f"{position / rate:7.2f}s  frame {position:5d}  {label} {probs.max():.3f}", flush=True)
                    shown = label
    except KeyboardInterrupt:
        pass
    if session.last is None:
        raise ValueError("the stream ended before the model could answer (too few frames)")
    position, probs = session.last
    print(f"final  frame {position}: {predictor.class_names[int(probs.argmax())]} {probs.max():.3f}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from movinet.inference.server import ServerLimits, serve
    from movinet.tracking.store import tracking_uri

    limits = ServerLimits(
        max_upload_mb=args.max_upload_mb,
        max_frames=args.max_frames,
        session_ttl_s=args.session_ttl,
        max_sessions=args.max_sessions,
        max_uploads=args.max_uploads,
        body_timeout_s=args.body_timeout,
    )
    token = args.token or os.environ.get("MOVINET_API_TOKEN") or None
    serve(args.model, args.host, args.port, limits, tracking_uri(), args.device, token, args.insecure)
    return 0


def _device_option(command: argparse.ArgumentParser) -> None:
    from movinet.models.device import DEVICE_CHOICES

    command.add_argument(
        "--device", default="cpu", help=f"{' | '.join(DEVICE_CHOICES)} | cuda:N (auto: a GPU when one is visible)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movinet", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    weights = commands.add_parser("weights", help="published Kinetics-600 weights")
    weights_cmd = weights.add_subparsers(dest="weights_command", required=True)
    dl = weights_cmd.add_parser("download", help="download into the cache ($MOVINET_HOME/weights); prints the path")
    dl.add_argument("arch", help="a0..a5")
    dl.add_argument("variant", nargs="?", default="base", choices=["base", "stream"])
    dl.add_argument("--force", action="store_true", help="download again even if cached")
    dl.set_defaults(func=_weights_download)

    params = commands.add_parser(
        "params", help="compose conf/ (with Hydra overrides) into params.yaml, the file DVC tracks"
    )
    params.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=csv data.extract.size=128")
    params.add_argument("--check", action="store_true", help="fail if params.yaml differs from conf/")
    params.set_defaults(func=_params, failure_code=2)

    extract = commands.add_parser(
        "extract", help="decode videos once into a frame cache for fast clip reads (incremental)"
    )
    extract.add_argument("video_dir")
    extract.add_argument("out_dir")
    extract.add_argument("--fps", type=float, default=None, help="resample to this frame rate")
    extract.add_argument("--size", type=int, default=172, help="short side in pixels (0: keep)")
    extract.add_argument("--workers", type=int, default=1)
    extract.add_argument("--strict", action="store_true", help="fail if any video is unreadable")
    extract.set_defaults(func=_extract)

    labels = commands.add_parser("labels", help="labels CSV tools")
    labels_cmd = labels.add_subparsers(dest="labels_command", required=True)
    check = labels_cmd.add_parser("check", help="validate a labels CSV against the videos")
    check.add_argument("labels", help="labels CSV (filename,frame|start_frame,end_frame|timestamp,label[,split])")
    check.add_argument("--videos", required=True, help="the folder the CSV's filenames are relative to")
    check.add_argument("--interpolation", default="none", choices=["none", "hold", "nearest"])
    check.add_argument("--seed", type=int, default=0, help="seed of the video split shown")
    check.add_argument(
        "--split-by",
        default="auto",
        choices=["auto", "video", "time"],
        help="as data.labels.split_by: whole videos, cuts in time, or by video where a class can",
    )
    check.add_argument("--strict", action="store_true", help="also fail on unreadable videos")
    check.set_defaults(func=_labels_check)

    importer = labels_cmd.add_parser(
        "import", help="a labels CSV from class folders, a Label Studio export or a CVAT export"
    )
    importer.add_argument("format", choices=["folders", "label-studio", "cvat"])
    importer.add_argument("sources", nargs="+", help="VIDEOS folder (folders), or export files")
    importer.add_argument("-o", "--output", required=True, help="the labels CSV to write")
    importer.add_argument("--videos", help="the videos folder (Label Studio: match uploaded names, --frame-rate)")
    importer.add_argument("--frame-rate", type=float, help="Label Studio's <Video frameRate>, if not the videos' own")
    importer.add_argument("--video", help="CVAT: the video's name when <meta><task><source> lacks it")
    importer.set_defaults(func=_labels_import)

    promote = commands.add_parser(
        "promote", help="move the champion alias to a version if it beats the champion (exit 1: rejected)"
    )
    promote.add_argument("name", help="registered model name")
    promote.add_argument("--version", help="default: the latest version")
    promote.add_argument("--metric", default="test_acc", help="version tag compared, higher is better")
    promote.add_argument("--force", action="store_true", help="promote even if not better")
    promote.set_defaults(func=_promote, failure_code=2)

    models = commands.add_parser("models", help="registered models: versions, aliases, test metrics")
    models.add_argument("name", nargs="?")
    models.set_defaults(func=_models)

    predict = commands.add_parser("predict", help="classify videos (files or folders) with a model")
    predict.add_argument("videos", nargs="+", help="video files or folders of videos")
    predict.add_argument(
        "--model",
        required=True,
        help="models:/<name>@champion, models:/<name>/<version>, runs:/..., a model.pt, or an exported m.onnx",
    )
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument(
        "--per-frame",
        metavar="CSV",
        help="write a per-frame timeline (stream models: frame by frame with state; base models: sliding clips)",
    )
    predict.add_argument("--plot", metavar="PNG", help="plot the timeline")
    predict.add_argument("--json", action="store_true", help="one JSON line per video")
    _device_option(predict)
    predict.set_defaults(func=_predict, failure_code=2)

    stream = commands.add_parser("stream", help="classify a live source frame by frame (file or - for a pipe)")
    stream.add_argument("source", help="a video file, or - to read a video stream from stdin")
    stream.add_argument(
        "--model", required=True, help="as for predict, or an exported stream step (m.onnx, fp32 or --int8)"
    )
    stream.add_argument(
        "--no-realtime",
        dest="realtime",
        action="store_false",
        help="read a file as fast as possible instead of at its frame rate",
    )
    stream.add_argument("--every", type=float, default=1.0, help="also print every this many seconds")
    _device_option(stream)
    stream.set_defaults(func=_stream)

    serve = commands.add_parser("serve", help="HTTP API: POST /predict, streaming sessions under /streams")
    serve.add_argument("--model", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-upload-mb", type=float, default=100.0)
    serve.add_argument("--max-frames", type=int, default=256, help="frames per request to a stream session")
    serve.add_argument("--session-ttl", type=float, default=300.0, help="idle seconds before a session expires")
    serve.add_argument("--max-sessions", type=int, default=64)
    serve.add_argument("--max-uploads", type=int, default=4, help="concurrent POST /predict (429 beyond)")
    serve.add_argument("--body-timeout", type=float, default=60.0, help="seconds a request body may take to arrive")
    serve.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $MOVINET_API_TOKEN)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    _device_option(serve)
    serve.set_defaults(func=_serve, failure_code=2)

    export = commands.add_parser("export", help="export a model for deployment")
    export_cmd = export.add_subparsers(dest="export_command", required=True)
    onnx = export_cmd.add_parser("onnx", help="the stream model's one-step function, state as explicit inputs/outputs")
    onnx.add_argument("--arch", help="a0..a5 (taken from --weights when it is a movinet checkpoint)")
    onnx.add_argument("--variant", default="stream", choices=["stream"])
    onnx.add_argument("--weights", help="our checkpoint or a published state dict")
    onnx.add_argument("--num-classes", type=int, default=600)
    onnx.add_argument(
        "--size", type=int, nargs="+", default=[172], metavar="PX", help="input size: one value (square) or H W"
    )
    onnx.add_argument("--frames-per-step", type=int, default=1)
    onnx.add_argument(
        "--int8", action="store_true", help="quantise to int8 (static, calibrated on --calibration's frames)"
    )
    onnx.add_argument(
        "--calibration", metavar="VIDEO_OR_FOLDER", help="--int8: videos like the ones the model will see"
    )
    onnx.add_argument(
        "--calibration-frames", type=int, default=256, metavar="N", help="--int8: calibration frames in all"
    )
    _device_option(onnx)
    onnx.add_argument("-o", "--output", required=True)
    onnx.set_defaults(func=_export_onnx)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its user errors end in ``movinet.console.run``: ``error: ...`` and the exit
    code the subcommand declares (``failure_code``: 1 unless set), or 2 for a ``UsageError``."""
    args = build_parser().parse_args(argv)
    return run(lambda: args.func(args), getattr(args, "failure_code", 1))


if __name__ == "__main__":
    sys.exit(main())
