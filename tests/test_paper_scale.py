"""Paper scale on CPU: presets, the reproduction script's commands, launch scripts, FSDP config.

Nothing here downloads a model or trains one at paper scale. The paper presets are checked as
configurations (construction, objective, LoRA, batch divisibility); ``reproduce.py --dry-run``
must print commands that ``respo train`` / ``respo eval`` / ``respo prepare`` parse; the launch
scripts must be valid bash whose printed commands parse the same way; and the one-node launcher
runs a 1-step tiny model on two CPU processes (gloo), the multi-process path end to end.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "experiments" / "launch"
sys.path.insert(0, str(ROOT / "experiments"))

from respo.llm.config import TrainConfig, config_from_dict, config_to_dict  # noqa: E402
from respo.presets import paper as pp  # noqa: E402


def _load_reproduce() -> ModuleType:
    path = ROOT / "experiments" / "paper" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("paper_reproduce_for_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


reproduce = _load_reproduce()


@pytest.fixture
def merged_presets(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, TrainConfig]]:
    """``respo train``'s preset table with PAPER_PRESETS merged in (as the lead will merge it)."""
    import respo.commands.train as tr

    base = tr.load_presets()
    table = {**base.PRESETS, **pp.PAPER_PRESETS}

    def get_preset(name: str) -> TrainConfig:
        if name not in table:
            raise ValueError(f"unknown preset {name!r}")
        return table[name][1]

    monkeypatch.setattr(tr, "load_presets", lambda: SimpleNamespace(PRESETS=table, get_preset=get_preset))
    return table


def _parse_train(argv: list[str]) -> TrainConfig:
    from respo.commands.train import parse

    return parse(argv).config


# -- presets ------------------------------------------------------------------------------------------


def test_every_paper_preset_builds_and_validates() -> None:
    assert len(pp.PAPER_PRESETS) == len(pp.MODELS) * len(pp.TASKS) * len(pp.VARIANTS) == 44
    assert set(pp.BASELINE_VARIANTS) <= set(pp.VARIANTS) and set(pp.BASELINE_VARIANTS) <= set(pp.TABLE_VARIANTS)
    for name, (desc, cfg) in pp.PAPER_PRESETS.items():
        assert isinstance(cfg, TrainConfig) and cfg.name == name and desc
        model_key = next(k for k in pp.MODELS if name.startswith(f"paper-{k}-"))
        task_key = name[len(f"paper-{model_key}-"):].split("-", 1)[0]
        m, t = pp.MODELS[model_key], pp.TASKS[task_key]
        assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
        # model: hub id, LoRA 64/64 on every linear layer, bf16
        assert cfg.model.name == m.hub_id and "/" in cfg.model.name
        assert (cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_targets) == (64, 64, ("all-linear",))
        assert cfg.model.dtype == "bfloat16" and cfg.model.gradient_checkpointing
        # optimizer and batch: 32 prompts x 8, mini-batches of 8 -> 4 optimizer steps per step
        o = cfg.optim
        assert (o.lr, o.weight_decay, o.grad_clip, o.schedule) == (5e-5, 0.01, 1.0, "constant")
        assert (cfg.prompts_per_step, cfg.minibatch_prompts, cfg.epochs) == (32, 8, 1)
        assert cfg.optimizer_steps_per_step == 4 and cfg.variant_row.split.budget == 8
        assert cfg.prompts_per_step % m.gpus == 0 and cfg.minibatch_prompts % m.gpus == 0
        assert (cfg.minibatch_prompts // m.gpus * 8) % cfg.micro_batch_chains == 0
        # sampling and localization
        s = cfg.sampling
        assert (s.temperature, s.top_p, s.localize_temperature, s.localize_max_tokens) == (0.7, 0.95, 0.3, 4096)
        assert (s.delimiter, s.max_thoughts, s.max_thought_tokens, s.max_response_tokens) == ("</thought>", 20, 256, 5120)
        assert s.prompt_variant == "paper" and s.localizer == "prompted" and s.fallback == "step1"
        # task, steps, checkpoints kept for evaluation
        assert (cfg.task, cfg.steps, cfg.train_problems) == (t.task, t.steps, t.train_problems)
        assert cfg.checkpoint_every == 1
        assert cfg.keep_checkpoints == (cfg.steps if task_key == "lcb" else 1)
        # the paper's loss pairing
        obj = cfg.objective
        if cfg.variant == "grpo":
            assert (obj.loss, obj.agg, cfg.clip_eps, cfg.clip_c) == ("ppo_clip", "token-mean", 0.2, 3.0)
        elif cfg.variant in pp.BASELINE_VARIANTS:  # each baseline's own objective (respo.variants)
            v = cfg.variant_row
            assert (obj.loss, obj.agg, obj.advantage) == (v.loss, v.agg, v.advantage) and v.baseline
            assert cfg.baseline.segment_tokens == 600  # SPO-Tree's segments at paper scale
        else:
            assert (obj.loss, obj.agg) == ("reinforce", "seq-mean-token-mean")
        assert cfg.kl_coef == 0.0 and cfg.pairing == "paper"
    assert {pp.TASKS[t].steps for t in pp.TASKS} == {24, 11}
    assert {k: m.gpus for k, m in pp.MODELS.items()} == {"olmo3-7b": 2, "qwen2.5-14b": 4}


def test_paper_runs_cover_every_variant_and_seed() -> None:
    for model in pp.MODELS:
        for task in pp.TASKS:
            runs = pp.paper_runs(model, task)
            assert len(runs) == 33 and len({r.name for r in runs}) == 33  # 11 variants x 3 seeds
            assert {(r.variant, r.seed) for r in runs} == {(v, s) for v in pp.VARIANTS for s in (42, 0, 420)}
            for r in runs:
                assert r.cfg.seed == r.seed and r.cfg.name == r.name and r.gpus == pp.MODELS[model].gpus
                assert r.cfg == dataclasses.replace(pp.PAPER_PRESETS[r.preset][1], name=r.name, seed=r.seed)
    matched = pp.paper_runs("olmo3-7b", "math", variants=("grpo",), seeds=(0,), pairing="matched")
    (r,) = matched
    assert r.name.endswith("-matched") and r.method == "grpo-matched"
    assert r.cfg.objective.loss == "reinforce", "the matched pairing trains GRPO with REINFORCE"
    with pytest.raises(ValueError, match="unknown model"):
        pp.paper_runs("llama", "math")
    with pytest.raises(ValueError, match="unknown variants"):
        pp.paper_runs("olmo3-7b", "math", variants=("ppo",))


def test_presets_merge_without_collisions_and_parse(merged_presets: dict[str, Any]) -> None:
    import respo.commands.train as tr

    assert not set(pp.PAPER_PRESETS) & set(tr.load_presets().PRESETS) - set(pp.PAPER_PRESETS)
    for r in pp.paper_runs("qwen2.5-14b", "lcb", seeds=(420,)) + pp.paper_runs(
            "olmo3-7b", "math", variants=("rrpo",), pairing="matched"):
        assert _parse_train(r.train_args()) == r.cfg


# -- reproduce.py ------------------------------------------------------------------------------------


def _gpus_of(preset: str) -> int:
    return next(m.gpus for k, m in pp.MODELS.items() if preset.startswith(f"paper-{k}-"))


def _dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[list[str]]:
    assert reproduce.main(["--dry-run", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.startswith("#")]


def _notes(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[list[str], list[str]]:
    assert reproduce.main(["--dry-run", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [x for x in lines if x.startswith("#")], [x for x in lines if x and not x.startswith("#")]


def test_reproduce_dry_run_prints_well_formed_commands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], merged_presets: dict[str, Any]) -> None:
    import tyro

    from respo.commands.evaluate import RunConfig, TableConfig
    from respo.commands.prepare import PrepareConfig

    runs_dir = tmp_path / "runs"
    cmds = _dry_run(capsys, "all", "--runs-dir", str(runs_dir), "--results", str(tmp_path / "res"),
                    "--out", str(tmp_path / "out"))
    trained, evals, prepared = {}, [], 0
    for cmd in cmds:
        if cmd[0] == "bash":
            assert cmd[1] == "experiments/launch/single_node.sh"
            preset, nproc, rest = cmd[2], int(cmd[3]), cmd[4:]
            cfg = _parse_train(["--preset", preset, *rest])
            assert cfg.name.startswith(preset + "-s") and nproc == _gpus_of(preset)
            assert rest[rest.index("--runs-dir") + 1] == str(runs_dir) and "--resume" not in rest
            trained[cfg.name] = cfg
            continue
        assert cmd[1:3] == ["-m", "respo.cli"], cmd
        if cmd[3] == "prepare":
            tyro.cli(PrepareConfig, args=cmd[4:])
            prepared += 1
        else:
            assert cmd[3] == "eval"
            rc = tyro.extras.subcommand_cli_from_dict({"run": RunConfig, "table": TableConfig}, args=cmd[4:])
            assert isinstance(rc, RunConfig)
            assert (rc.temperature, rc.n, rc.limit, rc.delimiter, rc.max_response_tokens) == (0.0, 1, 500, "</thought>", 5120)
            evals.append(rc)
    all_runs = [r for m in pp.MODELS for t in pp.TASKS for r in pp.paper_runs(m, t)]
    assert prepared == 1
    assert set(trained) == {r.name for r in all_runs} and len(trained) == 132  # 2 models x 2 tasks x 11 variants x 3 seeds
    for r in all_runs:
        assert trained[r.name] == r.cfg, "the printed command rebuilds the run's exact config"
    main = [e for e in evals if e.benchmarks == pp.TEN_BENCHMARKS]
    curves = [e for e in evals if e.benchmarks == ("lcb_v6_medium",)]
    assert len(main) == 2 + 2 * len(pp.VARIANTS) * 3 == 68, "base models + every math run"
    assert all(str(e.model).endswith("step-000023/model") for e in main if e.method != "base")
    # main variants every step; split variants and baselines the final step
    per_model_lcb = 3 * 3 * 11 + (len(pp.VARIANTS) - 3) * 3
    assert len(curves) == 2 + 2 * per_model_lcb
    assert {e.label_model for e in curves if e.method == "base"} == {f"{m.label}@step0" for m in pp.MODELS.values()}


def test_reproduce_skips_finished_runs_and_resumes_started_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], merged_presets: dict[str, Any]) -> None:
    runs_dir = tmp_path / "runs"
    done, started, _ = pp.paper_runs("olmo3-7b", "math", variants=("srpo",))
    for run, last in ((done, 23), (started, 5)):
        d = runs_dir / run.name
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(last + 1)))
    (runs_dir / done.name / "checkpoints" / "step-000023" / "model").mkdir(parents=True)
    res = tmp_path / "res"
    res.mkdir()
    rows = [{"model": "OLMo-3-7B-Instruct", "method": "srpo", "seed": done.seed, "benchmark": b,
             "metrics": {"mean_reward": 0.5}} for b in pp.TEN_BENCHMARKS]
    rows.append({"model": "OLMo-3-7B-Instruct", "method": "srpo", "seed": started.seed, "benchmark": "oly",
                 "metrics": {"mean_reward": 0.5}})
    (res / "eval_main.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    notes, cmds = _notes(capsys, "train", "eval", "--models", "olmo3-7b", "--tasks", "math", "--variants", "srpo",
                         "--runs-dir", str(runs_dir), "--results", str(res))
    assert f"# skip {done.name}: finished" in notes
    assert any(n.startswith(f"# skip eval of {done.name}") for n in notes)
    (resumed,) = [c for c in cmds if f"--name {started.name} " in c + " "]
    assert resumed.endswith("--resume")
    evals = [shlex.split(c) for c in cmds if " eval run " in c and f"--seed {started.seed} " in c + " "
             and "--method srpo" in c]
    (ev,) = evals
    benches = ev[ev.index("--benchmarks") + 1: ev.index("--data")]
    assert benches == [b for b in pp.TEN_BENCHMARKS if b != "oly"], "only the missing benchmarks"


def test_reproduce_refuses_to_train_when_a_paper_preset_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import respo.commands.train as tr

    assert set(pp.PAPER_PRESETS) <= set(tr.load_presets().PRESETS), "merged in presets.py"
    # a checkout whose presets.py lost the merge: the train stage must stop before any run
    bare = types.SimpleNamespace(PRESETS={k: v for k, v in tr.load_presets().PRESETS.items()
                                          if k not in pp.PAPER_PRESETS})
    monkeypatch.setattr(tr, "load_presets", lambda: bare)
    with pytest.raises(SystemExit, match="merge respo/presets/paper.py"):
        reproduce.main(["train", "--runs-dir", str(tmp_path)])


def test_reproduce_tables_beside_published_numbers(tmp_path: Path) -> None:
    import numpy as np

    gen = np.random.default_rng(0)
    res, out = tmp_path / "res", tmp_path / "out"
    res.mkdir()
    main_rows = []
    for label in ("OLMo-3-7B-Instruct", "Qwen2.5-14B-Instruct"):
        for method, seeds in [("base", (42,)), *[(v, pp.SEEDS) for v in pp.VARIANTS]]:
            for seed in seeds:
                main_rows += [{"model": label, "method": method, "seed": seed, "benchmark": b,
                               "metrics": {"mean_reward": float(gen.uniform())}} for b in pp.TEN_BENCHMARKS]
    curve_rows = [{"model": "OLMo-3-7B-Instruct@step0", "method": "base", "seed": 42,
                   "benchmark": "lcb_v6_medium", "metrics": {"mean_reward": 0.075}}]
    for method in pp.MAIN_VARIANTS:
        for seed in pp.SEEDS:
            curve_rows += [{"model": f"OLMo-3-7B-Instruct@step{k}", "method": method, "seed": seed,
                            "benchmark": "lcb_v6_medium", "metrics": {"mean_reward": 0.075 + 0.02 * k}}
                           for k in range(1, 12)]
    (res / "eval_main.jsonl").write_text("".join(json.dumps(r) + "\n" for r in main_rows))
    (res / "lcb_curves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve_rows))
    assert reproduce.main(["tables", "--results", str(res), "--out", str(out)]) == 0
    table = (out / "table_main.md").read_text()
    assert "Loss pairing: paper pairing" in table and "SRPO 47.3" in table and "SRPO 43.2" in table
    assert "SRPO 15.6 +- 4.2, GRPO 11.1 +- 5.7" in table and "± " in table
    assert re.search(r"\| Average \| [\d.]+ \| [\d.]+ ± [\d.]+", table)
    header = table.split("\n| Average")[0]
    assert all(v in header for v in pp.BASELINE_VARIANTS), "the main table has a column per baseline"
    splits = (out / "table_splits.md").read_text()
    assert "srpo-2x4" in splits and "rrpo-1x8" in splits and "1x4 (srpo / rrpo) best" in splits
    curves = (out / "lcb_curves.md").read_text()
    assert "SRPO 29.8%" in curves and "| OLMo-3-7B-Instruct | srpo | 7.5 |" in curves
    assert (out / "lcb_curves.csv").read_text().startswith("model,method,step,mean,se\n")
    assert (out / "lcb_curves.png").stat().st_size > 1000


# -- launch scripts and the FSDP config -------------------------------------------------------------------


SCRIPTS = [LAUNCH / "single_node.sh", LAUNCH / "slurm_multi_node.sbatch"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launch_scripts_are_valid_bash(script: Path) -> None:
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _script(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def _train_part(cmd: list[str]) -> list[str]:
    i = cmd.index("respo.cli")
    assert cmd[i - 1] == "-m" and cmd[i + 1] == "train"
    return cmd[i + 2:]


def test_single_node_dry_run_commands_parse(merged_presets: dict[str, Any]) -> None:
    preset = "paper-qwen2.5-14b-math-srpo"
    over = ["--seed", "0", "--name", "paper-qwen2.5-14b-math-srpo-s0", "--runs-dir", "runs/paper"]
    out = _script(LAUNCH / "single_node.sh", preset, "4", *over, DRY_RUN="1", PYTHON="/opt/py/bin/python")
    assert out.returncode == 0, out.stderr
    cmd = shlex.split(out.stdout)
    assert cmd[:7] == ["/opt/py/bin/python", "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node", "4", "-m"]
    cfg = _parse_train(_train_part(cmd))
    assert (cfg.name, cfg.seed, cfg.model.name) == ("paper-qwen2.5-14b-math-srpo-s0", 0, "Qwen/Qwen2.5-14B-Instruct")

    out = _script(LAUNCH / "single_node.sh", preset, "4", *over, DRY_RUN="1", PORT="29511")
    cmd = shlex.split(out.stdout)
    assert "--standalone" not in cmd and cmd[cmd.index("--master_port") + 1] == "29511"

    out = _script(LAUNCH / "single_node.sh", preset, "4", *over, DRY_RUN="1", LAUNCHER="accelerate")
    cmd = shlex.split(out.stdout)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    cfg_file = Path(cmd[cmd.index("--config_file") + 1])
    assert cfg_file == LAUNCH / "accelerate_fsdp.yaml" and cfg_file.exists()
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    _parse_train(_train_part(cmd))

    assert _script(LAUNCH / "single_node.sh", preset, "zero", DRY_RUN="1").returncode == 2
    assert _script(LAUNCH / "single_node.sh", preset, "2", DRY_RUN="1", LAUNCHER="mpirun").returncode == 2
    assert _script(LAUNCH / "single_node.sh").returncode != 0


def test_slurm_example_has_the_sbatch_lines_and_a_rendezvous(merged_presets: dict[str, Any]) -> None:
    path = LAUNCH / "slurm_multi_node.sbatch"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#!/bin/bash")
    first_cmd = next(i for i, x in enumerate(lines) if x.strip() and not x.startswith("#"))
    directives = {m.group(1): m.group(2) for x in lines[:first_cmd]
                  if (m := re.match(r"#SBATCH --([\w-]+)(?:=(\S+))?", x))}
    assert not any(x.startswith("#SBATCH") for x in lines[first_cmd:]), "sbatch stops at the first command"
    for key in ("job-name", "nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "time", "output"):
        assert key in directives, key
    assert directives["ntasks-per-node"] == "1", "one torchrun per node"
    out = _script(path, "--seed", "420", "--name", "x-s420", DRY_RUN="1", SLURM_NNODES="2", SLURM_JOB_ID="77",
                  MASTER_ADDR="node01", PRESET="paper-qwen2.5-14b-lcb-grpo")
    assert out.returncode == 0, out.stderr
    cmd = shlex.split(out.stdout)
    assert cmd[0] == "srun" and "--kill-on-bad-exit=1" in cmd
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--nproc_per_node") + 1] == "4"
    assert cmd[cmd.index("--rdzv_backend") + 1] == "c10d"
    assert cmd[cmd.index("--rdzv_endpoint") + 1] == "node01:29500"
    assert cmd[cmd.index("--rdzv_id") + 1] == "respo-77"
    cfg = _parse_train(_train_part(cmd))
    assert (cfg.seed, cfg.name, cfg.steps) == (420, "x-s420", 11)
    nproc = 2 * 4
    assert cfg.prompts_per_step % nproc == 0 and cfg.minibatch_prompts % nproc == 0


def test_accelerate_fsdp_yaml_parses_and_accelerate_accepts_it() -> None:
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig

    path = LAUNCH / "accelerate_fsdp.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["distributed_type"] == "FSDP" and raw["mixed_precision"] == "bf16"
    fsdp = raw["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_activation_checkpointing"] is False, "the presets checkpoint in transformers"
    cfg = ClusterConfig.from_yaml_file(str(path))  # raises on keys accelerate does not know
    assert cfg.num_processes == min(m.gpus for m in pp.MODELS.values())


# -- the multi-process path on CPU ---------------------------------------------------------------------------


def test_single_node_launcher_runs_two_cpu_processes(tmp_path: Path) -> None:
    """The launcher end to end: torchrun, two gloo processes, one step of the tiny model."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch missing")
    runs = tmp_path / "runs"
    out = subprocess.run(
        ["bash", str(LAUNCH / "single_node.sh"), "tiny-smoke", "2", "--steps", "1", "--prompts-per-step", "2",
         "--minibatch-prompts", "2", "--name", "dp-launch", "--runs-dir", str(runs), "--threads", "1",
         "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, start_new_session=True,
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
             "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [json.loads(x) for x in (runs / "dp-launch" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0]
    cfg = json.loads((runs / "dp-launch" / "config.json").read_text())
    assert cfg["prompts_per_step"] == 2 and cfg["minibatch_prompts"] == 2
