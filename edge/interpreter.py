"""The one place that imports a TFLite interpreter, and the Edge TPU delegate.

Two interpreters exist with the same API: ai-edge-litert (LiteRT, numpy 2, 13-40x faster int8
CPU kernels than tflite-runtime 2.14 on x86) and tflite-runtime (what Coral's libedgetpu and
pycoral were built against). The CPU path prefers LiteRT; the Edge TPU path prefers
tflite-runtime. Either falls back to the other when only one is installed.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
CPU_ORDER = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
EDGETPU_ORDER = ("tflite_runtime.interpreter", "ai_edge_litert.interpreter")


class NoInterpreterError(RuntimeError):
    """Neither ai-edge-litert nor tflite-runtime is installed."""


@dataclass
class LoadedInterpreter:
    """An allocated interpreter, which runtime module built it, and on what it runs."""

    interpreter: Any
    runtime: str  # "ai_edge_litert" or "tflite_runtime"
    accelerator: str  # "cpu" or "edgetpu"


def _module(order: tuple[str, ...], prefer: str | None = None) -> Any:
    names = order if prefer is None else (prefer, *[n for n in order if n != prefer])
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise NoInterpreterError(
        "no TFLite interpreter installed: maskwatch brings LiteRT (ai-edge-litert) where it has "
        "wheels (Linux x86-64 and aarch64, macOS arm64, Windows x86-64); elsewhere pip install "
        "'maskwatch[tflite]' (tflite-runtime)"
    )


def runtime_name(module: Any) -> str:
    """'ai_edge_litert' or 'tflite_runtime' for an interpreter module."""
    return str(module.__name__).split(".")[0]


def load_cpu(model: Path, threads: int, prefer: str | None = None) -> LoadedInterpreter:
    """Build and allocate an interpreter for a CPU model."""
    mod = _module(CPU_ORDER, prefer)
    interp = mod.Interpreter(model_path=str(model), num_threads=threads)
    interp.allocate_tensors()
    return LoadedInterpreter(interp, runtime_name(mod), "cpu")


def load_edgetpu(model: Path) -> LoadedInterpreter:
    """Build an interpreter for an Edge TPU model; raises when no Edge TPU can be used.

    pycoral (from Coral's apt repository, never PyPI's unrelated `pycoral`) when installed,
    else the delegate library directly. OSError / ValueError mean no TPU or no library.
    """
    try:
        from pycoral.utils.edgetpu import make_interpreter
    except ImportError:
        make_interpreter = None
    if make_interpreter is not None:
        interp = make_interpreter(str(model))
        interp.allocate_tensors()
        return LoadedInterpreter(interp, "tflite_runtime", "edgetpu")
    mod = _module(EDGETPU_ORDER)
    # Open the library first: when it is missing, LiteRT's load_delegate leaves a half-built
    # Delegate whose __del__ prints an "Exception ignored" traceback into the journal.
    ctypes.CDLL(EDGETPU_LIBRARY)
    delegate = mod.load_delegate(EDGETPU_LIBRARY)
    interp = mod.Interpreter(model_path=str(model), experimental_delegates=[delegate])
    interp.allocate_tensors()
    return LoadedInterpreter(interp, runtime_name(mod), "edgetpu")
