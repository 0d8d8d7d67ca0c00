"""The one-pass C kernels of ``_onepass.c``, built with the system's C compiler.

They are the bandwidth limit the contenders are held to: a momentum step that
reads and writes each word once, compiled with ``-O3 -march=native`` and
split over OpenMP threads. Where no compiler (or no OpenMP) is found the suite
says so and falls back to the jitted streaming kernels.
"""

import ctypes
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SOURCE = Path(__file__).with_name("_onepass.c")
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
_FLOAT_P = ctypes.POINTER(ctypes.c_float)


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


@cache
def library() -> tuple[Any | None, str]:
    """The loaded kernels (or None) and how they were built (or why not)."""
    cc = compiler()
    if cc is None:
        return None, "no C compiler found (set CC)"
    out = Path(tempfile.mkdtemp(prefix="momentax-onepass-")) / "onepass.so"
    command = [cc, *_FLAGS, str(SOURCE), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}"
    lib = ctypes.CDLL(str(out))
    lib.momentum_step.argtypes = [
        _FLOAT_P,
        _FLOAT_P,
        _FLOAT_P,
        ctypes.c_ssize_t,
        ctypes.c_float,
        ctypes.c_float,
    ]
    lib.scale.argtypes = [_FLOAT_P, ctypes.c_ssize_t, ctypes.c_float]
    lib.triad.argtypes = [_FLOAT_P, _FLOAT_P, ctypes.c_ssize_t, ctypes.c_float]
    version = subprocess.run(
        [cc, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return lib, f"{version[0] if version else cc}: {' '.join(_FLAGS)}"


def _pointer(array: np.ndarray) -> Any:
    return array.ctypes.data_as(_FLOAT_P)


class OnePass:
    """A C kernel on NumPy float32 arrays: ``momentum``, ``scale`` or ``triad``.

    ``momentum`` is the step every contender runs (5 words per param);
    ``scale`` and ``triad`` are STREAM's in-place kernels (2 and 3 words).
    """

    WORDS: ClassVar[dict[str, int]] = {"momentum": 5, "scale": 2, "triad": 3}

    def __init__(
        self,
        kind: str,
        params: np.ndarray,
        grads: np.ndarray,
        learning_rate: float = 0.01,
        momentum: float = 0.9,
    ):
        lib, why = library()
        if lib is None:
            raise RuntimeError(why)
        self.kind = kind
        self._lib = lib
        self._p = np.array(params, np.float32)
        self._v = np.zeros_like(self._p)
        self._g = np.array(grads, np.float32)
        self._lr = ctypes.c_float(learning_rate)
        self._mu = ctypes.c_float(momentum)

    def run(self, calls: int) -> None:
        p, v, g = _pointer(self._p), _pointer(self._v), _pointer(self._g)
        n = self._p.size
        for _ in range(calls):
            if self.kind == "momentum":
                self._lib.momentum_step(p, v, g, n, self._lr, self._mu)
            elif self.kind == "scale":
                self._lib.scale(p, n, ctypes.c_float(0.999))
            else:
                self._lib.triad(p, g, n, ctypes.c_float(0.999))

    def params(self) -> np.ndarray:
        return self._p.copy()
