"""The engine's own CPU product (clasp_core/kernels/linear.c, built by cpu_kernel.py)."""
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clasp_core import cpu_kernel
from clasp_core.runner import Runner

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")


@pytest.fixture(scope="module")
def kernel():
    k = cpu_kernel.kernel()
    assert k is not None, f"the CPU kernel was not built here: {cpu_kernel.why_off()}"
    return k


@needs_cc
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 9, 16, 17])
def test_matches_linear_on_every_tail(kernel, M):
    """Rows in threes and their remainder, outputs in any count, inputs past the 32- and 8-wide loops."""
    g = torch.Generator().manual_seed(M)
    for N, K in ((1, 1), (3, 7), (4, 8), (5, 31), (37, 32), (64, 33), (130, 100), (257, 576)):
        x, w, b = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g), torch.randn(N, generator=g)
        for bias in (None, b):
            got, want = kernel(x, w, bias), F.linear(x, w, bias)
            assert got.shape == want.shape == (M, N)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * K ** 0.5)


@needs_cc
def test_keeps_leading_dims_and_takes_strided_input(kernel):
    x = torch.randn(1, 6, 40)[:, ::2]                        # [1, 3, 40], not contiguous
    w = torch.randn(24, 40)
    got = kernel(x, w)
    assert got.shape == (1, 3, 24)
    torch.testing.assert_close(got, F.linear(x, w), rtol=1e-5, atol=1e-4)


@needs_cc
def test_the_same_bits_whatever_the_thread_count(kernel):
    """Each output is summed by one thread in one order: threads split the rows of W, not the sums."""
    x, w = torch.randn(9, 576), torch.randn(1001, 576)
    assert torch.equal(kernel(x, w, threads=1), kernel(x, w, threads=2))
    assert torch.equal(kernel(x[:1], w, threads=1), kernel(x[:1], w, threads=3))


@needs_cc
def test_shares_torchs_openmp_runtime(kernel):
    """Linked to the runtime torch loaded, so the process holds one OpenMP runtime (one team per thread)."""
    maps = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
            if any(n in line for n in ("libgomp", "libiomp5", "libomp"))}
    assert maps == {kernel.omp}


@needs_cc
def test_the_engine_multiplies_with_it_on_a_cpu(tiny, kernel):
    runner = Runner(tiny.model)
    assert runner.packed is not None and runner.packed.kernel is kernel
    # the head is the module's own weight (no [in, out] copy), q|k|v fused [out, in]
    assert runner.packed.head.data_ptr() == tiny.model.lm_head.weight.data_ptr()
    assert runner.packed.layers[0].qkv.shape[1] == tiny.model.config.hidden_size


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv("CLASP_CPU_KERNEL", "0")
    with pytest.raises(RuntimeError, match="CLASP_CPU_KERNEL=0"):
        cpu_kernel._build()


def test_no_compiler_leaves_it_off_with_the_reason(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(RuntimeError, match="no C compiler"):
        cpu_kernel._build()


@needs_cc
def test_a_broken_build_is_refused(monkeypatch, tmp_path):
    """A source that does not compile gives the compiler's message, never a half-built library."""
    bad = tmp_path / "linear.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(cpu_kernel, "SOURCE", bad)
    monkeypatch.setenv("CLASP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="building the CPU kernel failed"):
        cpu_kernel._build()
    assert not list((tmp_path / "cache" / "kernels").glob("*.so"))


def test_torch_products_without_it(tiny, monkeypatch):
    """With the kernel off the runner keeps torch's products on its [in, out] copies, as before."""
    monkeypatch.setattr(cpu_kernel, "kernel", lambda: None)
    runner = Runner(tiny.model)
    assert runner.packed is not None and runner.packed.kernel is None
    assert runner.packed.head.shape == tiny.model.lm_head.weight.t().shape


@needs_cc
def test_the_step_bench_times_blocks_with_both_products(tiny_dir, capsys):
    """`python -m clasp_core.bench.step --rows 1,3`: every weight once per row count, torch's and the kernel's."""
    from clasp_core.bench import step

    rows = step.block_times(str(tiny_dir), threads=1, rows=[1, 3], reps=1)
    assert [r["rows"] for r in rows] == [1, 3]
    assert all(r["torch"] > 0 and r["own kernel"] > 0 for r in rows)
    assert step.main(["--model", str(tiny_dir), "--rows", "1,2", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert "own kernel" in out and "(1.00x)" in out


@needs_cc
def test_a_row_sums_the_same_alone_or_in_a_block(kernel):
    """What lets a greedy verification take the head two rows at a time (backends/cpu.py, verify_logits): each row of a
    block comes out bitwise as that row alone, as a plain step computes it."""
    g = torch.Generator().manual_seed(5)
    w, b = torch.randn(300, 200, generator=g), torch.randn(300, generator=g)
    for M in (2, 3, 4, 7, 9, 16):
        x = torch.randn(M, 200, generator=g)
        block = kernel(x, w, b)
        assert all(torch.equal(block[i], kernel(x[i:i + 1], w, b)[0]) for i in range(M))


def test_a_kernel_that_is_off_is_said_once_unless_asked_for(tiny, monkeypatch, capsys):
    """A host should see in the log that the engine runs at torch's speed, and why; once per process."""
    monkeypatch.setattr(cpu_kernel, "kernel", lambda: None)
    monkeypatch.setitem(cpu_kernel._state, "said", False)
    monkeypatch.setitem(cpu_kernel._state, "why", "no C compiler (cc) on PATH")
    Runner(tiny.model)
    Runner(tiny.model)
    err = capsys.readouterr().err
    assert err.count("CPU kernel is off (no C compiler (cc) on PATH)") == 1
    monkeypatch.setitem(cpu_kernel._state, "said", False)
    monkeypatch.setenv("CLASP_CPU_KERNEL", "0")                  # asked for: nothing to say
    Runner(tiny.model)
    assert "CPU kernel is off" not in capsys.readouterr().err


def test_the_page_is_told_when_the_kernel_is_off(tiny, monkeypatch):
    """The page's status after a run names a kernel that is off and why (a Space without a compiler), and
    says nothing when the kernel runs, when it was turned off by hand, or where it would not serve."""
    assert cpu_kernel.engine_note(Runner(tiny.model)) == ""                  # built here: on, nothing to say
    assert cpu_kernel.engine_note(None) == ""                                # no run yet
    monkeypatch.setattr(cpu_kernel, "kernel", lambda: None)
    monkeypatch.setitem(cpu_kernel._state, "said", True)
    monkeypatch.setitem(cpu_kernel._state, "why", "no C compiler (cc) on PATH")
    off = Runner(tiny.model)
    assert off.packed is not None and off.packed.kernel is None
    assert cpu_kernel.engine_note(off) == ("CPU kernel off (no C compiler (cc) on PATH): torch's products, slower "
                                           "(README, CPU)")
    monkeypatch.setenv("CLASP_CPU_KERNEL", "0")
    assert cpu_kernel.engine_note(off) == ""
