"""torchpipe_rs from Python: the seed's usage (section 3.2 of the quick start) on the CPU engine,
many threads on one pipe, bad input, config errors, the TorchPipe compatibility module."""
import concurrent.futures
import pathlib
import subprocess
import threading

import numpy as np
import pytest

import torchpipe_rs
from torchpipe_rs import TASK_DATA_KEY, TASK_ERROR_KEY, TASK_RESULT_KEY, pipe

from conftest import cpu_config


def test_the_seed_toml_classifies_every_photo_as_a_list(root, models, photos):
    # The seed's resnet50.toml (its DecodeMat → ResizeMat/cvtColorMat/Mat2Tensor → model
    # chain), the model on the CPU; entered at cpu_decoder by name as the seed does.
    classifier = pipe(cpu_config(root, models, "resnet50.toml"))
    inputs = [{TASK_DATA_KEY: data, "node_name": "cpu_decoder"} for _, data in photos[:4]]
    classifier(inputs)
    for (name, _), d in zip(photos, inputs):
        assert TASK_RESULT_KEY in d, (name, d.get(TASK_ERROR_KEY))
        r = d[TASK_RESULT_KEY]
        assert isinstance(r, np.ndarray) and r.dtype == np.float32 and r.shape == (1000,)
        assert np.isfinite(r).all()
    # One dict at a time gives the same logits as the batch did.
    one = {TASK_DATA_KEY: photos[0][1]}
    classifier(one)
    np.testing.assert_allclose(one[TASK_RESULT_KEY], inputs[0][TASK_RESULT_KEY], rtol=1e-5,
                               atol=1e-5)


def test_the_detector_gives_boxes_in_the_photos_pixels(root, models, photos):
    # configs/yolo.toml: letterbox, the generated YOLO-shaped model, PostProcYoloV8. Its result
    # is one row per detection, best first: x1, y1, x2, y2 in the photo's pixels, score, class.
    detector = pipe(cpu_config(root, models, "yolo.toml"))
    decoder = pipe({"decode": {"backend": "DecodeMat"}})
    inputs = [{TASK_DATA_KEY: data} for _, data in photos]
    detector(inputs)
    found = 0
    for (name, data), d in zip(photos, inputs):
        assert TASK_RESULT_KEY in d, (name, d.get(TASK_ERROR_KEY))
        r = d[TASK_RESULT_KEY]
        assert isinstance(r, np.ndarray) and r.dtype == np.float32 and r.shape[1:] == (6,), name
        image = {TASK_DATA_KEY: data}
        decoder(image)
        h, w = image[TASK_RESULT_KEY].shape[:2]
        assert (r[:, [0, 2]] >= 0).all() and (r[:, [0, 2]] <= w).all(), name
        assert (r[:, [1, 3]] >= 0).all() and (r[:, [1, 3]] <= h).all(), name
        assert (r[:, 4] > 0.25).all() and (np.diff(r[:, 4]) <= 0).all(), name
        assert set(r[:, 5].tolist()) <= {0.0, 1.0, 2.0}, name
        found += len(r)
    assert found > 0


def test_each_box_s_class_comes_back_as_numpy_arrays(root, models, photos):
    # configs/detect_classify.toml: the detector's boxes, each cropped and classified through a
    # MapReduce. The dict gets the boxes under TASK_BOX_KEY ([n, 6] float32), the boxes'
    # classes as the result (int64, one per box) and their probabilities as the score.
    detect_classify = pipe(cpu_config(root, models, "detect_classify.toml"))
    detector = pipe(cpu_config(root, models, "yolo.toml"))
    found = 0
    for name, data in photos:
        d, only_boxes = {TASK_DATA_KEY: data}, {TASK_DATA_KEY: data}
        detect_classify(d)
        detector(only_boxes)
        assert TASK_RESULT_KEY in d, (name, d.get(TASK_ERROR_KEY))
        boxes, classes, scores = d[torchpipe_rs.TASK_BOX_KEY], d[TASK_RESULT_KEY], d["score"]
        assert boxes.dtype == np.float32 and boxes.shape[1:] == (6,), name
        np.testing.assert_array_equal(boxes, only_boxes[TASK_RESULT_KEY])
        assert classes.dtype == np.int64 and classes.shape == (len(boxes),), name
        assert scores.dtype == np.float64 and scores.shape == (len(boxes),), name
        assert ((classes >= 0) & (classes < 10)).all() and ((scores > 0) & (scores <= 1)).all()
        found += len(boxes)
    assert found > 0


def test_twenty_threads_on_one_pipe_get_what_one_thread_gets(root, models, photos):
    p = pipe(cpu_config(root, models, "tiny_cpu.toml"))
    want = {}
    for name, data in photos:
        d = {TASK_DATA_KEY: data}
        p(d)
        want[name] = d[TASK_RESULT_KEY]
    errors, lock = [], threading.Lock()

    def worker(k):
        for j in range(12):
            name, data = photos[(k + j) % len(photos)]
            d = {TASK_DATA_KEY: data}
            p(d)
            if TASK_RESULT_KEY not in d or not np.allclose(d[TASK_RESULT_KEY], want[name],
                                                           rtol=1e-5, atol=1e-6):
                with lock:
                    errors.append((k, j, name, d.get(TASK_ERROR_KEY)))

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        list(pool.map(worker, range(20)))
    assert errors == []


def test_a_corrupt_image_gets_no_result_and_a_reason_and_the_next_call_is_fine(
        root, models, photos):
    p = pipe(cpu_config(root, models, "tiny_cpu.toml"))
    jpeg = next(data for name, data in photos if name.endswith(".jpg"))
    inputs = [{TASK_DATA_KEY: jpeg[:200]}, {TASK_DATA_KEY: b"not an image"},
              {TASK_DATA_KEY: jpeg, TASK_RESULT_KEY: "stale"}]
    p(inputs)
    for d in inputs[:2]:
        assert TASK_RESULT_KEY not in d
        assert "cpu_decoder" in d[TASK_ERROR_KEY], d[TASK_ERROR_KEY]
    assert "JPEG" in inputs[0][TASK_ERROR_KEY] or "jpeg" in inputs[0][TASK_ERROR_KEY]
    assert isinstance(inputs[2][TASK_RESULT_KEY], np.ndarray)
    assert TASK_ERROR_KEY not in inputs[2]
    again = {TASK_DATA_KEY: jpeg}
    p(again)
    np.testing.assert_array_equal(again[TASK_RESULT_KEY], inputs[2][TASK_RESULT_KEY])
    # raise_errors: the dicts are filled in, then PipelineError names the failed inputs.
    strict = pipe(cpu_config(root, models, "tiny_cpu.toml"), raise_errors=True)
    inputs = [{TASK_DATA_KEY: jpeg}, {TASK_DATA_KEY: b"junk"}]
    with pytest.raises(torchpipe_rs.PipelineError, match="input 1: node") as e:
        strict(inputs)
    assert [i for i, _ in e.value.failed] == [1]
    assert TASK_RESULT_KEY in inputs[0]


def test_bad_calls_are_clear_errors(root, models):
    p = pipe(cpu_config(root, models, "tiny_cpu.toml"))
    with pytest.raises(ValueError, match="TASK_DATA_KEY"):
        p({"dat": b"x"})
    with pytest.raises(TypeError, match="dict or a list of dicts"):
        p(b"x")
    with pytest.raises(TypeError, match="input 1 of the list is not a dict"):
        p([{TASK_DATA_KEY: b"x"}, "y"])
    with pytest.raises(TypeError, match="data must be bytes"):
        p({TASK_DATA_KEY: 3})
    # A request the pipeline refuses as a whole raises.
    with pytest.raises(ValueError, match="no such entry node `nowhere`"):
        p({TASK_DATA_KEY: b"x", "node_name": "nowhere"})


def test_config_errors_carry_the_servers_message(root, models, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[cpu_decoder]\nbackend = "DecodeMatt"\n')
    server = subprocess.run([str(root / "target/debug/server"), "--check-config", str(cfg)],
                            capture_output=True, text=True)
    assert server.returncode != 0
    with pytest.raises(torchpipe_rs.ConfigError) as e:
        pipe(str(cfg))
    msg = str(e.value)
    assert "DecodeMatt" in msg and "DecodeMat" in msg
    assert msg in server.stdout + server.stderr
    with pytest.raises(torchpipe_rs.ConfigError, match="readable TOML file"):
        pipe(str(tmp_path / "missing.toml"))
    with pytest.raises(torchpipe_rs.ConfigError, match="instance_num"):
        pipe({"n": {"backend": "Identity", "instance_num": "many"}})
    with pytest.raises(TypeError, match="not a TOML value"):
        pipe({"n": {"backend": "Identity", "instance_num": object()}})


def test_parse_toml_round_trips_through_a_dict(root, models, photos):
    cfg = cpu_config(root, models, "tiny_cpu.toml")
    assert isinstance(cfg, dict) and "cpu_decoder" in cfg
    # An edited dict is what the pipe runs: a node added in front.
    cfg["entry"] = {"backend": "Identity", "next": "cpu_decoder"}
    p = pipe(cfg)
    assert "entry" in p.entry_nodes()
    d = {TASK_DATA_KEY: photos[0][1]}
    p(d)
    assert d[TASK_RESULT_KEY].shape == (10,)


def test_numpy_inputs(root, models):
    p = pipe({"t": {"backend": "Identity"}})
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = {TASK_DATA_KEY: x}
    p(d)
    np.testing.assert_array_equal(d[TASK_RESULT_KEY], x)
    img = np.zeros((4, 5, 3), dtype=np.uint8)
    d = {TASK_DATA_KEY: img}
    p(d)
    assert d[TASK_RESULT_KEY].shape == (4, 5, 3) and d[TASK_RESULT_KEY].dtype == np.uint8
    with pytest.raises(ValueError, match="1 to 4 channels"):
        p({TASK_DATA_KEY: np.zeros((2, 2), dtype=np.uint8)})


def test_the_torchpipe_compatibility_module(root, models, photos):
    from torchpipe_rs import torchpipe
    assert torchpipe.TASK_DATA_KEY == "data" and torchpipe.TASK_RESULT_KEY == "result"
    assert torchpipe.parse_toml is torchpipe_rs.parse_toml
    with pytest.raises(AttributeError, match="register_backend.*not covered"):
        torchpipe.register_backend
    cfg = cpu_config(root, models, "tiny_cpu.toml")
    try:
        import torch
    except ImportError:
        with pytest.raises(ImportError, match="PyTorch"):
            torchpipe.pipe(cfg)
        pytest.skip("PyTorch is not installed: results as torch tensors not checked")
    p = torchpipe.pipe(cfg)
    d = {torchpipe.TASK_DATA_KEY: photos[0][1]}
    p(d)
    assert isinstance(d[torchpipe.TASK_RESULT_KEY], torch.Tensor)
    assert tuple(d[torchpipe.TASK_RESULT_KEY].shape) == (10,)
