"""Agreement metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoedge.validate.agreement import (agreement, band_agreement, band_agreement_beyond, band_flips,
                                         bland_altman, delta_stats, edge_distance, worst_videos)
from echoedge.validate.latency import host_fingerprint, measure_latency

REF = [10.0, 20.0, 30.0, 40.0]
TEST = [11.0, 19.0, 32.0, 40.0]  # differences +1, -1, +2, 0


def test_delta_stats_by_hand():
    d = delta_stats(REF, TEST)
    assert d.mean_abs == pytest.approx(1.0)
    assert d.max_abs == pytest.approx(2.0)
    # |Δ| sorted 0, 1, 1, 2; linear interpolation at 0.95 * 3 = 2.85 -> 1 + 0.85 * (2 - 1)
    assert d.p95_abs == pytest.approx(1.85)


def test_bland_altman_by_hand():
    ba = bland_altman(REF, TEST, bootstrap=0)
    # bias 0.5; sample SD sqrt(((.5)^2 + (1.5)^2 + (1.5)^2 + (.5)^2) / 3) = sqrt(5/3)
    sd = math.sqrt(5 / 3)
    assert ba.n == 4 and ba.bias == pytest.approx(0.5)
    assert ba.sd == pytest.approx(sd)
    assert ba.loa_low == pytest.approx(0.5 - 1.96 * sd)
    assert ba.loa_high == pytest.approx(0.5 + 1.96 * sd)
    # no bootstrap: the intervals collapse onto the point estimates
    assert ba.bias_ci.low == ba.bias_ci.high == pytest.approx(0.5)


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    ref = rng.uniform(20, 70, 60)
    test = ref + rng.normal(0.3, 0.5, 60)
    a = bland_altman(ref, test, bootstrap=500, seed=7)
    b = bland_altman(ref, test, bootstrap=500, seed=7)
    c = bland_altman(ref, test, bootstrap=500, seed=8)
    assert a == b
    assert a.bias_ci != c.bias_ci
    assert a.bias_ci.low < a.bias < a.bias_ci.high
    assert a.loa_low_ci.low < a.loa_low < a.loa_low_ci.high
    assert a.loa_high_ci.low < a.loa_high < a.loa_high_ci.high
    # The bias CI is about bias ± 1.96 SD / sqrt(n) (normal theory), within bootstrap noise.
    half = 1.96 * a.sd / math.sqrt(60)
    assert (a.bias_ci.high - a.bias_ci.low) / 2 == pytest.approx(half, rel=0.25)


def test_band_agreement_and_confusion_by_hand():
    ref = [35.0, 45.0, 55.0, 49.9]  # bands <40, 40-49, >=50, 40-49
    test = [36.0, 44.0, 50.0, 50.1]  # bands <40, 40-49, >=50, >=50 (one flip at the 50 boundary)
    agree, conf = band_agreement(ref, test)
    assert agree == pytest.approx(0.75)
    assert conf == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]  # rows reference, columns artefact


def test_band_flips_and_the_borderline_margin_by_hand():
    names = ["a", "b", "c", "d", "e"]
    ref = [50.25, 49.9, 38.0, 39.9, 60.0]
    test = [49.76, 49.0, 41.0, 52.0, 59.0]  # a: 50->49 a hair; c: 38->41 clearly; d: two edges
    flips = band_flips(names, np.array(ref), np.array(test))
    assert [f["file_name"] for f in flips] == ["a", "c", "d"]
    assert flips[0] == {"file_name": "a", "ef_reference": 50.25, "ef": 49.76}
    assert edge_distance(50.25, 49.76) == pytest.approx(0.25)
    assert edge_distance(38.0, 41.0) == pytest.approx(2.0)
    assert edge_distance(39.9, 52.0) == pytest.approx(10.1)  # the far edge: it had to cross 50 too
    assert edge_distance(45.0, 47.0) == 0.0
    assert band_agreement_beyond(5, flips, 0.0) == pytest.approx(2 / 5)  # strict: every flip
    assert band_agreement_beyond(5, flips, 0.5) == pytest.approx(3 / 5)  # a is borderline
    assert band_agreement_beyond(5, flips, 2.0) == pytest.approx(4 / 5)  # c at exactly 2.0 excused
    assert agreement(names, ref, ref, test, bootstrap=0).band_flips == flips


def test_worst_videos_and_agreement_bundle():
    names = ["a", "b", "c", "d"]
    w = worst_videos(names, np.array([12.0, 18.0, 33.0, 41.0]), np.array(REF), np.array(TEST), n=2)
    assert [x["file_name"] for x in w] == ["c", "a"]  # |Δ| 2, then 1 (tie a/b broken by name)
    assert w[0]["delta_ef"] == pytest.approx(2.0) and w[0]["ef_true"] == 33.0
    agr = agreement(names, [0, 0, 0, 0], REF, TEST, bootstrap=100, seed=0, worst_n=3)
    assert agr.band_agreement == 1.0 and len(agr.worst) == 3
    assert agr.to_dict()["bland_altman"]["bias"] == pytest.approx(0.5)


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError):
        delta_stats([1.0, 2.0], [1.0])


def test_latency_measures_real_calls_and_fingerprint_names_the_host():
    calls = []

    class Slow:
        load_s = 0.25

        def __call__(self, x):
            calls.append(x.shape)
            s = 0.0
            for i in range(20000):  # real work, so the timings are not zero
                s += i
            return (np.zeros(1),)

    lat = measure_latency(Slow(), np.zeros((1, 1, 2, 4, 4), np.float32), runs=20, warmup=3, threads=2)
    assert len(calls) == 23 and calls[0] == (1, 1, 2, 4, 4)
    assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms and lat.load_s == 0.25
    assert lat.clips_per_s == pytest.approx(1000 / lat.mean_ms)
    fp = host_fingerprint(2)
    assert fp["threads"] == 2 and fp["logical_cores"] >= 1 and fp["cpu_model"]
    assert "torch" in fp["runtime_versions"] and len(fp["id"]) == 12
    assert host_fingerprint(2)["id"] == fp["id"] != host_fingerprint(1)["id"]


def test_timed_runner_reuses_accuracy_calls_and_round_robin_times_each_runner():
    from echoedge.validate.latency import TimedRunner, round_robin

    class Counting:
        load_s = 0.5

        def __init__(self):
            self.calls = 0

        def __call__(self, x):
            self.calls += 1
            return (np.zeros(len(x)),)

    inner = Counting()
    timed = TimedRunner(inner)
    for _ in range(8):  # the accuracy pass
        timed(np.zeros((1, 1, 2, 4, 4), np.float32))
    lat = timed.latency(np.zeros((1, 2, 4, 4), np.float32), runs=3, warmup=2, threads=2)
    assert lat.runs == 6 and lat.warmup == 2 and inner.calls == 8  # enough calls: none added
    lat = timed.latency(np.zeros((1, 2, 4, 4), np.float32), runs=10, warmup=2, threads=2)
    assert lat.runs == 10 and inner.calls == 12 and lat.load_s == 0.5  # topped up with 4 calls
    a, b = Counting(), Counting()
    rows = round_robin({"a": a, "b": b}, np.zeros((1, 1, 2, 4, 4), np.float32), runs=5, warmup=2)
    assert a.calls == b.calls == 7 and rows["a"].runs == rows["b"].runs == 5


# Two CPUs that show the same generic model name in a KVM guest: one with AVX-512 VNNI, one with
# AVX2 only (the Zen 3 lines are this project's host on 2026-12-08).
_ZEN4 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
         "model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw "
         "avx512vl avx512_vnni avx512_bf16\n\nprocessor\t: 1\ncpu family\t: 99\n")
_ZEN3 = ("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nstepping\t: 1\n"
         "flags\t\t: fpu sse2 avx avx2 fma sha_ni\n")
_ARM = ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp i8mm sve\n"
        "CPU implementer\t: 0x41\nCPU part\t: 0xd40\n")


def test_cpu_isa_tells_apart_cpus_that_share_a_model_name(monkeypatch):
    from echoedge.validate import latency
    from echoedge.validate.latency import cpu_isa, cpu_line, simd_summary

    zen4, zen3, arm = cpu_isa(_ZEN4), cpu_isa(_ZEN3), cpu_isa(_ARM)
    assert zen4["id"] == {"cpu family": "25", "model": "17", "stepping": "1"}  # first CPU only
    assert zen4["simd"] == ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
    assert zen3["simd"] == ["avx2", "fma"] and zen3["id"]["model"] == "1"
    assert arm == {"id": {"cpu implementer": "0x41", "cpu part": "0xd40"},
                   "simd": ["asimd", "asimddp", "i8mm", "sve"]}
    assert simd_summary(zen4["simd"]) == "AVX-512 VNNI"
    assert simd_summary(zen3["simd"]) == "AVX2, no AVX-512, no VNNI"
    assert simd_summary(arm["simd"]) == "NEON, dot product, i8mm, SVE"
    assert cpu_isa("") == {"id": {}, "simd": []} and simd_summary([]) == "unknown SIMD"
    m2 = "hw.optional.neon: 1\nhw.optional.arm.FEAT_DotProd: 1\nhw.optional.arm.FEAT_I8MM: 1\n" \
         "hw.optional.arm.FEAT_SME: 0\nhw.optional.avx2_0: 0\n"
    assert latency.darwin_simd(m2) == ["asimd", "asimddp", "i8mm"]  # macOS: sysctl hw.optional

    ids = set()
    for text in (_ZEN4, _ZEN3):
        monkeypatch.setattr(latency, "cpu_isa", lambda text=text: cpu_isa(text))
        fp = latency.host_fingerprint(2)
        assert fp["simd"] == cpu_isa(text)["simd"] and fp["cpu_id"] == cpu_isa(text)["id"]
        ids.add(fp["id"])
    assert len(ids) == 2  # the same model name, two ids: their latencies are not comparable
    assert cpu_line({"cpu_model": "AMD EPYC", "cpu_id": zen3["id"], "simd": zen3["simd"]}) == \
        "AMD EPYC (family 25, model 1; AVX2, no AVX-512, no VNNI)"
    assert cpu_line({"cpu_model": "AMD EPYC"}) == "AMD EPYC"  # a report from before cpu_id and simd


def test_load_window_counts_other_processes_not_this_one():
    import subprocess
    import sys
    import time

    from echoedge.validate.latency import LoadWindow
    from echoedge.validate.report_md import load_note

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"
    window = LoadWindow()
    t = time.process_time()
    while time.process_time() - t < 0.5:  # this process's own work: not "other processes"
        pass
    subprocess.run([sys.executable, "-c", burn], check=True)  # a child waited for: this one's too
    w = window.stop()
    assert w is not None and w["window_s"] > 1.0 and 0 <= w["steal_share"] <= 1
    assert w["other_processes_cores"] < 0.5, w

    window = LoadWindow()
    child = subprocess.Popen([sys.executable, "-c", burn])
    time.sleep(1.5)  # it burns 1 s of CPU; not waited for before stop(): another process's time
    w = window.stop()
    child.wait()
    assert w["other_processes_cores"] > 0.3, w

    host = {"logical_cores": 2, "load_average_1m": 2.4,
            "load_while_timing": {"other_processes_cores": 0.02, "steal_share": 0.004, "window_s": 90.0}}
    assert load_note(host) == ", other processes 0.02 cores and steal 0 % while timing"
    host["load_while_timing"]["other_processes_cores"] = 0.8
    assert load_note(host).endswith("busy host: latency inflated")
    del host["load_while_timing"]  # a report from before the window: the load average
    assert load_note(host) == ", 1-min load 2.4 — busy host: latency inflated"
