import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def models(root):
    """The generated models (models/, git-ignored), written by make-models if missing."""
    d = root / "models"
    if not all((d / m).exists() for m in ("tiny_cnn.onnx", "resnet50.onnx", "tiny_yolo.onnx")):
        exe = os.environ.get("MAKE_MODELS", str(root / "target/debug/make-models"))
        subprocess.run([exe, str(d)], check=True)
    return d


@pytest.fixture(scope="session")
def photos(root):
    """Every photo of benches/imgs as (name, bytes); the JPEGs, PNG and BMP decode."""
    imgs = root / "benches/imgs"
    return [(p.name, p.read_bytes()) for p in sorted(imgs.iterdir())
            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")]


def cpu_config(root, models, name, **node_edits):
    """configs/NAME as the dict parse_toml returns, with absolute model paths and the model
    node on the CPU (as the Rust end-to-end tests run them)."""
    import torchpipe_rs
    cfg = torchpipe_rs.parse_toml(str(root / "configs" / name))
    for node in cfg.values():
        if isinstance(node, dict) and "model" in node:
            node["model"] = str(models / pathlib.Path(node["model"]).name)
            node.setdefault("device", "cpu")
            node.update(node_edits)
    return cfg
