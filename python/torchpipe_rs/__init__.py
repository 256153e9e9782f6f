"""torchpipe-rs in-process: TorchPipe's TOML pipelines from Python.

    from torchpipe_rs import pipe, TASK_DATA_KEY, TASK_RESULT_KEY, TASK_ERROR_KEY

    classifier = pipe("configs/resnet50_cpu.toml")
    inputs = [{TASK_DATA_KEY: open(p, "rb").read()} for p in paths]
    classifier(inputs)                      # concurrent items of one request; waits for all
    for d in inputs:
        if TASK_RESULT_KEY in d:
            logits = d[TASK_RESULT_KEY]     # numpy float32 array (torch tensor if asked)
        else:
            print("failed:", d[TASK_ERROR_KEY])

One `pipe` may be called from many threads at once: the GIL is released while the engine
works. A result the pipeline leaves on the GPU (the `cuda` build, a pipeline ending in
DecodeTensor/ResizeTensor/cvtColorTensor) is a `DeviceArray`: `torch.from_dlpack(r)` makes a
CUDA tensor over it without a copy, and `result_type="torch"` does that for you. Failures never
raise by default (as TorchPipe: `result` is absent); the reason is under `error`.
`pipe(..., raise_errors=True)` raises `PipelineError` after the call instead, with every dict
filled in.
"""
from typing import Any, Dict, List, Union

from . import _native
from ._native import (  # noqa: F401 - re-exported
    CUDA,
    DeviceArray,
    TASK_BOX_KEY,
    TASK_DATA_KEY,
    TASK_ERROR_KEY,
    TASK_NODE_NAME_KEY,
    TASK_RESULT_KEY,
    TASK_SCORE_KEY,
    ConfigError,
    parse_toml,
)

__all__ = [
    "pipe", "parse_toml", "ConfigError", "PipelineError", "TASK_DATA_KEY", "TASK_RESULT_KEY",
    "TASK_NODE_NAME_KEY", "TASK_ERROR_KEY", "TASK_SCORE_KEY", "TASK_BOX_KEY", "CUDA", "DeviceArray",
]

Inputs = Union[Dict[str, Any], List[Dict[str, Any]]]


class PipelineError(RuntimeError):
    """Items of a call that got no result (`raise_errors=True`); `.failed` lists
    `(index, reason)`."""

    def __init__(self, failed):
        self.failed = failed
        first = "; ".join(f"input {i}: {r}" for i, r in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        super().__init__(f"{len(failed)} input(s) failed: {first}{more}")


class pipe:
    """A TOML pipeline, built once: every node's instances, threads and models.

    config: a TOML path, or the dict `parse_toml` returns (edited or not).
    result_type: "numpy" (tensors as numpy arrays; GPU values as DeviceArray, for any DLPack
        consumer), or "torch" (torch tensors, GPU values as CUDA tensors by DLPack without a
        copy; torch must be importable).
    raise_errors: raise PipelineError after a call in which an input got no result.
    request_timeout: seconds a call may take before its unfinished items fail.
    """

    def __init__(self, config, *, result_type: str = "numpy", raise_errors: bool = False,
                 request_timeout: float = 10.0):
        if result_type not in ("numpy", "torch"):
            raise ValueError(f'result_type must be "numpy" or "torch", not {result_type!r}')
        self._torch = None
        if result_type == "torch":
            try:
                import torch
            except ImportError as e:
                raise ImportError('result_type="torch" needs PyTorch (import torch failed)') from e
            self._torch = torch
        self._raise = raise_errors
        self._pipe = _native.Pipe(config, request_timeout)

    def __call__(self, inputs: Inputs) -> None:
        self._pipe(inputs)
        dicts = [inputs] if isinstance(inputs, dict) else inputs
        if self._torch is not None:
            for d in dicts:
                r = d.get(TASK_RESULT_KEY)
                if isinstance(r, DeviceArray):
                    d[TASK_RESULT_KEY] = self._torch.from_dlpack(r)
                elif r is not None and hasattr(r, "__array_interface__"):
                    d[TASK_RESULT_KEY] = self._torch.from_numpy(r)
        if self._raise:
            failed = [(i, d[TASK_ERROR_KEY]) for i, d in enumerate(dicts)
                      if TASK_RESULT_KEY not in d]
            if failed:
                raise PipelineError(failed)

    def entry_nodes(self) -> List[str]:
        """The nodes an input may name under TASK_NODE_NAME_KEY ("node_name")."""
        return self._pipe.entry_nodes()

    def __repr__(self):
        return repr(self._pipe)
