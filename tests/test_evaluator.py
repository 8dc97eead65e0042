"""The one evaluator (respo.llm.evaluator): the trainer's in-loop evaluation, the warm-up's
``sft.evaluate_policy`` and ``respo eval run`` give the same numbers on the same model and
problems; ``respo eval run`` reads the settings a folder records and warns about a flag that
contradicts one; it scores the shipped warm-up at the level the trainer recorded for it."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WARMUP = ROOT / "experiments" / "results" / "cpu_track" / "warmup" / "sft-725a97604225e143"
"""The CPU track's shipped warm-up (``sft-warmup:400``, the ``cpu-synthetic`` preset's model)."""
RECORDED_RUN = ROOT / "experiments" / "results" / "cpu_track" / "full" / "grpo-s0"
"""A committed ``cpu-synthetic`` run of that model: its ``eval0/*`` line is the trainer's
evaluation of the warm-up before any update (256 held-out problems, seed 1000)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer_cfg():
    from respo.presets import get_preset

    cfg = get_preset("cpu-synthetic")
    model = dataclasses.replace(cfg.model, sft_shipped_dir=str(ROOT / cfg.model.sft_shipped_dir))
    return dataclasses.replace(cfg, model=model)


def _flags(cfg) -> list[str]:
    s = cfg.sampling
    return ["--max-thoughts", str(s.max_thoughts), "--max-thought-tokens", str(s.max_thought_tokens),
            "--max-response-tokens", str(s.max_response_tokens)]


def test_the_three_evaluators_agree(tmp_path):
    """Same model (the shipped warm-up), same problems, same settings: the trainer's evaluator
    (``make_evaluator`` over the trainer's own model and tokenizer), ``sft.evaluate_policy`` and
    ``respo eval run`` give identical greedy and sampled pass@1, and identical greedy responses."""
    from respo.commands.evaluate import RunConfig, load_benchmark, run
    from respo.llm import sft
    from respo.llm.generation import HFBackend
    from respo.llm.train_parts import build_model, build_task, make_evaluator
    from respo.tasks.base import guarded

    cfg = _trainer_cfg()
    s, seed, n = cfg.sampling, cfg.eval.seed, 48
    problems, _ = load_benchmark("arithmetic", Path("unused"), limit=n, seed=seed)
    model, tok = build_model(cfg)  # the trainer's model and char tokenizer
    task = guarded(build_task(cfg.task))
    trainer_eval = make_evaluator(cfg, HFBackend(model, tok), tok, task)
    trainer = trainer_eval(None, problems)

    # the warm-up's evaluation with the trainer's own sampling settings (one SampleConfig)
    warm = sft.evaluate_policy(model, tok, problems, task, n_samples=1, seed=seed, sampling=s.sample_config(),
                               batch_prompts=256)

    out = tmp_path / "eval.jsonl"
    common = dict(model=str(WARMUP), benchmarks=("arithmetic",), limit=n, seed=seed, out=out, batch_size=256,
                  max_thoughts=s.max_thoughts, max_thought_tokens=s.max_thought_tokens,
                  max_response_tokens=s.max_response_tokens, save_responses=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the folder's recorded settings agree with the flags
        (greedy_row,) = run(RunConfig(**common, temperature=0.0))
        (sampled_row,) = run(RunConfig(**common, temperature=s.temperature, top_p=s.top_p))

    assert 0.5 < trainer["greedy_pass@1"] < 1.0 and 0.3 < trainer["sampled_pass@1"] < 1.0, trainer
    assert warm["greedy_pass@1"] == trainer["greedy_pass@1"] == greedy_row["metrics"]["pass@1"]
    assert warm["sampled_pass@1"] == trainer["sampled_pass@1"] == sampled_row["metrics"]["pass@1"]
    assert greedy_row["config"]["prompt_variant"] == "bare" and greedy_row["config"]["delimiter"] == "\n"

    # the responses themselves: the trainer evaluator's greedy chains = eval run's saved texts
    texts = [g[0].info["text"] for g in trainer_eval.chains("greedy", problems)]
    saved = [json.loads(line) for line in out.with_suffix(".responses.jsonl").read_text().splitlines()]
    assert [r["responses"][0] for r in saved[:n]] == texts


def _recorded_eval0() -> dict[str, float]:
    first = json.loads((RECORDED_RUN / "metrics.jsonl").read_text().splitlines()[0])
    return {k: v for k, v in first.items() if k.startswith("eval0/")}


def test_eval_run_scores_the_shipped_warmup_as_the_trainer_recorded(tmp_path, capsys):
    """``respo eval run`` on the warm-up folder, on the trainer's evaluation problems (seed 1000,
    256 held out), reproduces the trainer's recorded ``eval0/greedy_pass@1`` exactly, with the
    settings given as flags and with them read from the folder (prompt, delimiter) and the run's
    config. (The old text re-splitting path scored it 0.0.)"""
    from respo.commands.evaluate import main

    cfg = _trainer_cfg()
    rec = _recorded_eval0()
    conf = json.loads((RECORDED_RUN / "config.json").read_text())
    assert conf["eval"]["seed"] == 1000 and conf["eval"]["problems"] == 256 and conf["model"]["name"] == "sft-warmup:400"
    out = tmp_path / "r.jsonl"
    base = ["run", "--model", str(WARMUP), "--benchmarks", "arithmetic", "--limit", "256", "--seed", "1000",
            "--batch-size", "256", "--out", str(out)]
    assert main([*base, "--prompt-variant", "bare", "--delimiter", "\\n", *_flags(cfg)]) == 0
    assert main([*base, *_flags(cfg)]) == 0  # prompt and delimiter from the folder's sft.json
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["metrics"]["pass@1"] for r in rows] == [rec["eval0/greedy_pass@1"]] * 2 == [0.8671875] * 2
    assert all(r["settings_from"].endswith("sft.json") for r in rows)


def test_eval_run_with_no_flags_reads_the_warmup_folder(tmp_path):
    """The issue's command without the prompt and thought flags: the folder's prompt and delimiter,
    the default limits (which do not bind for this model): 64 problems, seed 42."""
    from respo.commands.evaluate import main

    out = tmp_path / "r.jsonl"
    assert main(["run", "--model", str(WARMUP), "--benchmarks", "arithmetic", "--limit", "64",
                 "--out", str(out)]) == 0
    assert main(["run", "--model", str(WARMUP), "--benchmarks", "arithmetic", "--limit", "64",
                 "--prompt-variant", "bare", "--delimiter", "\\n", *_flags(_trainer_cfg()), "--out", str(out)]) == 0
    a, b = (json.loads(line) for line in out.read_text().splitlines())
    assert a["metrics"]["pass@1"] == b["metrics"]["pass@1"] > 0.85


def test_a_contradicting_flag_is_warned_about_by_name():
    from respo.commands.evaluate import RunConfig, SettingMismatchWarning, resolve_settings

    with pytest.warns(SettingMismatchWarning) as got:
        cfg, model, source = resolve_settings(RunConfig(model=str(WARMUP), prompt_variant="small",
                                                        delimiter="\\n"))
    (w,) = got
    msg = str(w.message)
    assert "--prompt-variant 'small'" in msg and "prompt_variant='bare'" in msg and "sft.json" in msg
    assert cfg.prompt_variant == "small" and cfg.delimiter == "\n"  # the flag wins; '\n' decoded
    assert model == str(WARMUP) and source.endswith("sft.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg, _, _ = resolve_settings(RunConfig(model=str(WARMUP)))
    assert (cfg.prompt_variant, cfg.delimiter, cfg.max_thoughts, cfg.max_response_tokens) == ("bare", "\n", 20, 5120)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder that records nothing: no warning, flags or defaults
        cfg, model, source = resolve_settings(RunConfig(model="some/hub-id", delimiter="\\n"))
    assert (cfg.prompt_variant, cfg.delimiter, model, source) == ("paper", "\n", "some/hub-id", "")


def _fake_run(tmp_path: Path) -> Path:
    """A run folder as the trainer writes it: config.json (sampling settings) and a checkpoint."""
    from respo.llm.config import SamplingConfig, TrainConfig

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-000003"
    (ckpt / "model").mkdir(parents=True)
    (ckpt / "trainer_state.pt").write_bytes(b"")
    conf = dataclasses.asdict(TrainConfig(sampling=SamplingConfig(prompt_variant="chat", delimiter="\n",
                                                                  max_thoughts=8, max_thought_tokens=48,
                                                                  max_response_tokens=160)))
    for d in (run, ckpt):
        (d / "config.json").write_text(json.dumps(conf, default=str))
    (run / "checkpoints" / "LATEST").write_text("step-000003\n")
    return run


def test_run_and_checkpoint_folders_give_their_model_and_settings(tmp_path):
    from respo.commands.evaluate import RunConfig, SettingMismatchWarning, resolve_settings

    run = _fake_run(tmp_path)
    ckpt = run / "checkpoints" / "step-000003"
    want = {"prompt_variant": "chat", "delimiter": "\n", "max_thoughts": 8, "max_thought_tokens": 48,
            "max_response_tokens": 160}
    for given, model in ((run, ckpt / "model"), (ckpt, ckpt / "model"), (ckpt / "model", ckpt / "model")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cfg, got_model, source = resolve_settings(RunConfig(model=str(given)))
        assert got_model == str(model) and source.endswith("config.json")
        assert {k: getattr(cfg, k) for k in want} == want
    with pytest.warns(SettingMismatchWarning, match=r"--max-response-tokens 5120 .*max_response_tokens=160"):
        resolve_settings(RunConfig(model=str(run), max_response_tokens=5120))
    (run / "checkpoints" / "LATEST").unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_settings(RunConfig(model=str(run)))


def test_decode_escapes():
    from respo.commands.evaluate import decode_escapes

    assert decode_escapes("\\n") == "\n" and decode_escapes("</thought>") == "</thought>"
    assert decode_escapes("a\\tb\\\\n") == "a\tb\\n" and decode_escapes("\n") == "\n"
    assert decode_escapes("\\x") == "\\x"


def test_train_decodes_its_delimiter_flag_as_eval_run_does():
    from respo.commands.train import parse
    from respo.presets import get_preset

    assert parse(["--preset", "tiny-smoke", "--sampling.delimiter", "\\n\\n"]).config.sampling.delimiter == "\n\n"
    assert parse(["--preset", "tiny-smoke"]).config.sampling.delimiter == get_preset("tiny-smoke").sampling.delimiter


def test_eval_run_accepts_every_trainer_prompt_variant():
    import typing

    from respo.commands.evaluate import RunConfig
    from respo.llm.prompts import PromptVariant

    hint = typing.get_type_hints(RunConfig)["prompt_variant"]
    allowed = {a for arg in typing.get_args(hint) for a in typing.get_args(arg)}
    assert allowed == set(typing.get_args(PromptVariant)) == {"paper", "small", "bare", "chat"}


def test_eval_run_flags_are_the_sample_config_fields():
    """One flag per ``SampleConfig`` field, same name, optional (None: recorded, else
    ``EVAL_SAMPLING``: greedy with the paper's prompt and limits); ``--max-new-tokens`` still works."""
    import typing

    import tyro

    from respo.commands.evaluate import EVAL_SAMPLING, RunConfig, resolve_settings, sample_config
    from respo.llm.config import SampleConfig

    hints, plain = typing.get_type_hints(RunConfig), typing.get_type_hints(SampleConfig)
    for f in dataclasses.fields(SampleConfig):
        assert typing.get_args(hints[f.name])[-1] is type(None), f.name
        assert set(typing.get_args(hints[f.name])[:-1]) <= set(typing.get_args(plain[f.name])) | {plain[f.name]}
        assert getattr(RunConfig(model="m"), f.name) is None
    assert EVAL_SAMPLING == SampleConfig(temperature=0.0, top_p=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg, _, _ = resolve_settings(RunConfig(model="some/hub-id"))
    assert sample_config(cfg) == EVAL_SAMPLING
    rc = tyro.cli(RunConfig, args=["--model", "m", "--max-new-tokens", "64"])
    assert rc.max_response_tokens == 64


def test_eval_run_on_a_trained_run_folder(tmp_path):
    """A real (tiny) run: ``--model <run folder>`` evaluates its latest checkpoint with the run's
    sampling settings from its config.json; ``chat`` (a trainer prompt variant) is accepted."""
    from respo.commands.evaluate import SettingMismatchWarning, main
    from respo.llm.train_parts import build_parts
    from respo.llm.trainer import train
    from respo.presets import get_preset

    cfg = dataclasses.replace(get_preset("tiny-smoke"), steps=1, checkpoint_every=1)
    list(train(cfg, build_parts(cfg), run_dir=tmp_path / "run"))
    out = tmp_path / "e.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["run", "--model", str(tmp_path / "run"), "--benchmarks", "arithmetic", "--limit", "3",
                     "--out", str(out)]) == 0
    with pytest.warns(SettingMismatchWarning, match=r"--prompt-variant 'chat' .*prompt_variant='small'"):
        assert main(["run", "--model", str(tmp_path / "run"), "--benchmarks", "arithmetic", "--limit", "3",
                     "--prompt-variant", "chat", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    s = cfg.sampling
    assert rows[0]["model_folder"].endswith("checkpoints/step-000000/model") and rows[0]["model"] == "run"
    assert [rows[0]["config"][k] for k in ("prompt_variant", "delimiter", "max_thoughts", "max_response_tokens")] == [
        s.prompt_variant, s.delimiter, str(s.max_thoughts), str(s.max_response_tokens)]
    assert rows[1]["config"]["prompt_variant"] == "chat"
