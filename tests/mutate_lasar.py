"""Break each guarded part of LASAR (and RL model selection) on purpose and check that its test fails.

    python tests/mutate_lasar.py            # every mutation (~3 min)
    python tests/mutate_lasar.py "terminal" # the mutations whose name contains a word

Each mutation replaces one exact piece of source, runs the test that guards it, and restores the file (also
on Ctrl-C). A mutation whose test still passes is listed as silent and the script exits 1. Not collected by
pytest (the name does not start with test_); run it after changing LASAR or a test of it."""
from __future__ import annotations

import pathlib
import subprocess
import sys

R = pathlib.Path(__file__).resolve().parents[1]
P = "tests/test_lasar_paper.py::"
M = [
 ("detach the latent feedback", "methods/lasar/latent.py", "                x = state.last_hidden\n", "                x = state.last_hidden.detach()\n", P+"test_the_answer_loss_reaches_h0_through_the_latent_feedback"),
 ("terminal KL: wrong anchor slot", "methods/lasar/rl.py", "self.config.max_steps) - 1)", "self.config.max_steps) * 0)", P+"test_terminal_kl_is_between_each_rows_own_h_n_and_its_last_segments_anchor"),
 ("terminal KL on h0", "methods/lasar/rl.py", 'bidir_kl(aux["h_n"], anchor)', 'bidir_kl(aux["h0"], anchor)', P+"test_terminal_kl_is_between_each_rows_own_h_n_and_its_last_segments_anchor"),
 ("terminal KL on step 1", "methods/lasar/rl.py", 'bidir_kl(aux["h_n"], anchor)', 'bidir_kl(aux["hiddens"][:, 0], anchor)', P+"test_terminal_kl_is_between_each_rows_own_h_n_and_its_last_segments_anchor"),
 ("terminal KL switched off", "methods/lasar/rl.py", "if rl.terminal_kl > 0:", "if False:", P+"test_terminal_kl_is_between_each_rows_own_h_n_and_its_last_segments_anchor"),
 ("REINFORCE reward negated", "methods/lasar/rl.py", 'reward.to(self.device), state["baseline"]', '(-reward).to(self.device), state["baseline"]', P+"test_reinforce_moves_the_head_toward_above_baseline_n_and_away_from_below"),
 ("EMA baseline never updated", "methods/lasar/rl.py", 'state["baseline"] = rl.baseline_decay * state["baseline"]', 'state["baseline"] = 1.0 * state["baseline"]; _ = rl.baseline_decay * state["baseline"]', P+"test_ema_baseline_updates_once_per_rollout"),
 ("argmax N in RL", "methods/lasar/latent.py", "sample = self.config.rl.reinforce and self.config.forced_steps is None", "sample = False", P+"test_rl_samples_n_from_the_head_and_every_pass_shares_it"),
 ("reference/policy recompute N", "bench/generative/method.py", 'self.prefix(model, histories, "rollout", grad=True, given=given)', 'self.prefix(model, histories, "rollout", grad=True, given=None)', P+"test_rl_samples_n_from_the_head_and_every_pass_shares_it"),
 ("head logits detached in REINFORCE", "methods/lasar/rl.py", 'reinforce_loss(aux["logits"],', 'reinforce_loss(aux["logits"].detach(),', P+"test_reinforce_moves_the_head_toward_above_baseline_n_and_away_from_below"),
 ("entropy bonus sign flipped", "methods/lasar/losses.py", "- entropy_coef * entropy.mean()", "+ entropy_coef * entropy.mean()", P+"test_entropy_bonus_raises_the_heads_entropy"),
 ("gamma_RF as the entropy coefficient", "methods/lasar/rl.py", "rl.step_penalty, rl.entropy_coef)\n            loss = rl.reinforce_coef * loss", "rl.step_penalty, rl.reinforce_coef)\n            loss = 1.0 * loss", P+"test_reinforce_is_weighted_by_gamma_rf_with_eta_inside"),
 ("valid_mask removed", "methods/lasar/stage2.py", "align = (dist * valid).sum() / valid.sum().clamp(min=1)", "align = dist.mean()", P+"test_steps_past_a_samples_segment_count_contribute_no_alignment"),
 ("anchor at a segment's first token", "methods/lasar/anchors.py", "                        ids += enc.text(seg)[: self.config.max_cot_tokens] or [bb.pad_id]\n                        e.append(len(ids) - 1)", "                        e.append(len(ids))\n                        ids += enc.text(seg)[: self.config.max_cot_tokens] or [bb.pad_id]", P+"test_anchors_are_the_hidden_state_at_each_segments_last_token"),
 ("head label off by one", "methods/lasar/stage2.py", 'cross_entropy(aux["logits"].float(), labels - 1)', 'cross_entropy(aux["logits"].float(), labels.clamp(max=self.config.max_steps - 1))', P+"test_head_cross_entropy_target_is_the_segment_count_minus_one"),
 ("mixed ablation keeps Stage-1 weights", "methods/lasar/stage2.py", "if not self.config.two_stage:", "if False:", P+"test_mixed_one_stage_ablation_starts_stage2_from_the_initial_weights"),
 ("head tanh -> ReLU", "methods/lasar/method.py", "torch.nn.Tanh()", "torch.nn.ReLU()", P+"test_policy_head_is_the_papers_two_layer_tanh_mlp"),
 ("Stage 1 keeps the reasoning markers", "bench/generative/cot.py", "return [*base, REASON_START, REASON_END] if self.text_pass else base", "return [*base, REASON_START, REASON_END]", P+"test_stage1_is_minionerecs_sft_one_entry_and_the_stage1_only_row_equals_it"),
 ("RL keeps the last weights", "bench/generative/training.py", "if restore_best and best_file.is_file():", "if False:", P+"test_rl_keeps_its_best_validated_weights_step_zero_included"),
 ("step 0 does not compete", "bench/generative/training.py", "elif initial_score is not None:", "elif False:", P+"test_rl_keeps_its_best_validated_weights_step_zero_included"),
 ("h_N not fed (feed_last ignored)", "methods/lasar/latent.py", "feed_last = self.config.feed_last", "feed_last = False", "tests/test_lasar.py::test_cached_latent_loop_equals_the_uncached_computation"),
 ("latent input always rescaled", "methods/lasar/latent.py", 'if self.config.latent_input == "rescaled":', "if True:", "tests/test_lasar.py::test_cached_latent_loop_equals_the_uncached_computation"),
 ("RL selection counted in SFT-only run ids", "bench/generative/method.py", 'return {"rl.keep", "rl.valid_every"}', "return set()", P+"test_rl_selection_settings_leave_committed_and_sft_only_run_ids_alone"),
 ("nested late settings kept in run ids", "bench/specs.py", "if leaf in node and (old is _ANY or node[leaf] == old):", "if False:", P+"test_rl_selection_settings_leave_committed_and_sft_only_run_ids_alone"),
 ("LASAR's model gets the CoT words", "methods/lasar/stage2.py", "self.vocabulary_phase(data, ctx, words=False)", "self.vocabulary_phase(data, ctx, words=True)", "tests/test_lasar.py::test_lasar_end_to_end_records_steps_and_reloads"),
 ("vocabulary extension renumbers", "bench/generative/backbone.py", 'spec["model"]["vocab"].update({a["content"]: a["id"] for a in spec["added_tokens"]})', "pass", P+"test_reasoning_vocabulary_joins_after_stage1_without_moving_a_token"),
]
only = sys.argv[1:]  # noqa: E305
bad = []
for name, f, old, new, test in M:
    if only and not any(o in name for o in only):
        continue
    p = R / f
    src = p.read_text()
    assert src.count(old) >= 1, (name, "not found")
    p.write_text(src.replace(old, new))
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test],
                           cwd=R, capture_output=True, text=True, timeout=600)
    finally:
        p.write_text(src)
    ok = r.returncode != 0
    print(f"{'FAILS (good)' if ok else 'PASSES (BAD)'}  {name}", flush=True)
    if not ok:
        bad.append(name)
print("silent:", bad or "none")
sys.exit(1 if bad else 0)
