"""Multi-process training (DDP over gloo on 2 CPU processes, launched by torchrun, as on GPUs)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                                reason="torchrun not installed")


def _torchrun(args, env=None, cwd=None):
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe if exe.exists() else "torchrun"), "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=cwd)


def test_ddp_sft_and_grpo_keep_processes_in_step(tmp_path):
    root = Path(__file__).resolve().parents[1]
    p = _torchrun([str(root / "tests" / "ddp_worker.py"), str(tmp_path)], env={"PYTHONPATH": str(root)})
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # the data is sharded: 32 SFT examples / (2 processes x batch 4), 16 GRPO prompts / (2 x 2)
    assert r0["sft_steps"] == r1["sft_steps"] == 4 and r0["grpo_steps"] == r1["grpo_steps"] == 4
    # gradients were all-reduced: both processes end with the same weights (GRPO runs two forward
    # passes per step, the shared prompt then the completions, through the DDP wrapper)
    assert r0["checksum"] == pytest.approx(r1["checksum"], rel=1e-6, abs=1e-6)


def test_reasonrec_run_under_torchrun_writes_one_result(toy_env, tmp_path):
    from bench.registry import REGISTRY

    root = Path(__file__).resolve().parents[1]
    cfg = REGISTRY.get("minionerec").smoke_config
    sets = ["method_config.backbone.preset=tiny", f"method_config.max_train_samples={cfg['max_train_samples']}",
            "method_config.sft.batch_size=16", "method_config.sft.epochs=1", "method_config.valid_max_users=16",
            "method_config.reuse_sft=false", "method_config.rl.max_prompts=8", "method_config.rl.num_generations=4",
            "method_config.rl.batch_prompts=2", "method_config.decode_batch_size=16"]
    args = ["-m", "bench.cli", "run", "--method", "minionerec", "--dataset", "toy", "--out", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    p = _torchrun(args, env={"PYTHONPATH": str(root)}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    res = json.loads((run_dir / "result.json").read_text())
    assert res["evaluation"]["invalid_items"] == 0
    n = res["training"]["sft"]["examples"]
    assert res["training"]["sft"]["steps"] == -(-n // (2 * 16))  # each process saw half of every epoch
    log = (run_dir / "run.log").read_text()
    assert "process 0 of 2" in log and log.count("wrote ") == 1
    assert not (run_dir / "error.txt").exists()


@pytest.mark.parametrize("method,later", [("lasar", "stage2"), ("gream", "cot_sft")])
def test_cached_phases_under_torchrun_train_once_then_reuse(toy_env, tmp_path, method, later):
    """LASAR (Stage 1, Stage 2, RL) and GREAM (Stage 1, CoT-SFT) under torchrun on 2 processes: the main
    process alone publishes each stage while the other trains beside it (before the one stage driver, the
    other process waited on the stage lock while the main one trained with DDP collectives: a deadlock);
    a second launch (another eval setting, so another run id) reuses both stages on both processes."""
    import yaml

    from bench.registry import REGISTRY

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root), "REASONREC_CACHE": str(tmp_path / "cache")}
    results = []
    for users in (12, 10):
        cfg = tmp_path / f"run{users}.yaml"
        cfg.write_text(yaml.safe_dump({"method_config": REGISTRY.get(method).smoke_config,
                                       "eval": {"max_users": users}}))
        p = _torchrun(["-m", "bench.cli", "run", "--method", method, "--dataset", "toy", "--config", str(cfg),
                       "--out", str(tmp_path / "runs"), "--no-progress"], env=env, cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
        (res,) = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*/result.json")
                  if json.loads(f.read_text())["evaluation"]["n_users"] == users]
        results.append(res)
    first, second = (r["training"] for r in results)
    assert not first["sft"].get("reused") and not first[later].get("reused")
    assert second["sft"]["reused"] and second[later]["reused"]
    assert second[later]["stage"] == first[later]["stage"]
    if method == "lasar":
        assert first["rl"]["steps"] > 0
    assert not list((tmp_path / "cache" / "stages").glob("*.training"))  # markers removed
