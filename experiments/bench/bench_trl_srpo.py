"""Step time of SRPO inside TRL (``respo.integrations.trl``, confidence localizer) vs plain TRL GRPO.

Both sides are TRL's ``GRPOTrainer`` on the same model, the same prompts (the same rendered
prompt text), 8 rows per prompt, the same completion-token limit, temperature and top-p, fp32,
gradient checkpointing off, one optimizer step per generation batch. Plain GRPO samples with
TRL's own generation and scores the task reward in a TRL reward function; SRPO samples, resets
and localizes in ``ResetRollout`` (fresh chains until a failed parent, one confidence forward
pass, 4 suffixes) and hands respo's advantages to TRL. The configurations run in interleaved
rounds; each round times ``--repeats`` steps per side after one warm-up step, the ratio is taken
within a round and the median over rounds is printed, for wall time and for the process's CPU
time (on a shared machine the CPU time of a one-thread run is the steadier measure of cost).

    .venv/bin/python experiments/bench/bench_trl_srpo.py                       # tiny random model
    .venv/bin/python experiments/bench/bench_trl_srpo.py --model smollm2 --prompts 2 --completion-tokens 64

Target (issue 13): SRPO step <= 1.3x the plain GRPO step. Deviation: TRL stops a row at EOS or the
token limit, respo also at a completed ``\\boxed{}`` thought, so SRPO's rows can be shorter.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

import torch  # noqa: E402

from respo.integrations.trl import ResetConfig, ResetRollout, reset_grpo_config, trl_dataset  # noqa: E402
from respo.llm.prompts import prompt_token_ids  # noqa: E402
from respo.llm.sampler import SampleConfig  # noqa: E402
from respo.tasks.catalog import make_task  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
ap.add_argument("--prompts", type=int, default=2, help="dataset prompts per step (8 rows each)")
ap.add_argument("--completion-tokens", type=int, default=32)
ap.add_argument("--repeats", type=int, default=2, help="timed steps per side and round")
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
ap.add_argument("--threshold", type=float, default=0.5, help="confidence localizer threshold")
args = ap.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

if args.model == "smollm2":
    from respo.llm.models import load_smollm2

    BASE_MODEL, TOK = load_smollm2()
    PROMPT_VARIANT, TEMPERATURE, TOP_P = "chat", 0.7, 0.95
else:
    from respo.llm.models import char_tokenizer, tiny_model

    TOK = char_tokenizer()
    BASE_MODEL = tiny_model(len(TOK), 0, hidden=128, layers=4)
    PROMPT_VARIANT, TEMPERATURE, TOP_P = "bare", 1.0, 1.0
TASK = make_task("arithmetic")
PROBLEMS = TASK.problems(64, seed=0, split="train")
SAMPLE = SampleConfig(max_response_tokens=args.completion_tokens, max_thought_tokens=args.completion_tokens,
                      max_thoughts=64, temperature=TEMPERATURE, top_p=TOP_P, delimiter="\n",
                      prompt_variant=PROMPT_VARIANT)
COMMON = dict(per_device_train_batch_size=8 * args.prompts, max_steps=1 + args.repeats,
              learning_rate=1e-6, use_cpu=True, report_to="none", save_strategy="no",
              logging_steps=1, bf16=False, disable_tqdm=True, shuffle_dataset=False,
              gradient_checkpointing=None, activation_checkpointing=False)


def timed(trainer) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per optimizer step (generation included), warm-up step dropped."""
    from transformers import PrinterCallback, TrainerCallback

    times: list[tuple[float, float]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = (time.perf_counter(), time.process_time())

        def on_step_end(self, a, state, control, **kw):
            times.append((time.perf_counter() - self.t[0], time.process_time() - self.t[1]))

    trainer.remove_callback(PrinterCallback)  # logs are read from state.log_history
    trainer.add_callback(Timer())
    trainer.train()
    return times[1:]


def plain_grpo(out: str) -> tuple[list[tuple[float, float]], float]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    render = {TOK.decode(prompt_token_ids(TOK, p.question, delimiter="\n", variant=PROMPT_VARIANT).tolist()): p
              for p in PROBLEMS}
    ds = Dataset.from_list([{"prompt": text} for text in render])

    def task_reward(prompts, completions, **_):
        return [TASK.reward(render[p], c) for p, c in zip(prompts, completions, strict=True)]

    cfg = GRPOConfig(output_dir=out, num_generations=8, max_completion_length=args.completion_tokens,
                     temperature=TEMPERATURE, top_p=TOP_P, beta=0.0, num_iterations=1, **COMMON)
    trainer = GRPOTrainer(model=copy.deepcopy(BASE_MODEL), reward_funcs=[task_reward], args=cfg,
                          train_dataset=ds, processing_class=TOK)
    times = timed(trainer)
    tokens = statistics.mean(r["completions/mean_length"] for r in trainer.state.log_history
                             if "completions/mean_length" in r)
    return times, tokens


def trl_srpo(out: str) -> tuple[list[tuple[float, float]], float]:
    from trl import GRPOTrainer

    rollout = ResetRollout(TASK, PROBLEMS, ResetConfig(variant="srpo", localizer="confidence",
                                                       confidence_threshold=args.threshold, sample=SAMPLE))
    cfg = reset_grpo_config(rollout, output_dir=out, **COMMON)
    trainer = GRPOTrainer(model=copy.deepcopy(BASE_MODEL), reward_funcs=[rollout.reward_func], args=cfg,
                          train_dataset=trl_dataset(PROBLEMS), processing_class=TOK, rollout_func=rollout)
    times = timed(trainer)
    logs = [r for r in trainer.state.log_history if "respo/gen/tokens" in r]
    gen_tokens = statistics.mean(r["respo/gen/tokens"] for r in logs) / (8 * args.prompts)
    return times, gen_tokens


print(f"model={args.model} prompts/step={args.prompts} rows/step={8 * args.prompts} "
      f"completion_tokens={args.completion_tokens} threads={torch.get_num_threads()}")
ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
with tempfile.TemporaryDirectory() as tmp:
    for rnd in range(args.rounds):
        g_times, g_tok = plain_grpo(tmp)
        s_times, s_tok = trl_srpo(tmp)
        for j, kind in enumerate(ratios):
            g = statistics.median(t[j] for t in g_times)
            s = statistics.median(t[j] for t in s_times)
            ratios[kind].append(s / g)
            print(f"round {rnd} {kind:>4}: plain TRL GRPO {g:.3f} s/step ({g_tok:.1f} tokens/row) | "
                  f"TRL + respo SRPO {s:.3f} s/step ({s_tok:.1f} sampled tokens per trained row) | "
                  f"ratio {s / g:.2f}")
for kind, r in ratios.items():
    print(f"median SRPO / GRPO step-time ratio ({kind} time) over {args.rounds} rounds: "
          f"{statistics.median(r):.2f} (target <= 1.3)")
