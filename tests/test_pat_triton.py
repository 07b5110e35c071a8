"""The opt-in Triton PAT kernel equals the float64 reference of Eq. 4-5 (values and gradients).

Without a GPU the kernel runs under Triton's CPU interpreter, which Triton selects once, when the
``triton`` package is first imported (Lightning and torch import it early, so setting the variable
later in a process has no effect). ``test_kernel_under_triton_interpreter`` therefore re-runs this
file in a child process started with ``TRITON_INTERPRET=1``; there the ``interpreter_only`` tests
run, and here they are skipped. The ``compiled_only`` tests need Triton in its normal mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from pat_reference import reference_pat_and_grad

from pat_seg.losses import PATLoss

triton = pytest.importorskip("triton")

# Whether this process's triton runs kernels through the interpreter (decided at its first import).
INTERPRETED = type(triton.language.standard.zeros).__name__ == "InterpretedFunction"
interpreter_only = pytest.mark.skipif(not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 child process")
compiled_only = pytest.mark.skipif(INTERPRETED, reason="needs Triton compiling kernels, not interpreting them")


@pytest.mark.slow  # about 65 s: the interpreter runs every kernel instance in Python
def test_kernel_under_triton_interpreter() -> None:
    """Run this file's interpreter tests in a child process whose triton is imported interpreted."""
    if INTERPRETED:
        pytest.skip("this is the interpreter process")
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__)), "-q", "-p", "no:cacheprovider", "-m", "not gpu"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-3000:]
    assert " passed" in child.stdout and "failed" not in child.stdout


@pytest.fixture()
def interpreted() -> ModuleType:
    """The kernel module, its kernels run by Triton's CPU interpreter."""
    from pat_seg.kernels import pat_triton

    assert type(pat_triton._pixel_loss_kernel).__name__ == "InterpretedFunction"
    return pat_triton


@pytest.fixture()
def compiled() -> ModuleType:
    """The kernel module as on a GPU machine (kernels compiled, not interpreted)."""
    from pat_seg.kernels import pat_triton

    assert type(pat_triton._pixel_loss_kernel).__name__ == "JITFunction"
    return pat_triton


def reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    epsilon: float,
    detach_weight: bool,
    class_reduction: str,
    ignore_index: int = 255,
    confidence_weight: bool = True,
    normalization: str = "image_class",
) -> tuple[float, torch.Tensor]:
    return reference_pat_and_grad(
        logits,
        target,
        temperature=temperature,
        epsilon=epsilon,
        ignore_index=ignore_index,
        class_reduction=class_reduction,
        detach_weight=detach_weight,
        confidence_weight=confidence_weight,
        normalization=normalization,
    )


def make_batch(
    batch: int, num_classes: int, height: int, width: int, seed: int = 0, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits spread enough for confident and unconfident pixels, labels with ~15% ``ignore_index``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, height, width, generator=generator, dtype=torch.float64) * 3
    target = torch.randint(0, num_classes, (batch, height, width), generator=generator)
    ignored = torch.rand(batch, height, width, generator=generator) < 0.15
    return logits, target.masked_fill(ignored, ignore_index)


def value_and_grad(
    loss: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = logits.detach().clone().requires_grad_(True)
    value = loss(leaf, target)
    value.backward()
    return value.detach(), leaf.grad


# --- kernel vs the float64 reference ----------------------------------------------------------------
OPTIONS = [
    # temperature, epsilon, detach_weight, class_reduction, confidence_weight, normalization
    (20.0, 0.0, False, "sum", True, "image_class"),
    (2.0, 0.3, False, "mean", True, "image_class"),
    (0.5, -0.1, True, "sum", True, "image_class"),
    (5.0, 0.0, True, "mean", True, "image_class"),
    # The ablations: Eq. 5 off (CONFIDENCE_WEIGHT=False), Eq. 4 off (the 1/V table), and both.
    (2.0, 0.3, False, "sum", False, "image_class"),
    (2.0, 0.3, False, "mean", False, "image_class"),
    (2.0, 0.3, False, "sum", True, "pixel"),
    (0.5, -0.1, True, "sum", True, "pixel"),
    (2.0, 0.3, False, "sum", False, "pixel"),
]
OPTION_NAMES = ("temperature", "epsilon", "detach_weight", "class_reduction", "confidence_weight", "normalization")


def options_id(options: tuple) -> str:
    temperature, epsilon, detach_weight, class_reduction, confidence_weight, normalization = options
    beta = "beta" if confidence_weight else "nobeta"
    return f"T{temperature}-eps{epsilon}-detach{detach_weight}-{class_reduction}-{beta}-{normalization}"


def pat_loss(options: tuple, implementation: str) -> PATLoss:
    return PATLoss(**dict(zip(OPTION_NAMES, options)), implementation=implementation)


@interpreter_only
@pytest.mark.parametrize("num_classes", [2, 5, 19, 37])
@pytest.mark.parametrize("options", OPTIONS, ids=options_id)
def test_kernel_matches_reference_for_every_option(interpreted: ModuleType, num_classes: int, options: tuple) -> None:
    logits, target = make_batch(2, num_classes, 17, 19, seed=num_classes)  # 323 pixels: several pixel tiles for L >= 9
    loss = pat_loss(options, "triton")
    value, grad = value_and_grad(loss, logits.float(), target)
    expected_value, expected_grad = reference_pat_and_grad(logits.float(), target, **dict(zip(OPTION_NAMES, options)))
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    assert float(value) == pytest.approx(expected_value, rel=2e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)


@interpreter_only
def test_kernel_equals_eager_pat_with_custom_ignore_index(interpreted: ModuleType) -> None:
    logits, target = make_batch(2, 4, 7, 8, ignore_index=-1)
    eager = value_and_grad(PATLoss(ignore_index=-1, implementation="eager"), logits, target)
    fused = value_and_grad(PATLoss(ignore_index=-1, implementation="triton"), logits.float(), target)
    assert float(fused[0]) == pytest.approx(float(eager[0]), rel=2e-6)
    torch.testing.assert_close(fused[1].double(), eager[1], rtol=1e-4, atol=1e-7)


@interpreter_only
@pytest.mark.parametrize("confidence_weight", [True, False])
def test_pixel_normalization_divides_by_valid_pixels_of_the_batch(
    interpreted: ModuleType, confidence_weight: bool
) -> None:
    # Image 1 all ignored: Eq. 4 still counts it in B, the pixel mean leaves it out of V.
    logits, target = make_batch(2, 3, 5, 6)
    target[1] = 255
    loss = PATLoss(temperature=2.0, confidence_weight=confidence_weight, normalization="pixel", implementation="triton")
    value, grad = value_and_grad(loss, logits.float(), target)
    single_value, single_grad = reference(
        logits[:1].float(),
        target[:1],
        2.0,
        0.0,
        False,
        "sum",
        confidence_weight=confidence_weight,
        normalization="pixel",
    )
    assert float(value) == pytest.approx(single_value, rel=2e-6)
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    torch.testing.assert_close(grad[:1].double(), single_grad, rtol=1e-4, atol=1e-7)
    value, grad = value_and_grad(loss, logits.float(), torch.full_like(target, 255))
    assert float(value) == 0.0 and not grad.any()


@interpreter_only
def test_all_ignored_image_contributes_zero_and_counts_in_batch(interpreted: ModuleType) -> None:
    logits, target = make_batch(2, 3, 5, 6)
    target[1] = 255
    value, grad = value_and_grad(PATLoss(implementation="triton"), logits.float(), target)
    single_value, single_grad = reference(logits[:1].float(), target[:1], 20.0, 0.0, False, "sum")
    assert float(value) == pytest.approx(single_value / 2, rel=2e-6)  # image 1 counts in B = 2
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    torch.testing.assert_close(grad[:1].double(), single_grad / 2, rtol=1e-4, atol=1e-7)
    everything_ignored = torch.full_like(target, 255)
    value, grad = value_and_grad(PATLoss(implementation="triton"), logits.float(), everything_ignored)
    assert float(value) == 0.0 and not grad.any()


@interpreter_only
def test_largest_class_count(interpreted: ModuleType) -> None:
    logits, target = make_batch(1, 256, 3, 5, ignore_index=-1)  # 255 is a class here
    loss = PATLoss(ignore_index=-1, class_reduction="mean", implementation="triton")
    value, grad = value_and_grad(loss, logits.float(), target)
    expected_value, expected_grad = reference(logits.float(), target, 20.0, 0.0, False, "mean", ignore_index=-1)
    assert float(value) == pytest.approx(expected_value, rel=2e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="up to 256 classes; got 257"):
        PATLoss(implementation="triton")(torch.zeros(1, 257, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


@interpreter_only
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nothing_ignored_and_both_scalar_reductions(interpreted: ModuleType, reduction: str) -> None:
    logits, target = make_batch(2, 5, 6, 7)
    target = target.masked_fill(target == 255, 0)  # every pixel a class: ignore_index=None ignores nothing
    loss = PATLoss(ignore_index=None, reduction=reduction, implementation="triton")
    value, grad = value_and_grad(loss, logits.float(), target)
    # PAT's pixel terms carry Eq. 4's 1 / (B S_i^l): "sum" and "mean" are both the loss.
    expected_value, expected_grad = reference(logits.float(), target, 20.0, 0.0, False, "sum", ignore_index=-1)
    assert float(value) == pytest.approx(expected_value, rel=2e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_math_in_float32_gradient_in_their_dtype(
    interpreted: ModuleType, dtype: torch.dtype
) -> None:
    logits, target = make_batch(2, 19, 8, 9)
    half = logits.to(dtype)
    value, grad = value_and_grad(PATLoss(temperature=2.0, implementation="triton"), half, target)
    # Reference on the same (rounded) half values, in float64: only the gradient's rounding differs.
    expected_value, expected_grad = reference(half, target, 2.0, 0.0, False, "sum")
    assert value.dtype == torch.float32 and grad.dtype == dtype
    assert float(value) == pytest.approx(expected_value, rel=2e-6)
    # One unit in the last place of the gradient's dtype: Triton's interpreter rounds float32 to half
    # precision towards zero, a GPU to nearest (half a unit).
    unit = 2**-7 if dtype == torch.bfloat16 else 2**-10
    torch.testing.assert_close(grad.double(), expected_grad, rtol=unit, atol=1e-6)


@interpreter_only
def test_non_contiguous_logits_and_target(interpreted: ModuleType) -> None:
    logits, target = make_batch(2, 6, 10, 12)
    expected_value, expected_grad = reference(logits, target, 20.0, 0.0, False, "sum")
    layouts = {
        "channels_last": logits.float().contiguous(memory_format=torch.channels_last),
        "transposed_hw": logits.float().transpose(2, 3).contiguous().transpose(2, 3),
        "every_other_column": torch.stack([logits, -logits], dim=-1).flatten(-2).float()[..., ::2],
    }
    for name, view in layouts.items():
        assert not view.is_contiguous(), name
        torch.testing.assert_close(view.double(), logits)
        leaf = view.detach().requires_grad_(True)
        value = PATLoss(implementation="triton")(leaf, target.transpose(1, 2).contiguous().transpose(1, 2))
        value.backward()
        assert float(value.detach()) == pytest.approx(expected_value, rel=2e-6), name
        torch.testing.assert_close(leaf.grad.double(), expected_grad, rtol=1e-4, atol=1e-7, msg=name)
    leaf = layouts["channels_last"].detach().requires_grad_(True)
    PATLoss(implementation="triton")(leaf, target).backward()
    assert leaf.grad.is_contiguous(memory_format=torch.channels_last)  # the gradient keeps the layout


@interpreter_only
def test_incoming_gradient_scales_the_kernel_gradient(interpreted: ModuleType) -> None:
    logits, target = make_batch(1, 5, 6, 6)
    leaf = logits.float().requires_grad_(True)
    (PATLoss(implementation="triton")(leaf, target) * -2.5).backward()
    _, expected_grad = reference(logits, target, 20.0, 0.0, False, "sum")
    torch.testing.assert_close(leaf.grad.double(), -2.5 * expected_grad, rtol=1e-4, atol=1e-7)


@interpreter_only
def test_autocast_gives_float32_loss(interpreted: ModuleType) -> None:
    logits, target = make_batch(1, 4, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = PATLoss(implementation="triton")(logits.to(torch.bfloat16), target)
    assert value.dtype == torch.float32


# --- dispatch and errors ----------------------------------------------------------------------------
@interpreter_only
def test_auto_runs_pytorch_and_triton_is_opt_in(interpreted: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = interpreted.fused_pat_loss
    monkeypatch.setattr(interpreted, "fused_pat_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    logits, target = make_batch(1, 3, 4, 4)
    PATLoss()(logits.float(), target)
    assert calls == []
    PATLoss(implementation="triton")(logits.float(), target)
    assert calls == [1]


@interpreter_only
def test_bad_input_raises_before_the_kernel(interpreted: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel_must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("kernel launched on bad input")

    monkeypatch.setattr(interpreted, "_launch", kernel_must_not_run)
    logits = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="label 7 found in target"):
        PATLoss(implementation="triton")(logits, torch.tensor([[[0, 1], [7, 2]]]))
    with pytest.raises(ValueError, match="torch.float64"):
        PATLoss(implementation="triton")(logits.double(), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="implementation must be one of"):
        PATLoss(implementation="cuda")


class CudaLookingLogits:
    """Stands in for CUDA logits where there is no GPU: dispatch may only look at device and dtype."""

    is_cuda = True
    device = torch.device("cuda")
    dtype = torch.float32


def test_auto_chooses_the_pytorch_code_for_cuda_logits() -> None:
    # Until a measured GPU run shows the kernel right and faster, "auto" never picks it (docs/benchmarks.md).
    assert not PATLoss().uses_triton(CudaLookingLogits())  # type: ignore[arg-type]
    assert not PATLoss(implementation="eager").uses_triton(CudaLookingLogits())  # type: ignore[arg-type]
    assert PATLoss(implementation="triton").uses_triton(CudaLookingLogits())  # type: ignore[arg-type]


@compiled_only
def test_forced_triton_on_cpu_without_interpreter_is_a_clear_error(compiled: ModuleType) -> None:
    with pytest.raises(ValueError, match="needs CUDA tensors; got logits on cpu"):
        PATLoss(implementation="triton")(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def sm90_ptx_and_ptxas_log(
    kernel_module: ModuleType, dtype: str, compute_grad: bool, tmp_path: Path, confidence_weight: bool = True
) -> tuple[str, str]:
    """Compile the kernel for an H100 (sm_90a) with no GPU present; return its PTX and ``ptxas -v`` log."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = kernel_module._pixel_loss_kernel
    block_c, block_p, num_warps = kernel_module._block_sizes(20)
    constants = {
        "CONFIDENCE_WEIGHT": confidence_weight,
        "DETACH_WEIGHT": False,
        "COMPUTE_GRAD": compute_grad,
        "PIXELS_CONTIGUOUS": True,
        "BLOCK_C": block_c,
        "BLOCK_P": block_p,
    }
    signature = {}
    for name in kernel.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = (
                f"*{dtype}" if name in ("logits_ptr", "grad_ptr") else ("*i64" if name == "target_ptr" else "*fp32")
            )
        else:
            signature[name] = "fp32" if name in ("inv_temperature", "epsilon") else "i32"
    # What Triton's launcher specialises at run time for 16-aligned tensors and sizes.
    aligned = [
        name
        for name in kernel.arg_names
        if name.endswith("_ptr") or name in ("num_pixels", "stride_lb", "stride_gb", "stride_lc", "stride_gc")
    ]
    source = ASTSource(
        fn=kernel,
        signature=signature,
        constexprs={(kernel.arg_names.index(name),): value for name, value in constants.items()},
        attrs={(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned},
    )
    compiled_kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    ptx = tmp_path / "kernel.ptx"
    ptx.write_text(compiled_kernel.asm["ptx"])
    log = subprocess.run(
        [triton.knobs.nvidia.ptxas.path, "-v", "-arch=sm_90a", str(ptx), "-o", str(tmp_path / "kernel.cubin")],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return compiled_kernel.asm["ptx"], log


@compiled_only
@pytest.mark.parametrize(
    ("dtype", "compute_grad", "confidence_weight"),
    [("fp32", False, True), ("fp32", True, True), ("bf16", True, True), ("fp32", True, False)],
)
def test_kernel_compiles_for_h100_without_spills_and_with_vector_access(
    compiled: ModuleType, dtype: str, compute_grad: bool, confidence_weight: bool, tmp_path: Path
) -> None:
    """The GPU compiler (not the interpreter) accepts the kernel; the tiles fit in registers; loads are 16-byte."""
    try:
        ptx, log = sm90_ptx_and_ptxas_log(compiled, dtype, compute_grad, tmp_path, confidence_weight)
    except (RuntimeError, FileNotFoundError) as error:  # no NVIDIA backend or ptxas in this triton build
        pytest.skip(f"cannot compile for sm_90 here: {error}")
    assert "0 bytes spill stores" in log, log
    assert "ld.global.v4" in ptx
    if compute_grad:
        assert "st.global.v4" in ptx


# --- on a GPU: compiled kernel at realistic sizes ---------------------------------------------------
@compiled_only
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", [(2, 19, 64, 96), (2, 150, 48, 40), (1, 256, 17, 33)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "options", [OPTIONS[0], OPTIONS[1], OPTIONS[4], OPTIONS[6]], ids=["defaults", "T2-eps0.3-mean", "nobeta", "pixel"]
)
def test_compiled_kernel_on_cuda_equals_eager(
    compiled: ModuleType, shape: tuple, dtype: torch.dtype, options: tuple
) -> None:
    logits, target = make_batch(*shape)
    logits, target = logits.cuda().to(dtype), target.cuda()
    expected_value, expected_grad = value_and_grad(pat_loss(options, "eager"), logits.double(), target)
    assert not PATLoss().uses_triton(logits)  # "auto" runs the PyTorch code on CUDA too
    loss = pat_loss(options, "triton")
    tolerance = {torch.float32: 1e-5, torch.bfloat16: 2**-8, torch.float16: 2**-11}[dtype]  # rounding to nearest
    for view in (logits, logits.contiguous(memory_format=torch.channels_last)):
        value, grad = value_and_grad(loss, view, target)
        assert grad.dtype == dtype
        assert float(value) == pytest.approx(float(expected_value), rel=1e-5)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=tolerance, atol=1e-7)
