"""Loading the published Kinetics-600 state dicts (the PyTorch port's format) and our checkpoints.

The port's key names and tensor shapes are written out here independently of the library, from
the port's module structure (Atze00/MoViNet-pytorch ``movinets/models.py``): ``conv1`` stem,
``blocks.b{i}_l{j}`` with ``expand``/``deep``/``se.fc1``/``se.fc2``/``project``/``res``/``alpha``,
``conv7`` head and ``classifier.0``/``classifier.3``; every conv is wrapped as
``conv_1.conv3d`` (base) or ``conv_1.conv2d`` (+ ``conv_2.conv2d`` temporal, stream).
"""

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import randomize
from movinet.models import SPECS, build, kinetics600_classes, load_pretrained, save_checkpoint
from movinet.models.layers import make_divisible
from movinet.models.weights import PRETRAINED_FILES, to_port_state_dict


def port_layout(arch: str, variant: str) -> dict[str, tuple[int, ...]]:
    spec = SPECS[arch]
    stream = variant == "stream"
    conv = "conv2d" if stream else "conv3d"
    keys: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix, shape, bn=True, bias=False):
        keys[f"{prefix}.{conv if 'conv_2' not in prefix else 'conv2d'}.weight"] = shape
        if bias:
            keys[f"{prefix}.{conv}.bias"] = (shape[0],)
        if bn:
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                keys[f"{prefix}.norm.{leaf}"] = (shape[0],)
            keys[f"{prefix}.norm.num_batches_tracked"] = ()

    def pw(cout, cin):
        return (cout, cin, 1, 1) if stream else (cout, cin, 1, 1, 1)

    conv_bn("conv1.conv_1", (spec.stem, 3, 3, 3) if stream else (spec.stem, 3, 1, 3, 3))
    cin = spec.stem
    for i, block in enumerate(spec.blocks):
        for j, (e, (kt, kh, kw), stride) in enumerate(block.layers):
            p = f"blocks.b{i}_l{j}"
            conv_bn(f"{p}.expand.conv_1", pw(e, cin))
            if stream:
                conv_bn(f"{p}.deep.conv_1", (e, 1, kh, kw))
                if kt > 1:
                    conv_bn(f"{p}.deep.conv_2", (e, 1, kt, 1))
            else:
                conv_bn(f"{p}.deep.conv_1", (e, 1, kt, kh, kw))
            se_in = 2 * e if stream else e
            hidden = make_divisible(se_in / 4)
            conv_bn(f"{p}.se.fc1.conv_1", pw(hidden, se_in), bn=False, bias=True)
            conv_bn(f"{p}.se.fc2.conv_1", pw(e, hidden), bn=False, bias=True)
            conv_bn(f"{p}.project.conv_1", pw(block.out, e))
            if cin != block.out or stride != 1:
                conv_bn(f"{p}.res.{1 if stride != 1 else 0}.conv_1", pw(block.out, cin))
            keys[f"{p}.alpha"] = ()
            cin = block.out
    conv_bn("conv7.conv_1", pw(spec.head, cin))
    conv_bn("classifier.0.conv_1", pw(2048, spec.head), bn=False, bias=True)
    conv_bn("classifier.3.conv_1", pw(600, 2048), bn=False, bias=True)
    return keys


PUBLISHED = sorted(PRETRAINED_FILES)  # A0–A5 base, A0–A2 stream


@pytest.mark.parametrize("arch,variant", PUBLISHED)
def test_port_layout_round_trip(arch, variant, tmp_path):
    model = randomize(build(arch, variant, 600), seed=4)
    port = to_port_state_dict(model)
    assert {k: tuple(v.shape) for k, v in port.items()} == port_layout(arch, variant)

    path = tmp_path / PRETRAINED_FILES[(arch, variant)]
    torch.save(port, path)
    fresh = load_pretrained(build(arch, variant, 600), path).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    clip = torch.rand(1, 3, 2, 40, 40)
    with torch.no_grad():
        assert torch.equal(fresh(clip), model(clip))


def test_published_files_without_bn_counters_load():
    """Files written before BatchNorm counted its batches lack ``num_batches_tracked``: every other
    tensor loads with the file's values, the counters keep the model's own."""
    model = randomize(build("a0", "stream", 600), seed=2)
    port = {k: v for k, v in to_port_state_dict(model).items() if "num_batches_tracked" not in k}
    target = randomize(build("a0", "stream", 600), seed=5)
    with torch.no_grad():
        for name, buf in target.named_buffers():
            if name.endswith("num_batches_tracked"):
                buf.fill_(3)
    counters = {k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    loaded = load_pretrained(target, port).state_dict()
    assert counters and all(loaded[k].item() == 3 for k in counters)
    for key, value in model.state_dict().items():
        if key not in counters:
            assert torch.equal(loaded[key], value), key


def test_wrong_arch_is_refused_by_name():
    port = to_port_state_dict(build("a1", "base", 600))
    with pytest.raises(ValueError, match=r"MoViNet-A1 base weights, but the model is MoViNet-A0 base"):
        load_pretrained(build("a0", "base", 600), port)


def test_wrong_variant_is_refused_by_name():
    port = to_port_state_dict(build("a0", "stream", 600))
    with pytest.raises(ValueError, match=r"MoViNet-A0 stream weights, but the model is MoViNet-A0 base"):
        load_pretrained(build("a0", "base", 600), port)


def test_other_class_count_needs_reset_classifier():
    port = to_port_state_dict(build("a0", "base", 600))
    with pytest.raises(ValueError, match="reset_classifier"):
        load_pretrained(build("a0", "base", 5), port)
    model = load_pretrained(build("a0", "base", 600), port)
    model.reset_classifier(5)
    assert model.num_classes == 5


def test_our_checkpoint_round_trip_and_refusal(tmp_path):
    model = randomize(build("a2", "stream", 3))
    path = save_checkpoint(model, tmp_path / "ckpt" / "model.pt", class_names=["a", "b", "c"])
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    fresh = load_pretrained(build("a2", "stream", 3), path)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="MoViNet-A2 stream weights, but the model is MoViNet-A2 base"):
        load_pretrained(build("a2", "base", 3), path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_files_are_loaded_without_running_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv1.conv_1.conv3d.weight": _Evil()}, path)
    with pytest.raises(ValueError, match="not a readable weights file"):
        load_pretrained(build("a0"), path)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_pretrained(build("a0"), tmp_path / "missing.pt")


def test_kinetics600_classes():
    classes = kinetics600_classes()
    assert len(classes) == 600 and len(set(classes)) == 600
    assert classes[465] == "skiing crosscountry"  # the label the official sanity check expects


def _serve(directory: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "movinet.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_weights_download_through_real_http(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    torch.save(to_port_state_dict(build("a0", "base", 600)), served / "modelA0_statedict_v3")
    server = _serve(served)
    try:
        env = {"MOVINET_HOME": str(tmp_path / "home"), "MOVINET_WEIGHTS_URL": f"http://127.0.0.1:{server.server_port}"}
        done = _cli("weights", "download", "a0", "base", env=env)
        assert done.returncode == 0, done.stderr
        cached = Path(done.stdout.strip())
        assert cached == tmp_path / "home" / "weights" / "modelA0_statedict_v3"
        load_pretrained(build("a0", "base", 600), cached)
        # A file that is not the model's weights is never cached.
        (served / "modelA1_statedict_v3").write_text("<html>not found</html>")
        bad = _cli("weights", "download", "a1", "base", env=env)
        assert bad.returncode == 1 and "not a readable weights file" in bad.stderr
        assert sorted(p.name for p in cached.parent.iterdir()) == ["modelA0_statedict_v3"]
    finally:
        server.shutdown()


def test_weights_download_without_network_fails_clearly(tmp_path):
    env = {"MOVINET_HOME": str(tmp_path), "MOVINET_WEIGHTS_URL": "http://127.0.0.1:9"}
    done = _cli("weights", "download", "a0", "stream", env=env)
    assert done.returncode == 1
    assert "could not download http://127.0.0.1:9/modelA0_stream_statedict_v3" in done.stderr
    assert "put it at" in done.stderr
    assert not list((tmp_path / "weights").iterdir())
