from bench.benchmarks import bench_decode


def test_bench_decode_reports_ratios(tmp_path):
    res = bench_decode(preset="tiny", n_items=300, codebook_size=8, users=3, beam_width=10, batch_size=3, repeats=1,
                       out=str(tmp_path / "r.json"), log=lambda *_: None)
    assert res["hf_agreement"] == 1.0 and res["invalid_items_ours"] == 0
    assert res["speedup_vs_hf_generate"] > 0 and "mask_overhead" in res
    assert (tmp_path / "r.json").is_file()


def test_bench_grpo_reports_ratio_and_equal_logprobs(tmp_path):
    from bench.benchmarks import bench_grpo_logprobs

    res = bench_grpo_logprobs(preset="tiny", prompts=2, num_generations=3, n_items=300, codebook_size=8, repeats=1,
                              out=str(tmp_path / "g.json"), log=lambda *_: None)
    assert res["speedup"] > 0 and res["max_abs_logprob_diff"] < 1e-4
    assert (tmp_path / "g.json").is_file()
