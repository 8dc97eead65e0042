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
    Record,
    agent_response,
    benchmark_scores,
    pass_at_k,
    run_agent,
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


def test_agent_cut_rules():
    text = "a</thought>b \\boxed{1}</thought>c</thought>"
    cut, th = agent_response(text, delimiter="</thought>", max_thoughts=20, is_final=lambda t: "\\boxed" in t)
    assert cut == "a</thought>b \\boxed{1}</thought>" and len(th) == 2
    cut, th = agent_response("x\ny\nz\n\\boxed{2}", delimiter="\n", max_thoughts=2, is_final=lambda t: "\\boxed" in t)
    assert cut == "x\ny\n"


def test_run_agent_with_fake_generate():
    spec = ArithmeticSpec()
    _, test = make_splits(spec, seed=1, n_train=0, n_test=20)
    gold = {p.question: "\n".join(gold_chain(p)) + "\n" for p in test}
    calls = []

    def generate(prompts, *, n, temperature, seed):
        calls.append((len(prompts), n, temperature, seed))
        out = []
        for pr in prompts:
            q = pr.split("Q: ")[1].strip()
            # half the problems: always right; the rest: right only in the first sample
            good = gold[q]
            out.append([good if (len(q) % 2 == 0 or j == 0) else "a:0+0=0\n=99\n" for j in range(n)])
        return out

    task = ArithmeticTask(spec)
    items = run_agent(test, task, generate, n=4, temperature=0.7, seed=3, delimiter="\n", batch_size=8)
    assert [c[0] for c in calls] == [8, 8, 4] and [c[3] for c in calls] == [3, 4, 5]
    s = benchmark_scores(items, ks=(1, 4))
    assert s["pass@4"] == 1.0
    f = sum(len(p.question) % 2 == 0 for p in test) / len(test)
    assert s["pass@1"] == pytest.approx(f + (1 - f) / 4) and s["pass@1"] == pytest.approx(s["mean_reward"])
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
    from respo.tasks.synthetic import gold_chain, parse_problem

    def oracle(prompts, *, n, temperature, seed):
        out = []
        for pr in prompts:
            q = pr.split("Q: ")[1].strip()
            from respo.tasks import Problem
            p = Problem("x", q, str(parse_problem(Problem("x", q, "0")).answer))
            out.append(["\n".join(gold_chain(p)) + "\n"] * n)
        return out

    def wrong(prompts, *, n, temperature, seed):
        return [["=99\n"] * n for _ in prompts]

    res = tmp_path / "eval.jsonl"
    for method, gen in (("srpo", oracle), ("grpo", wrong)):
        for seed in (0, 1):
            run(RunConfig(model="m", label_model="tiny", method=method, seed=seed, benchmarks=("arithmetic",),
                          limit=12, delimiter="\n", out=res), generate=gen)
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
    from respo.eval import run_agent
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

    def gen(prompts, *, n, temperature, seed):
        return [["boom \\boxed{2}", "\\boxed{2}"] for _ in prompts]

    items = run_agent(probs, task, gen, n=2)
    assert [it.rewards for it in items] == [(0.0, 1.0), (0.0, 1.0)]
    assert task.failures == {"RecursionError": 2} and task.pop_stats() == {"reward/failures": 2.0}
    assert task.pop_stats() == {"reward/failures": 0.0}
