"""``respo eval``: evaluate a model on benchmarks (``run``) and build result tables (``table``).

``respo eval run --model PATH --benchmarks oly math_l5 --data data/prepared --label-model OLMo
--method srpo --seed 42 --out results/eval.jsonl`` loads a transformers causal LM (a local folder,
or a hub id on a connected machine), runs the plain thought-by-thought agent without resets
(greedy pass@1 by default, ``docs/method.md`` section 6: temperature 0, one sample, at most 500 items)
and appends one JSON row per benchmark: model, method, seed, benchmark and the metrics
(``mean_reward``, ``pass@k``). The benchmark ``arithmetic`` is the offline synthetic chains
(held-out split) and ``gym:<generator>`` a reasoning-gym held-out split, for CPU runs.
``--backend vllm`` generates with a vLLM engine instead of transformers (same agent and rules).

The chains come from the one evaluator the trainer and the warm-up use
(``respo.llm.evaluator``): the trainer's sampler with its prompt rendering (every prompt variant:
``paper``, ``small``, ``bare``, ``chat``), thought delimiter and stop rules, so a model scores here
what the trainer's in-loop evaluation scores it on the same problems and settings. ``--model`` may
also be a warm-up folder (``sft.json``), a run folder (its latest checkpoint is evaluated) or a
checkpoint folder: the prompt and thought settings they record are used when no flag gives them,
and a flag that contradicts one is warned about (``SettingMismatchWarning``).

``respo eval table --results results/eval.jsonl --out paper_figures/table_main`` writes
``.md``, ``.csv`` and ``.tex`` with mean and std over seeds per benchmark and the average.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from respo.llm.config import SampleConfig, VLLMConfig, decode_escapes
from respo.llm.prompts import PromptVariant
from respo.tasks.base import Problem, Task


@dataclass(frozen=True)
class RunConfig:
    """Evaluate one model (one training seed) on benchmarks; append rows to a JSONL file.

    The sampling flags (``--temperature`` to ``--overflow``) are the fields of
    ``respo.llm.config.SampleConfig``. One not given is the setting the model folder records (a
    warm-up's ``sft.json``, a run's ``config.json``), else ``EVAL_SAMPLING``'s: greedy, with the
    paper's prompt and limits."""

    model: str
    """Folder of a saved transformers model (or a hub id on a connected machine); also a warm-up
    folder, a run folder (its latest checkpoint) or a checkpoint folder, whose recorded prompt and
    thought settings fill in the ones not given as flags."""
    benchmarks: tuple[str, ...] = ("oly",)
    """Prepared benchmark names (files <data>/<name>.jsonl), 'arithmetic' or 'gym:<generator>'."""
    data: Path = Path("data/prepared")
    """Folder written by ``respo prepare``."""
    out: Path = Path("results/eval.jsonl")
    """Result rows are appended here."""
    label_model: str = ""
    """Model name in the tables (default: the folder name)."""
    method: str = "base"
    """Method name in the tables (grpo, rrpo, srpo, base...)."""
    seed: int = 42
    """Training seed of this model (the tables' mean/std runs over it) and the sampling seed."""
    n: int = 1
    """Samples per problem (1 with temperature 0 is the paper's greedy pass@1)."""
    ks: tuple[int, ...] = (1,)
    """pass@k values to report (each k <= n)."""
    limit: int = 500
    """At most this many items per benchmark (the paper: 500)."""
    # -- the sampling: one flag per SampleConfig field; None = recorded, else EVAL_SAMPLING's
    temperature: float | None = None
    """Sampling temperature. None: 0 (greedy)."""
    top_p: float | None = None
    """Nucleus mass when sampling. None: 1."""
    delimiter: str | None = None
    """End-of-thought marker; backslash escapes are decoded (``--delimiter '\\n'`` is a newline)."""
    max_thoughts: int | None = None
    """Most thoughts per response."""
    max_thought_tokens: int | None = None
    """Most tokens per thought."""
    max_response_tokens: Annotated[int | None, tyro.conf.arg(aliases=("--max-new-tokens",))] = None
    """Response budget in tokens (also ``--max-new-tokens``)."""
    prompt_variant: PromptVariant | None = None
    """Prompt of ``respo.llm.prompts``, as the trainer renders it: ``paper``, ``small`` (one step
    per line), ``bare`` (``Q: <question>``) or ``chat`` (the tokenizer's chat template)."""
    overflow: Literal["force", "stop"] | None = None
    """A thought at ``max_thought_tokens``: force the delimiter or stop the chain."""
    # -- the engine
    batch_size: int = 16
    """Prompts per generation call (the sampled chains do not depend on it)."""
    device: str = "cpu"
    """Torch device (cpu or cuda) of the ``hf`` backend."""
    backend: Literal["hf", "vllm"] = "hf"
    """Generation engine: ``hf`` (transformers) or ``vllm`` (a ``vllm.LLM`` engine through
    ``respo.llm.vllm_backend.VLLMBackend``, same stop rules; ``pip install 'respo[vllm]'``)."""
    vllm: VLLMConfig = field(default_factory=lambda: VLLMConfig(gpu_memory_utilization=0.9))
    """The vLLM engine (``--backend vllm`` only); alone on its GPU, it may take 90% of the memory.
    ``adapter_dir`` (the trainer's LoRA sync) does not apply."""
    save_responses: bool = False
    """Also write every response to <out>.responses.jsonl."""


EVAL_SAMPLING = SampleConfig(temperature=0.0, top_p=1.0)
"""``respo eval run``'s sampling where neither a flag nor the model folder gives a setting: the
paper's evaluation, one greedy sample (``docs/method.md`` section 6), with ``SampleConfig``'s
defaults for the rest (the paper's prompt and limits)."""


@dataclass(frozen=True)
class TableConfig:
    """Tables (Markdown, CSV, LaTeX) from result rows: benchmarks x methods x models."""

    results: tuple[Path, ...] = (Path("results/eval.jsonl"),)
    """JSONL files written by ``respo eval run``."""
    out: Path = Path("paper_figures/table_main")
    """Output path stem: writes <out>.md, <out>.csv and <out>.tex."""
    metric: str = "mean_reward"
    """Which metric to tabulate (mean_reward, pass@1, pass@k...)."""
    scale: float = 100.0
    """Multiply scores by this (100 gives percentages)."""
    ddof: int = 1
    """Degrees of freedom of the std over seeds (1 = sample std)."""
    caption: str = ""
    """LaTeX caption."""


def task_for(kind: str) -> Task:
    """The verifier of a benchmark kind (``registry.Source.kind``); code scores held-out tests."""
    from respo.tasks.catalog import make_task

    return make_task("code-heldout" if kind == "code" else kind)


BENCHMARK_KIND = {"oly": "math", "olympiads_train": "math", "lcb_v6_medium": "code", "acereason_math": "math",
                  "commonsenseqa": "choice", "hmmt_nov_2025": "math", "math_l5": "math", "strategyqa": "yesno",
                  **{f"sciknoweval_{d}": "choice" for d in ("chemistry", "physics", "biology", "materials")}}


def load_benchmark(name: str, data: Path, *, limit: int, seed: int) -> tuple[list[Problem], Task]:
    """Problems (at most ``limit``) and the task that scores them."""
    if name == "arithmetic":
        from respo.tasks.catalog import make_task
        from respo.tasks.synthetic import ArithmeticTask, generate_problems

        task = make_task("arithmetic")
        assert isinstance(task, ArithmeticTask)
        return generate_problems(task.spec, limit, seed=seed, split="test"), task
    if name.startswith("gym:"):
        from respo.tasks.gym import GymTask

        gym = GymTask(name[4:])
        return gym.problems(limit, seed=seed, split="test"), gym
    if name not in BENCHMARK_KIND:
        raise KeyError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARK_KIND)}, arithmetic, gym:<name>")
    from respo.tasks.prepare import read_problems

    path = data / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `respo prepare --out {data}` first")
    return read_problems(path)[:limit], task_for(BENCHMARK_KIND[name])


def check_model_source(name: str) -> None:
    """Refuse a ``--model`` that names a local folder which is not a model folder (HF backend).

    A name that exists on disk, starts with ``/``, ``.`` or ``~``, or has more than one ``/`` is
    a folder (otherwise transformers would report a hub repo-id format error for it); it must hold
    a JSON ``config.json`` and weights (``*.safetensors`` or ``*.bin``). Other names are hub ids.
    """
    p = Path(name).expanduser()
    if not (p.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1):
        return
    if not p.is_dir():
        raise FileNotFoundError(f"--model {name}: no such model folder")
    conf = p / "config.json"
    if not conf.is_file():
        raise ValueError(f"--model {name}: not a model folder (no config.json)")
    try:
        if not isinstance(json.loads(conf.read_bytes()), dict):
            raise ValueError("not an object")
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{conf}: not a valid model config ({type(e).__name__})") from None
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ValueError(f"--model {name}: no weights (*.safetensors or *.bin) in the folder")


SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(SampleConfig))
"""``RunConfig``'s sampling flags: every ``SampleConfig`` field (``tests/test_evaluator.py`` checks that
``RunConfig`` has each, as an optional flag)."""


class SettingMismatchWarning(UserWarning):
    """A ``respo eval run`` flag contradicts the setting the model folder records."""


def resolve_settings(cfg: RunConfig) -> tuple[RunConfig, str, str]:
    """(``cfg`` with every prompt and thought setting filled in, the model folder to load, the file
    the recorded settings came from or "").

    A setting given as a flag wins; when the folder (``respo.llm.evaluator.settings_of_folder``:
    a warm-up, run or checkpoint folder) records another value, a ``SettingMismatchWarning`` names
    the setting, the flag's value and the recorded one. A setting not given is the recorded one,
    else ``EVAL_SAMPLING``'s. The delimiter's backslash escapes are decoded first.
    """
    import warnings

    from respo.llm.evaluator import settings_of_folder

    rec = settings_of_folder(cfg.model)
    chosen: dict[str, Any] = {}
    for k in SAMPLE_FIELDS:
        flag = getattr(cfg, k)
        if k == "delimiter" and flag is not None:
            flag = decode_escapes(flag)
        have = rec.settings.get(k)
        if flag is None:
            chosen[k] = have if have is not None else getattr(EVAL_SAMPLING, k)
            continue
        if have is not None and flag != have:
            warnings.warn(f"--{k.replace('_', '-')} {flag!r} contradicts the recorded setting {k}={have!r} "
                          f"({rec.source}); evaluating with {flag!r}", SettingMismatchWarning, stacklevel=2)
        chosen[k] = flag
    return replace(cfg, **chosen), rec.model, rec.source


def sample_config(cfg: RunConfig) -> SampleConfig:
    """The sampler's ``SampleConfig`` of a resolved ``cfg`` (``resolve_settings``)."""
    given = {k: getattr(cfg, k) for k in SAMPLE_FIELDS}
    if any(v is None for v in given.values()):
        raise ValueError("sample_config needs a resolved RunConfig (resolve_settings)")
    return SampleConfig(**given)


def hf_backend(cfg: RunConfig, model: str) -> tuple[Any, Any]:
    """(``HFBackend``, tokenizer) over the transformers model in ``model`` (or a hub id)."""
    check_model_source(model)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from respo.llm.generation import HFBackend

    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model)
    lm.train(False)
    return HFBackend(lm, tok, device=cfg.device), tok


def vllm_backend(cfg: RunConfig, model: str) -> tuple[Any, Any]:
    """(``VLLMBackend``, tokenizer) over a vLLM engine of ``model`` (``respo.llm.vllm_backend``).

    The engine is built first (an ImportError naming ``pip install 'respo[vllm]'`` when vLLM is
    missing); stop ids are the tokenizer's EOS and the model's ``generation_config`` EOS ids,
    as the HF backend finds them.
    """
    from transformers import AutoTokenizer, GenerationConfig

    from respo.llm import vllm_backend as vb
    from respo.llm.generation import eos_ids_of

    v = cfg.vllm
    if v.adapter_dir is not None:
        raise ValueError("--vllm.adapter-dir is the trainer's LoRA sync; respo eval run loads the whole model")
    engine = vb.make_engine(model, max_model_len=v.max_model_len, seed=cfg.seed,
                            gpu_memory_utilization=v.gpu_memory_utilization,
                            enable_prefix_caching=v.enable_prefix_caching,
                            tensor_parallel_size=v.tensor_parallel_size)
    tok = AutoTokenizer.from_pretrained(model)
    try:
        gen_cfg = GenerationConfig.from_pretrained(model)
    except OSError:  # no generation_config.json
        gen_cfg = None
    return vb.VLLMBackend(engine, tokenizer=tok, eos_ids=eos_ids_of(gen_cfg, tok)), tok


def run(cfg: RunConfig, *, backend: Any = None, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Evaluate and append rows. The chains come from the one evaluator
    (``respo.llm.evaluator.sample_chains``: the trainer's sampler, prompt and stop rules);
    ``backend`` and ``tokenizer`` replace the engine of ``cfg.backend`` (tests, other engines)."""
    from respo.eval import ItemResult, benchmark_scores
    from respo.llm.evaluator import sample_chains
    from respo.llm.sampler import LMSampler
    from respo.tasks.base import guarded

    cfg, model, source = resolve_settings(cfg)
    if backend is None:
        backend, tokenizer = vllm_backend(cfg, model) if cfg.backend == "vllm" else hf_backend(cfg, model)
    elif tokenizer is None:
        raise ValueError("run(backend=...) needs the tokenizer too")
    scfg = sample_config(cfg)
    label = cfg.label_model or Path(cfg.model).name
    rows = []
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    for name in cfg.benchmarks:
        problems, raw_task = load_benchmark(name, cfg.data, limit=cfg.limit, seed=cfg.seed)
        task = guarded(raw_task)  # counts the responses whose scoring failed (each scored 0)
        sampler = LMSampler(backend, tokenizer, task, cfg=scfg)
        groups = sample_chains(sampler, problems, seed=cfg.seed, n=cfg.n, chunk=cfg.batch_size)
        items = [ItemResult(p.id, tuple(float(c.reward) for c in g),
                            tuple(str(c.info["text"]) for c in g) if cfg.save_responses else ())
                 for p, g in zip(problems, groups, strict=True)]
        metrics = benchmark_scores(items, ks=cfg.ks)
        stats = getattr(getattr(task, "verifier", None), "stats", None) or getattr(task, "stats", None)
        row = {"model": label, "method": cfg.method, "seed": cfg.seed, "benchmark": name, "metrics": metrics,
               "config": {k: str(v) for k, v in vars(cfg).items()},
               "model_folder": model, "settings_from": source,
               "verifier_stats": dict(stats) if stats else {},
               "reward_failures": dict(task.failures)}
        rows.append(row)
        with cfg.out.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        if cfg.save_responses:
            with cfg.out.with_suffix(".responses.jsonl").open("a") as f:
                for it in items:
                    f.write(json.dumps({"benchmark": name, "seed": cfg.seed, "method": cfg.method, "model": label,
                                        "id": it.problem_id, "rewards": it.rewards, "responses": it.responses}) + "\n")
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("mean", "pass")))
        print(f"[eval] {label}/{cfg.method}/seed {cfg.seed} {name}: {shown} ({len(items)} items)")
    return rows


def table(cfg: TableConfig) -> str:
    """Write the three table files; return the Markdown."""
    from respo.eval import records_from_rows, summarize, table_csv, table_latex, table_markdown
    from respo.tasks.base import input_lines

    rows = []
    for p in cfg.results:
        for lineno, line in input_lines(p):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise ValueError(f"{p}:{lineno}: not valid JSON ({type(e).__name__})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{p}:{lineno}: a row must be a JSON object")
            rows.append(row)
    cells = summarize(records_from_rows(rows, metric=cfg.metric, scale=cfg.scale), ddof=cfg.ddof)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    md = table_markdown(cells)
    cfg.out.with_suffix(".md").write_text(md)
    cfg.out.with_suffix(".csv").write_text(table_csv(cells))
    cfg.out.with_suffix(".tex").write_text(table_latex(cells, caption=cfg.caption))
    return md


def main(argv: list[str]) -> int:
    cfg = tyro.extras.subcommand_cli_from_dict({"run": RunConfig, "table": TableConfig}, args=argv,
                                               prog="respo eval", description=__doc__)
    if isinstance(cfg, RunConfig):
        run(cfg)
    else:
        sys.stdout.write(table(cfg))
    return 0
