"""The coverage knob of the CPU track: a rare hard operation, per-step slips, the measured p.

The theory's edge of targeted resets grows as the improvable states get rarer (small coverage
p). ``ArithmeticSpec.hard_op`` / ``hard_frac`` set how often the hard operation comes, a warm-up
that slips mostly there (``StepNoise``) makes those the improvable states, and
``respo.tasks.synthetic.coverage`` measures their share of the visited states.
"""

from __future__ import annotations

import numpy as np
import pytest

from respo.seeding import rng_for
from respo.tasks import make_task
from respo.tasks.synthetic import (
    ArithmeticSpec,
    ArithmeticTask,
    StepNoise,
    coverage,
    generate_problems,
    gold_chain,
    noisy_chain,
    parse_problem,
    warmup_examples,
)

NOISE = StepNoise(step=0.0, hard=0.5, answer=0.0)


def _hard_share(frac: float, n: int = 400) -> float:
    spec = ArithmeticSpec(answer_style="boxed", hard_op="*7", hard_frac=frac)
    ops = [o for p in generate_problems(spec, n, seed=3) for o in parse_problem(p).ops_text()]
    return float(np.mean([o == "*7" for o in ops]))


def test_hard_frac_sets_the_frequency_of_the_hard_operation():
    for frac in (0.0, 0.05, 0.3, 0.5):  # (distinct problems: near 1 the space runs out)
        share = _hard_share(frac)
        assert abs(share - frac) < 0.035, (frac, share)


def test_default_spec_keeps_the_original_stream_and_the_shipped_warmup_key():
    from respo.llm.sft import warmup_config

    # The shipped warm-up folder is found by its key: new config fields must not change it.
    assert warmup_config("sft-warmup:400").key() == "725a97604225e143"
    a = generate_problems(ArithmeticSpec(), 50, seed=7)
    b = generate_problems(ArithmeticSpec(hard_op=""), 50, seed=7)
    assert [p.question for p in a] == [p.question for p in b]
    # And the hard stream does differ from it.
    c = generate_problems(ArithmeticSpec(hard_op="*7", hard_frac=0.3), 50, seed=7)
    assert [p.question for p in a] != [p.question for p in c]


def test_bad_knob_values_name_the_field():
    with pytest.raises(ValueError, match="hard_op '\\*1'"):
        ArithmeticSpec(hard_op="*1")  # * takes operands 2..9
    with pytest.raises(ValueError, match="hard_frac"):
        ArithmeticSpec(hard_op="*7", hard_frac=1.5)
    with pytest.raises(ValueError, match="needs a hard_op"):
        ArithmeticSpec(hard_frac=0.2)
    with pytest.raises(ValueError, match="StepNoise.hard"):
        StepNoise(hard=-0.1)
    with pytest.raises(KeyError, match="not a number"):
        make_task("arithmetic-hard:lots")
    with pytest.raises(KeyError, match="in \\[0, 1\\]"):
        make_task("arithmetic-hard:2")


def test_named_task_draws_the_hard_operation():
    task = make_task("arithmetic-hard:0.5")
    assert task.spec.hard_op == "*7" and task.spec.hard_frac == 0.5 and task.has_step_judge
    ops = [o for p in task.problems(100, seed=0) for o in parse_problem(p).ops_text()]
    assert 0.4 < np.mean([o == "*7" for o in ops]) < 0.6


def test_noisy_chain_first_error_is_exact_and_slips_only_at_the_hard_operation():
    spec = ArithmeticSpec(answer_style="boxed", hard_op="*7", hard_frac=0.4)
    task = ArithmeticTask(spec)
    rng = rng_for(0, "t")
    n_err = 0
    for p in generate_problems(spec, 300, seed=1):
        c = noisy_chain(p, rng, NOISE, hard_op="*7")
        if c is None:
            continue
        n_err += 1
        # The judge finds exactly the injected first error.
        assert task.first_error(p, list(c.lines)) == c.first_error
        ops = parse_problem(p).ops_text()
        # With slips only at *7, every wrong step line (vs. the value it starts from) is a *7 step.
        assert ops[c.first_error - 1] == "*7"
        gold = gold_chain(p)
        assert list(c.lines[: c.first_error - 1]) == gold[: c.first_error - 1]
    assert n_err > 30


def test_step_noise_rates_are_what_the_data_shows():
    spec = ArithmeticSpec(answer_style="boxed", hard_op="*7", hard_frac=0.3)
    probs = generate_problems(spec, 3000, seed=2)
    data = warmup_examples(probs, seed=0, noise=StepNoise(step=0.02, hard=0.5, answer=0.0), hard_op="*7")
    hard_first = easy_first = hard_seen = easy_seen = 0
    for p, _, fe in data:
        ops = parse_problem(p).ops_text()
        stop = fe if fe is not None else len(ops)
        for k, o in enumerate(ops[:stop], start=1):  # steps judged on the gold path
            wrong = fe == k
            if o == "*7":
                hard_seen += 1
                hard_first += wrong
            else:
                easy_seen += 1
                easy_first += wrong
    assert abs(hard_first / hard_seen - 0.5) < 0.04
    assert abs(easy_first / easy_seen - 0.02) < 0.01


def test_coverage_counts_by_hand():
    # 4 thoughts, no error; gold probabilities 0.99, 0.5, 0.95, 0.3 -> tau 0.1: states 1 and 3 improvable.
    assert coverage(None, 4, [0.99, 0.5, 0.95, 0.3], tau=0.1) == (4, 2, 0)
    # First error at thought 2: states 0 and 1 lie on the gold path; state 1 (p=0.5) improvable.
    assert coverage(2, 4, [0.99, 0.5, 0.95, 0.3], tau=0.1) == (4, 1, 1)
    # A stricter margin counts fewer states.
    assert coverage(None, 4, [0.99, 0.5, 0.95, 0.3], tau=0.6) == (4, 1, 0)
    with pytest.raises(ValueError, match="tau"):
        coverage(None, 1, [0.5], tau=1.0)


def _measured_p(frac: float, n: int = 600) -> tuple[float, float]:
    """p of a known policy: slips at *7 with probability 0.5, nowhere else."""
    spec = ArithmeticSpec(answer_style="boxed", hard_op="*7", hard_frac=frac)
    task = ArithmeticTask(spec)
    rng = rng_for(5, "p")
    tot = np.zeros(3)
    for p in generate_problems(spec, n, seed=4):
        c = noisy_chain(p, rng, NOISE, hard_op="*7")
        lines = gold_chain(p) if c is None else list(c.lines)
        # The policy's probability of each gold step: 0.5 at *7, 1 elsewhere (answer line too).
        gold_p = [0.5 if o == "*7" else 1.0 for o in parse_problem(p).ops_text()] + [1.0]
        tot += coverage(task.first_error(p, lines), len(lines), gold_p, tau=0.1)
    return tot[1] / tot[0], tot[2] / tot[0]


def test_measured_p_moves_with_the_knob_over_a_decade():
    ps = {f: _measured_p(f) for f in (0.03, 0.1, 0.3)}
    improvable = [ps[f][0] for f in (0.03, 0.1, 0.3)]
    first = [ps[f][1] for f in (0.03, 0.1, 0.3)]
    assert improvable == sorted(improvable) and first == sorted(first)
    assert improvable[-1] / improvable[0] > 6
    # Roughly frac * (share of states on the gold path), never above frac.
    for f in (0.03, 0.1, 0.3):
        assert ps[f][0] <= f * 1.15
