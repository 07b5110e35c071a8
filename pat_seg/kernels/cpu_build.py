"""Compile pat-seg's C++ CPU kernels once per machine and load them with :mod:`ctypes`.

The kernels are plain C functions over raw pointers (no PyTorch headers), so building them takes a
couple of seconds with the system C++ compiler and needs neither ninja nor a matching PyTorch build.
The shared library is cached under ``$PAT_SEG_KERNEL_CACHE`` (default
``$XDG_CACHE_HOME/pat_seg/kernels``, i.e. ``~/.cache/pat_seg/kernels``) by a hash of the source, the
compiler, the flags and the CPU: ``-march=native`` code is only ever loaded on the kind of CPU that
built it, so a cache on a shared home directory is safe across a heterogeneous cluster. Processes that
compile at the same time (DDP ranks) each write a private file and rename it into place.

Without a compiler the losses keep their eager PyTorch path (``implementation="auto"``); asking for the
kernel explicitly (``implementation="cpu"``) then raises :class:`CpuKernelUnavailable` with the reason.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

SOURCE = Path(__file__).with_name("cpu") / "softmax_cross_entropy.cpp"
BASE_FLAGS = ("-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-pthread")
# Tried in order; the first that compiles wins. -fopenmp shares PyTorch's OpenMP threads (see the
# kernel's parallel_over); Apple's clang has no OpenMP and some targets no -march=native.
TARGET_FLAGS = (("-fopenmp", "-march=native"), ("-march=native",), ("-fopenmp",), ())


class CpuKernelUnavailable(RuntimeError):
    """The C++ CPU kernels cannot be built or loaded on this machine (the message says why)."""


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    explicit = os.environ.get("PAT_SEG_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pat_seg" / "kernels"


def find_compiler() -> str:
    """``$CXX``, else the first of ``c++``, ``g++``, ``clang++`` on ``PATH``."""
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return str(shutil.which(candidate))
    raise CpuKernelUnavailable("no C++ compiler found ($CXX, c++, g++ or clang++ on PATH)")


def _cpu_identity() -> str:
    """The CPU model and feature flags, so that a cached ``-march=native`` build matches the CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            lines = [line.strip() for line in info if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise CpuKernelUnavailable(f"the C++ compiler {compiler} does not run: {error}") from error


def _compile(compiler: str, flags: tuple[str, ...], destination: Path) -> str | None:
    """Build into ``destination`` atomically; return the compiler's error text on failure."""
    handle, scratch = tempfile.mkstemp(prefix=destination.stem, suffix=".so.tmp", dir=destination.parent)
    os.close(handle)
    try:
        result = subprocess.run([compiler, *BASE_FLAGS, *flags, str(SOURCE), "-o", scratch],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return result.stderr.strip() or f"{compiler} exited with status {result.returncode}"
        os.replace(scratch, destination)
        return None
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def build_library() -> Path:
    """Path of the compiled kernel library, compiling it first if this machine has no cached copy."""
    if platform.system() == "Windows":
        raise CpuKernelUnavailable("the C++ CPU kernels are built for Linux and macOS only")
    compiler = find_compiler()
    version = _compiler_version(compiler)
    cache = kernel_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CpuKernelUnavailable(f"cannot create the kernel cache {cache}: {error}") from error
    errors = []
    for flags in TARGET_FLAGS:
        fingerprint = hashlib.sha256()
        for part in (SOURCE.read_bytes(), compiler.encode(), version.encode(), " ".join(BASE_FLAGS + flags).encode(),
                     _cpu_identity().encode(), platform.machine().encode()):
            fingerprint.update(part)
            fingerprint.update(b"\0")
        library = cache / f"softmax_cross_entropy-{fingerprint.hexdigest()[:20]}.so"
        if library.exists():
            return library
        error = _compile(compiler, flags, library)
        if error is None:
            return library
        errors.append(f"{' '.join(flags) or '(no target flags)'}: {error[-2000:]}")
    raise CpuKernelUnavailable(f"compiling {SOURCE.name} with {compiler} failed:\n" + "\n".join(errors))


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    """Give every exported function its C signature (ctypes would otherwise guess ints)."""
    p, i64, u64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float
    library.pat_seg_pixel_loss.argtypes = [p, ctypes.POINTER(ctypes.c_double)]  # (pat_seg_loss_args*, double*)
    library.pat_seg_pixel_loss.restype = ctypes.c_int
    library.pat_seg_blv_variation.argtypes = [p, i64, i64, i64, f32, u64]
    library.pat_seg_blv_variation.restype = ctypes.c_int
    library.pat_seg_philox4x32_10.argtypes = [p, p, p]
    library.pat_seg_philox4x32_10.restype = None
    for name in ("pat_seg_math_exp", "pat_seg_math_log_positive", "pat_seg_math_half_normal"):
        getattr(library, name).argtypes = [p, p, i64]
        getattr(library, name).restype = None
    return library


@lru_cache(maxsize=1)
def load_cpu_kernels() -> ctypes.CDLL:
    """The loaded kernel library (built on first use); :class:`CpuKernelUnavailable` if impossible."""
    library = build_library()
    try:
        return _declare(ctypes.CDLL(str(library)))
    except OSError as error:
        raise CpuKernelUnavailable(f"cannot load {library}: {error}") from error


@lru_cache(maxsize=1)
def cpu_kernels_available() -> bool:
    """Whether :func:`load_cpu_kernels` succeeds here (tried once per process; warns once if not)."""
    try:
        load_cpu_kernels()
    except CpuKernelUnavailable as error:
        warnings.warn(f"pat-seg's fused CPU loss kernel is unavailable, using eager PyTorch instead: {error}",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


__all__ = ["CpuKernelUnavailable", "build_library", "cpu_kernels_available", "kernel_cache_dir", "load_cpu_kernels"]
