"""TorchPipe's Python API on torchpipe-rs, for code written against `import torchpipe`.

Change the import only:

    from torchpipe_rs import torchpipe            # was: import torchpipe
    from torchpipe_rs.torchpipe import pipe, TASK_DATA_KEY, TASK_RESULT_KEY

Covered: `pipe(toml_path_or_dict)`, calling it with one dict or a list of dicts (`data`,
`node_name`), results under `TASK_RESULT_KEY` as torch tensors (as TorchPipe returns them; a
class result as an int), `TASK_RESULT_KEY` absent on failure, `parse_toml(path)` returning a
dict that `pipe` takes. Not covered (an AttributeError names what is missing): backends written
in Python (`register_backend`, `register_filter`), `TASK_BOX_KEY`/`TASK_INFO_KEY` and the other
keys of detection pipelines, the event/async API (`TASK_EVENT_KEY`), `torchpipe.utils`, and
TensorRT-specific helpers. A GPU result (the `cuda` build) comes back as a CUDA torch tensor
over the engine's memory, by DLPack, without a copy to the host.
"""
from . import TASK_DATA_KEY, TASK_NODE_NAME_KEY, TASK_RESULT_KEY, parse_toml  # noqa: F401
from . import pipe as _pipe

__all__ = ["pipe", "parse_toml", "TASK_DATA_KEY", "TASK_RESULT_KEY", "TASK_NODE_NAME_KEY"]


class pipe(_pipe):
    """TorchPipe's `pipe`: results as torch tensors (PyTorch must be importable)."""

    def __init__(self, config):
        super().__init__(config, result_type="torch")


def __getattr__(name):
    raise AttributeError(
        f"torchpipe_rs.torchpipe has no {name!r}: this part of TorchPipe's Python API is not "
        "covered (see the module's docstring)")
