"""Smoke test of the benchmark script (validation/benchmark.py) in --quick mode,
radref only: every code path runs and the outputs have the documented shape.
No timing is asserted (the numbers of a quick run mean nothing)."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "radref_benchmark", os.path.join(ROOT, "validation", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("benchmark")
    markdown = tmp / "performance.md"
    markdown.write_text(f"# Performance\n\nintro\n\n{bench.MARK_START}\nold table\n"
                        f"{bench.MARK_END}\n\noutro\n")
    status = bench.main(["--quick", "--peers", "none", "--out", str(tmp / "bench.json"),
                             "--markdown", str(markdown), "--figure", str(tmp / "scaling.png")])
    with open(tmp / "bench.json") as f:
        result = json.load(f)
    return status, result, tmp


def test_quick_run_writes_every_measurement(quick_run):
    status, result, _ = quick_run
    assert status == 0
    assert result["quick"] is True
    assert set(result["modes"]) == {"single", "default"}
    single = result["modes"]["single"]
    assert single["environment_variables"]["OPENBLAS_NUM_THREADS"] == "1"
    assert result["modes"]["default"]["environment_variables"]["OPENBLAS_NUM_THREADS"] is None
    for mode in result["modes"].values():
        assert mode["peers"] == {}
        for op in ("train_step", "logdensity", "sample"):
            assert set(mode[op]) == {"radref"}
            assert set(mode[op]["radref"]) == {"rad", "affine"}
            for r in mode[op]["radref"].values():
                assert r["median_s"] > 0 and r["reps"] >= 2
        assert {(r["axis"], r["kind"], r["op"]) for r in mode["scaling"]} == {
            (axis, kind, op) for axis in ("batch", "dim", "depth")
            for kind in ("rad", "affine") for op in ("train_step", "logdensity")}
    # memory is probed once, in the first mode, in fresh subprocesses
    assert "memory" not in result["modes"]["default"]
    assert {(r["impl"], r["kind"]) for r in single["memory"]} == {("radref", "rad"),
                                                                 ("radref", "affine")}
    assert all(r["tracemalloc_peak_mb"] > 0 for r in single["memory"])
    assert single["models"]["rad"]["config"] == ["rad", 2, 6, 8, 8]
    assert single["models"]["affine"]["config"] == ["affine", 2, 6, 56, 0]
    env = result["environment"]
    assert env["numpy"] and env["python"] and env["logical_cpus"] >= 1
    # the default mode: radref's own threads (n_jobs=-1) and their speed-up
    assert single["radref_n_jobs"] is None and "threads" not in single
    default = result["modes"]["default"]
    assert default["radref_n_jobs"] == -1
    assert {(r["kind"], r["op"]) for r in default["threads"]} == {
        (kind, op) for kind in ("rad", "affine") for op in ("logdensity", "sample")}
    assert all(r["speedup"] > 0 for r in default["threads"])
    # one thread is BLAS's too; n_jobs=None with BLAS's own threads is timed beside it
    assert all(r["one_thread_s"] > 0 and r["blas_threads_s"] > 0 for r in default["threads"])
    # which SIMD level and BLAS kernels each worker ran, and the variables that chose them
    for mode in result["modes"].values():
        assert "OPENBLAS_CORETYPE" in mode["kernels"]["kernel_variables"]
        assert mode["kernels"]["numpy_simd_dispatched"] is not None
    assert result["isa"] == "environment"


def test_isa_sets_or_unsets_the_kernel_variables_for_the_benchmark_only(bench):
    pinned = {"OPENBLAS_CORETYPE": "Zen", "OPENBLAS_L2_SIZE": "512", "PATH": "/bin",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    assert bench.isa_environment(pinned, "environment") == pinned
    assert bench.isa_environment(pinned, "native") == {
        "PATH": "/bin", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    avx2 = bench.isa_environment(pinned, "avx2")
    assert avx2["NPY_DISABLE_CPU_FEATURES"] == "X86_V4 AVX512_ICL AVX512_SPR"
    assert avx2["OPENBLAS_CORETYPE"] == "Haswell" and "OPENBLAS_L2_SIZE" not in avx2
    assert avx2["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false --xla_cpu_max_isa=AVX2"
    assert pinned["OPENBLAS_CORETYPE"] == "Zen"  # the caller's environment is not changed


def test_markdown_is_replaced_between_the_markers(quick_run, bench):
    _, result, tmp = quick_run
    text = (tmp / "performance.md").read_text()
    assert text.startswith("# Performance\n\nintro\n\n")
    assert text.endswith("\n\noutro\n")
    assert "old table" not in text
    assert text.count(bench.MARK_START) == 1 and text.count(bench.MARK_END) == 1
    assert "| radref (NumPy), 1 thread |" in text
    assert "| radref (NumPy), default threads |" in text
    assert "radref's threads (`n_jobs=-1` against one thread, BLAS included" in text
    assert "| model | operation | points | 1 thread | BLAS's threads | all CPUs | speed-up |" \
        in text
    assert "QUICK SMOKE RUN" in text
    # Updating again replaces the block in place.
    bench.update_markdown(str(tmp / "performance.md"), "new block")
    again = (tmp / "performance.md").read_text()
    assert again == (f"# Performance\n\nintro\n\n{bench.MARK_START}\nnew block\n"
                     f"{bench.MARK_END}\n\noutro\n")


def test_each_instruction_set_keeps_its_own_block(bench, tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n")
    bench.update_markdown(str(page), "native numbers", "native")
    bench.update_markdown(str(page), "avx2 numbers", "avx2")
    bench.update_markdown(str(page), "native again", "native")
    text = page.read_text()
    native_start, native_end = bench.markers("native")
    avx2_start, avx2_end = bench.markers("avx2")
    assert text.count(native_start) == 1 and text.count(avx2_start) == 1
    assert f"{native_start}\nnative again\n{native_end}" in text
    assert f"{avx2_start}\navx2 numbers\n{avx2_end}" in text
    assert "native numbers" not in text and bench.MARK_START not in text
    assert text.index(native_start) < text.index(avx2_start)  # where each was first put


def test_the_cpu_is_named_by_family_model_and_stepping(bench):
    # a virtual machine's model name may be generic: the core's numbers say which it is
    info = bench.machine_info()
    fields = {}
    if os.path.exists("/proc/cpuinfo"):  # Linux
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
        fields = dict((k.strip(), v.strip()) for k, v in (
            line.split(":", 1) for line in first.splitlines() if ":" in line))
    if "model" not in fields:  # elsewhere, or an ARM core: nothing is made up
        assert "cpu_model_number" not in info
    else:
        assert info["cpu_model_number"] == fields["model"]
        assert info["cpu_family"] == fields["cpu family"]
    assert bench.cpu_id({"cpu_family": "6", "cpu_model_number": "207", "cpu_stepping": "2"}) \
        == " (family 6, model 207, stepping 2)"
    assert bench.cpu_id({}) == ""


def test_another_machine_keeps_its_own_block_and_files(bench, tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n")
    bench.update_markdown(str(page), "our native", "native")
    bench.update_markdown(str(page), "their native", "native", "intel-xeon")
    bench.update_markdown(str(page), "their native again", "native", "intel-xeon")
    text = page.read_text()
    ours, theirs = bench.markers("native"), bench.markers("native", "intel-xeon")
    assert theirs == ("<!-- benchmark:start isa=native machine=intel-xeon -->",
                      "<!-- benchmark:end isa=native machine=intel-xeon -->")
    assert f"{ours[0]}\nour native\n{ours[1]}" in text
    assert f"{theirs[0]}\ntheir native again\n{theirs[1]}" in text
    assert text.count("their native") == 1
    args = bench.parse_args(["--isa", "avx2", "--machine", "intel-xeon"])
    out, figure = bench.output_paths(args)
    assert out.endswith("benchmark_avx2_intel-xeon.json")
    assert figure.endswith("performance_scaling_avx2_intel-xeon.png")
    assert bench.output_paths(bench.parse_args(["--isa", "avx2"]))[0].endswith(
        "benchmark_avx2.json")
    for bad in ("Intel Xeon", "intel_xeon", "-x", "", "x/../y"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--machine", bad])


def test_report_only_rewrites_the_block_from_the_json(quick_run, bench):
    _, result, tmp = quick_run
    page = tmp / "report.md"
    page.write_text(f"{bench.MARK_START}\nstale\n{bench.MARK_END}\n")
    assert bench.main(["--report-only", "--quick", "--no-scaling", "--out",
                       str(tmp / "bench.json"), "--markdown", str(page)]) == 0
    text = page.read_text()
    assert "stale" not in text and "| radref (NumPy), 1 thread |" in text
    assert result["created"] in text


def test_figure_is_written_when_matplotlib_is_installed(quick_run):
    import matplotlib  # noqa: F401  (a test dependency: the figure code is tested)
    _, _, tmp = quick_run
    assert (tmp / "scaling.png").stat().st_size > 0


def test_unknown_peer_or_mode_is_rejected(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--peers", "tensorflow"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "many"])


def test_thread_speedup_times_one_thread_with_blas_in_one_thread(bench, monkeypatch):
    # "one thread" is radref's n_jobs=None inside threadpool_limits(1, "blas");
    # "BLAS's threads" the same call outside it; "all CPUs" n_jobs=-1 outside
    import contextlib
    import threadpoolctl
    import radref.core.flow as flow
    limited, calls = [], []

    @contextlib.contextmanager
    def fake_limits(limits=None, user_api=None):
        limited.append((limits, user_api))
        yield
        limited.pop()

    def record(op):
        def fn(*args, n_jobs=None, **kwargs):
            calls.append((op, n_jobs, bool(limited)))
        return fn

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", fake_limits)
    monkeypatch.setattr(flow, "flow_log_density", record("logdensity"))
    monkeypatch.setattr(flow, "flow_sample", record("sample"))
    medians = {"1": 3.0, "blas": 2.0, "all": 1.5}

    def once(fns, timing, block):
        for fn in fns.values():
            fn()
        return {name: {"median_s": medians[name]} for name in fns}

    monkeypatch.setattr(bench, "time_interleaved", once)
    rows = bench.thread_speedup(bench.QUICK, log=lambda message: None)
    assert set(calls) == {(op, n_jobs, n_jobs is None and inside)
                          for op in ("logdensity", "sample") for n_jobs, inside in (
                              (None, True), (None, False), (-1, False))}
    assert all((r["one_thread_s"], r["blas_threads_s"], r["all_cpus_s"], r["speedup"])
               == (3.0, 2.0, 1.5, 2.0) for r in rows)


def test_interleaved_timing_calls_every_function_in_rotating_blocks(bench):
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    timing = bench.Timing(warmup=2, reps=7, min_reps=7, budget_s=1e9)
    result = bench.time_interleaved(fns, timing, block=3)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up
    timed = calls[6:]
    assert [timed.count(name) for name in "abc"] == [7, 7, 7]
    # rounds of blocks of 3 (the last one shorter), the order rotating each round
    assert timed[:9] == list("aaabbbccc") and timed[9:18] == list("bbbcccaaa")
    assert timed[18:] == list("cab")
    assert all(result[name]["reps"] == 7 for name in "abc")


def test_profile_script_runs(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "profile.txt"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "validation", "profile_step.py"),
                           "--quick", "--steps", "2", "--top", "3", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    text = out.read_text()
    assert text.strip() == proc.stdout.strip()
    assert "Rad training step" in text and "Real NVP training step" in text
    assert text.count("function") == 2 and "mlp_" in text


def test_thread_chunk_sweep_runs_the_paper_models_and_checks_the_bits(tmp_path):
    """validation/thread_chunks.py (the measurement behind THREAD_CHUNK_ROWS):
    every (model, operation, chunk size, threads) row is written, for the
    benchmark's own paper models, and each result was compared bit for bit
    with the one-thread result on the way (the script raises otherwise)."""
    spec = importlib.util.spec_from_file_location(
        "radref_thread_chunks", os.path.join(ROOT, "validation", "thread_chunks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from radref.core.flow import FlowConfig
    assert module.MODELS == {"rad": FlowConfig("rad", 2, 6, 8, 8),
                             "affine": FlowConfig("affine", 2, 6, 56, 0)}
    out = tmp_path / "chunks.json"
    assert module.main(["--label", "test", "--points", "5000", "--rounds", "1",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    keys = {(r["kind"], r["op"], r["chunk_rows"], r["threads"]) for r in result["rows"]}
    assert keys == {(kind, op, rows, threads) for kind in ("rad", "affine")
                    for op in ("logdensity", "sample") for rows in module.CHUNKS
                    for threads in (1, "all")}
    assert all(r["median_s"] > 0 for r in result["rows"])


def test_step_blas_threads_script_times_both_settings_of_both_models():
    # validation/step_blas_threads.py (docs/performance.md, "Results"): runs,
    # and reports each paper model under each BLAS setting (no timing asserted)
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "validation",
                                                        "step_blas_threads.py"),
                           "--rounds", "1", "--reps", "2"],
                          capture_output=True, text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if ": step " in line]
    assert [line.split()[0] + " " + line.split()[2] for line in lines] == [
        "rad 1", "rad default", "affine 1", "affine default"]
