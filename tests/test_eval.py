"""pass@k, the evaluation agent, seed aggregation and tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respo.eval import (
    AVERAGE,
    ItemResult,
    Record,
    benchmark_scores,
    pass_at_k,
    summarize,
    table_csv,
    table_latex,
    table_markdown,
)
from respo.tasks.synthetic import ArithmeticSpec, ArithmeticTask, gold_chain, make_splits


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of k-subsets of n samples (c correct) that contain at least one correct sample."""
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_brute_force():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10_000), data=st.data())
def test_pass_at_k_large_n_finite_and_matches_comb(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    v = pass_at_k(n, c, k)
    assert math.isfinite(v) and 0.0 <= v <= 1.0
    if n <= 300:
        exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
        assert v == pytest.approx(exact, abs=1e-9)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_pass_at_k_extreme():
    assert pass_at_k(10_000, 1, 1) == pytest.approx(1e-4)
    assert pass_at_k(10_000, 1, 10_000) == 1.0
    assert pass_at_k(10_000, 0, 5_000) == 0.0
    assert 0 < pass_at_k(10_000, 3, 10) < 1
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


class TextBackend:
    """A generation backend that answers each prompt with ``answer(prompt_text, j)`` for its j-th
    continuation (the char tokenizer's ids), so the evaluator's sampler runs on scripted text."""

    def __init__(self, answer):
        from respo.llm.models import char_tokenizer

        self.tok, self.answer, self.calls = char_tokenizer(), answer, []
        self.eos_ids = frozenset({int(self.tok.eos_token_id)})

    def continue_group(self, prefix, n, *, seed, **kw):
        from respo.llm.generation import Generation

        self.calls.append(seed)
        prompt = self.tok.decode([int(i) for i in prefix])
        out = []
        for j in range(n):
            ids = np.asarray(self.tok.encode(self.answer(prompt, j), add_special_tokens=False), dtype=np.int64)
            out.append(Generation(ids, np.zeros(len(ids), np.float32), True, "answer"))
        return out

    def generate(self, prompts, *, n, **kw):
        return [g for p in prompts for g in self.continue_group(p, n, **kw)]


def _question(prompt: str) -> str:
    return prompt.split("Q: ")[1].split("\n")[0].strip()


def test_sample_chains_scores_scripted_responses():
    from respo.llm.evaluator import sample_chains
    from respo.llm.sampler import LMSampler, SampleConfig

    spec = ArithmeticSpec()
    _, test = make_splits(spec, seed=1, n_train=0, n_test=20)
    gold = {p.question: "\n".join(gold_chain(p)) + "\n" for p in test}

    def answer(prompt, j):  # half the problems: always right; the rest: right only in the first sample
        q = _question(prompt)
        return gold[q] if (len(q) % 2 == 0 or j == 0) else "a:0+0=0\n\\boxed{99}\n"

    backend = TextBackend(answer)
    sampler = LMSampler(backend, backend.tok, ArithmeticTask(spec),
                        cfg=SampleConfig(delimiter="\n", prompt_variant="bare", temperature=0.7))
    groups = sample_chains(sampler, test, seed=3, n=4, chunk=8)
    assert len(backend.calls) == 20 and len(set(backend.calls)) == 20  # one seed per problem
    items = [ItemResult(p.id, tuple(c.reward for c in g)) for p, g in zip(test, groups, strict=True)]
    s = benchmark_scores(items, ks=(1, 4))
    assert s["pass@4"] == 1.0
    f = sum(len(p.question) % 2 == 0 for p in test) / len(test)
    assert s["pass@1"] == pytest.approx(f + (1 - f) / 4) and s["pass@1"] == pytest.approx(s["mean_reward"])
    # the same seed and problem give the same stream whatever the chunking
    again = TextBackend(answer)
    sample_chains(LMSampler(again, again.tok, ArithmeticTask(spec), cfg=sampler.cfg), test, seed=3, n=4, chunk=256)
    assert again.calls == backend.calls
    with pytest.raises(ValueError):
        benchmark_scores(items, ks=(5,))


def _records():
    rs = []
    for model in ("OLMo", "Qwen"):
        for mi, method in enumerate(("GRPO", "RRPO", "SRPO")):
            for si, seed in enumerate((42, 0, 420)):
                for bi, b in enumerate(("OLY", "CSQA")):
                    rs.append(Record(model, method, seed, b, 10.0 * bi + mi + si))
    return rs


def test_summarize_and_tables():
    cells = summarize(_records())
    c = cells[("OLMo", "SRPO", "OLY")]
    assert c.mean == pytest.approx(3.0) and c.std == pytest.approx(1.0) and c.n_seeds == 3
    avg = cells[("OLMo", "SRPO", AVERAGE)]
    assert avg.mean == pytest.approx(np.mean([2 + 0, 12 + 0, 2 + 1, 12 + 1, 2 + 2, 12 + 2]))
    md = table_markdown(cells)
    assert md.splitlines()[0].startswith("| benchmark | OLMo / GRPO")
    assert "**8.0 ± 1.0**" in md  # SRPO average best
    assert len(md.splitlines()) == 2 + 3
    tex = table_latex(cells, caption="Main results")
    assert "\\multicolumn{3}{c}{OLMo}" in tex and "\\textbf{8.0 $\\pm$ 1.0}" in tex
    csv_text = table_csv(cells)
    assert csv_text.splitlines()[0] == "model,method,benchmark,mean,std,n_seeds"
    assert len(csv_text.splitlines()) == 1 + 2 * 3 * 3


def test_summarize_rejects_missing_and_duplicates():
    rs = _records()
    with pytest.raises(ValueError, match="lacks benchmarks"):
        summarize(rs[:-1])
    with pytest.raises(ValueError, match="duplicate"):
        summarize(rs + rs[:1])


# ---------------------------------------------------------------------------------------------
# respo eval (the command), with a fake generator and with a tiny local transformers model


def test_eval_command_run_and_table(tmp_path):
    from respo.commands.evaluate import RunConfig, TableConfig, run, table
    from respo.tasks import Problem
    from respo.tasks.synthetic import gold_chain, parse_problem

    def oracle(prompt, j):
        q = _question(prompt)
        p = Problem("x", q, str(parse_problem(Problem("x", q, "0")).answer))
        return "\n".join(gold_chain(p)) + "\n"

    def wrong(prompt, j):
        return "\\boxed{99}\n"

    res = tmp_path / "eval.jsonl"
    for method, answer in (("srpo", oracle), ("grpo", wrong)):
        backend = TextBackend(answer)
        for seed in (0, 1):
            run(RunConfig(model="m", label_model="tiny", method=method, seed=seed, benchmarks=("arithmetic",),
                          limit=12, delimiter="\\n", prompt_variant="bare", out=res),
                backend=backend, tokenizer=backend.tok)
    md = table(TableConfig(results=(res,), out=tmp_path / "t"))
    assert "**100.0 ± 0.0**" in md and "0.0 ± 0.0" in md
    assert (tmp_path / "t.csv").exists() and (tmp_path / "t.tex").exists()


def test_eval_main_with_tiny_hf_model(tmp_path):
    pytest.importorskip("transformers")
    from respo.commands.evaluate import main
    from respo.llm.models import char_tokenizer, tiny_model

    tok = char_tokenizer()
    model = tiny_model(len(tok), seed=0, hidden=32, layers=1, heads=2)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "r.jsonl"
    rc = main(["run", "--model", str(tmp_path / "m"), "--benchmarks", "arithmetic", "--limit", "3",
               "--delimiter", "\n", "--max-new-tokens", "8", "--max-thoughts", "3", "--out", str(out)])
    assert rc == 0
    import json
    row = json.loads(out.read_text().splitlines()[0])
    assert row["benchmark"] == "arithmetic" and 0.0 <= row["metrics"]["pass@1"] <= 1.0


def test_a_response_whose_scoring_fails_scores_zero_and_is_counted():
    from respo.llm.evaluator import sample_chains
    from respo.llm.sampler import LMSampler, SampleConfig
    from respo.tasks.base import GuardedTask, Problem

    class Picky:
        name, has_step_judge = "picky", False

        def reward(self, problem, response):
            if "boom" in response:
                raise RecursionError("maximum recursion depth exceeded")
            return 1.0 if "\\boxed{2}" in response else 0.0

        def first_error(self, problem, thoughts):
            return None

    task = GuardedTask(Picky())
    probs = [Problem("a", "1+1?", "2"), Problem("b", "2+0?", "2")]
    backend = TextBackend(lambda prompt, j: ["boom \\boxed{2}\n", "\\boxed{2}\n"][j])
    sampler = LMSampler(backend, backend.tok, task, cfg=SampleConfig(delimiter="\n", prompt_variant="bare"))
    groups = sample_chains(sampler, probs, seed=0, n=2)
    assert [tuple(c.reward for c in g) for g in groups] == [(0.0, 1.0), (0.0, 1.0)]
    assert task.failures == {"RecursionError": 2} and task.pop_stats() == {"reward/failures": 2.0}
    assert task.pop_stats() == {"reward/failures": 0.0}
