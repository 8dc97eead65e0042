"""Input guards of the tabular simulator: bad scalars and arrays fail loudly, naming the argument.

Each case below was accepted before the guards (or failed with an error that did not name the
argument) and gave a silently wrong number: a NaN step estimate taken as a full step, a negative
coverage that lifts the bound above its first-order term, a threshold above r_max that turns the
CARO step into a no-op while its guarantee stays positive, a horizon of 3.5 truncated to 3, a
weight of 2 that makes probabilities negative. A wrong type is a TypeError, a wrong value a
ValueError; the message holds the argument's name and the value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from respo.theory import bounds
from respo.theory.cpi import cpi_update, exact_cpi_step, run_cpi, sample_cpi_step, update_weights
from respo.theory.exact import evaluate
from respo.theory.mdp import (
    LayeredMDP,
    coverage_chain,
    coverage_chain_policy,
    random_layered_mdp,
    random_tree_mdp,
    reasoning_tree,
    tight_chain,
)
from respo.theory.softmax import train_softmax

NAN, INF = float("nan"), float("inf")


def _chain() -> tuple[LayeredMDP, np.ndarray]:
    mdp = coverage_chain(4, 0.5)
    return mdp, coverage_chain_policy(mdp)


def _small() -> LayeredMDP:
    return random_layered_mdp(np.random.default_rng(1), 2, 3, 2, 2)


def _sample_step(**kw: object) -> object:
    mdp, pi = _chain()
    args: dict[str, object] = {"tau": 0.1, "m": 20, "rng": np.random.default_rng(0), **kw}
    return sample_cpi_step(mdp, pi, "caro", **args)  # type: ignore[arg-type]


def _with_horizon(horizon: object, H: int = 2) -> LayeredMDP:
    """A valid H-step MDP rebuilt with ``horizon`` in place of H."""
    m = random_layered_mdp(np.random.default_rng(1), H, 3, 2, 2)
    return LayeredMDP(m.layer_sizes, m.succ, m.prob, m.reward, horizon)  # type: ignore[arg-type]


def _with_sizes(sizes: tuple[object, ...]) -> LayeredMDP:
    m = _small()
    return LayeredMDP(sizes, m.succ, m.prob, m.reward, m.horizon)  # type: ignore[arg-type]


def _update(pi: object = None, pi_plus: object = None, alpha: float = 0.5, w: object = None) -> object:
    n = 3
    pi = np.full((n, 2), 0.5) if pi is None else np.asarray(pi, dtype=np.float64)
    pi_plus = np.tile([1.0, 0.0], (n, 1)) if pi_plus is None else np.asarray(pi_plus, dtype=np.float64)
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    return cpi_update(pi, pi_plus, alpha, w)


V, T = ValueError, TypeError

# (id, call, exception, pattern that names the argument and its value)
CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    # 1. non-finite inputs to the bound functions and to the sample-based step
    ("optimal_step Abar_U=nan", lambda: bounds.optimal_step(NAN, 5, 1.0), V, r"Abar_U.*nan"),
    ("optimal_step Abar_U=inf", lambda: bounds.optimal_step(INF, 5, 1.0), V, r"Abar_U.*inf"),
    ("optimal_step c=inf", lambda: bounds.optimal_step(0.1, 5, 1.0, c=INF), V, r"\bc\b.*inf"),
    ("optimal_step H=nan", lambda: bounds.optimal_step(0.1, NAN, 1.0), T, r"horizon H.*nan"),
    ("optimal_step H=inf", lambda: bounds.optimal_step(0.1, INF, 1.0), T, r"horizon H.*inf"),
    ("optimal_step R=str", lambda: bounds.optimal_step(0.1, 5, "1"), T, r"R \(reward bound\).*'1'"),
    ("lower_bound A_U=nan", lambda: bounds.conservative_lower_bound(0.5, NAN, 0.1, 3, 1.0), V, r"A_U.*nan"),
    ("lower_bound p_U=nan", lambda: bounds.conservative_lower_bound(0.5, 0.1, NAN, 3, 1.0), V, r"p_U.*nan"),
    ("lower_bound c=inf", lambda: bounds.conservative_lower_bound(0.5, 0.1, 0.1, 3, 1.0, INF), V, r"\bc\b.*inf"),
    ("sharp A_U=inf", lambda: bounds.conservative_lower_bound_sharp(0.5, INF, [0.5, 0.5], 1.0), V, r"A_U.*inf"),
    ("sharp kappa=nan", lambda: bounds.conservative_lower_bound_sharp(0.5, 0.1, [0.5, 0.5], NAN), V, r"kappa.*nan"),
    ("sharp kappa=inf", lambda: bounds.conservative_lower_bound_sharp(0.5, 0.1, [0.5, 0.5], INF), V, r"kappa.*inf"),
    ("sharp u=nan", lambda: bounds.conservative_lower_bound_sharp(0.5, 0.1, [NAN, 0.5], 1.0), V, r"u\[0\].*nan"),
    ("guaranteed Abar_U=nan", lambda: bounds.guaranteed_improvement(NAN, 0.5, 5, 1.0), V, r"Abar_U.*nan"),
    ("guaranteed p_U=nan", lambda: bounds.guaranteed_improvement(0.1, NAN, 5, 1.0), V, r"p_U.*nan"),
    ("sample_guarantee tau_nu=inf", lambda: bounds.sample_guarantee(INF, 0.5, 5, 1.0), V, r"tau_nu.*inf"),
    ("sample_guarantee p_U=nan", lambda: bounds.sample_guarantee(0.1, NAN, 5, 1.0), V, r"p_U.*nan"),
    ("approx_samples tau=nan", lambda: bounds.approx_samples(NAN, 0.2), V, r"tau.*nan"),
    ("caro_samples R=nan", lambda: bounds.caro_samples(0.1, R=NAN), V, r"R \(reward bound\).*nan"),
    ("caro_samples R<0", lambda: bounds.caro_samples(0.1, R=-1.0), V, r"R \(reward bound\).*-1"),
    ("rr_samples log_n_policies=inf", lambda: bounds.rr_samples(0.1, 0.5, log_n_policies=INF), V,
     r"log_n_policies.*inf"),
    ("caro_samples n_actions=2.5", lambda: bounds.caro_samples(0.1, n_actions=2.5), T, r"n_actions.*2\.5"),
    ("sample_cpi_step eps=nan", lambda: _sample_step(eps=NAN), V, r"eps.*nan"),
    ("sample_cpi_step eps=inf", lambda: _sample_step(eps=INF), V, r"eps.*inf"),
    # 2. coverage / masses outside [0, 1]
    ("lower_bound p_U=-1", lambda: bounds.conservative_lower_bound(0.5, 0.1, -1.0, 3, 1.0), V, r"p_U.*-1"),
    ("lower_bound p_U=1.5", lambda: bounds.conservative_lower_bound(0.5, 0.1, 1.5, 3, 1.0), V, r"p_U.*1\.5"),
    ("guaranteed p_U=-1", lambda: bounds.guaranteed_improvement(0.1, -1.0, 5, 1.0), V, r"p_U.*-1"),
    ("sample_guarantee p_U=-1", lambda: bounds.sample_guarantee(0.1, -1.0, 5, 1.0), V, r"p_U.*-1"),
    ("sharp u=-1", lambda: bounds.conservative_lower_bound_sharp(0.5, 0.1, [-1.0, 0.5], 1.0), V, r"u\[0\].*-1"),
    # 3. tau above the reward bound
    ("caro_guarantee tau>R", lambda: bounds.caro_guarantee(2.0, 0.5, 3, 1.0), V, r"tau.*<= R.*2\.0"),
    ("rr_guarantee tau>R", lambda: bounds.rr_guarantee(2.0, 0.5, 3, 1.0), V, r"tau.*<= R.*2\.0"),
    ("approx_guarantee tau>R", lambda: bounds.approx_guarantee(2.0, 0.5, 0.1, 0.5, 3, 1.0), V, r"tau.*<= R.*2\.0"),
    ("caro_samples tau>R", lambda: bounds.caro_samples(2.0, R=1.0), V, r"tau.*<= R.*2\.0"),
    ("sample_guarantee tau_nu>R", lambda: bounds.sample_guarantee(2.0, 0.5, 5, 1.0), V, r"tau_nu.*<= R.*2\.0"),
    ("exact_cpi_step tau>r_max", lambda: exact_cpi_step(*_chain(), "caro", tau=1.5), V, r"tau.*r_max.*1\.5"),
    ("sample_cpi_step tau>r_max", lambda: _sample_step(tau=1.5), V, r"tau.*r_max.*1\.5"),
    ("update_weights tau>r_max",
     lambda: update_weights(_chain()[0], evaluate(*_chain()), "caro", tau=1.5), V, r"tau.*r_max.*1\.5"),
    ("run_cpi tau>r_max", lambda: run_cpi(*_chain(), "caro", tau=1.5, n_iters=1), V, r"tau.*r_max.*1\.5"),
    ("train_softmax tau>r_max", lambda: train_softmax(_chain()[0], "srpo", tau=1.5, n_iters=0), V,
     r"tau.*r_max.*1\.5"),
    # 4. horizons (and other counts) that are not integers
    ("LayeredMDP horizon=2.5", lambda: _with_horizon(2.5), T, r"horizon.*2\.5"),
    ("LayeredMDP horizon=2.0", lambda: _with_horizon(2.0), T, r"horizon.*2\.0"),
    ("LayeredMDP horizon=True", lambda: _with_horizon(True, H=1), T, r"horizon.*True"),
    ("LayeredMDP layer size 3.5", lambda: _with_sizes((1, 3.5, 3)), T, r"layer_sizes\[1\].*3\.5"),
    ("coverage_chain H=4.0", lambda: coverage_chain(4.0, 0.5), T, r"horizon H.*4\.0"),
    ("coverage_chain fork=1.5", lambda: coverage_chain(4, 0.5, fork=1.5), T, r"fork.*1\.5"),
    ("random_tree_mdp H=True", lambda: random_tree_mdp(np.random.default_rng(0), True, 2), T, r"horizon H.*True"),
    ("random_tree_mdp n_actions=2.5", lambda: random_tree_mdp(np.random.default_rng(0), 3, 2.5), T,
     r"n_actions.*2\.5"),
    ("random_layered_mdp H=3.0", lambda: random_layered_mdp(np.random.default_rng(0), 3.0, 2, 2), T,
     r"horizon H.*3\.0"),
    ("reasoning_tree H=np.float64(3)", lambda: reasoning_tree(np.random.default_rng(0), np.float64(3.0)), T,
     r"horizon H.*3\.0"),
    ("reasoning_tree n_actions=3.5", lambda: reasoning_tree(np.random.default_rng(0), 3, 3.5), T,
     r"n_actions.*3\.5"),
    ("tight_chain H=3.0", lambda: tight_chain(3.0), T, r"horizon H.*3\.0"),
    ("optimal_step H=3.0", lambda: bounds.optimal_step(0.1, 3.0, 1.0), T, r"horizon H.*3\.0"),
    ("optimal_step H=True", lambda: bounds.optimal_step(0.1, True, 1.0), T, r"horizon H.*True"),
    ("caro_guarantee H=3.5", lambda: bounds.caro_guarantee(0.1, 0.5, 3.5, 1.0), T, r"horizon H.*3\.5"),
    # 5. the conservative update itself
    ("cpi_update w=2", lambda: _update(w=[2.0, 1.0, 0.0]), V, r"\bw\b.*w\[0\] = 2\.0"),
    ("cpi_update w<0", lambda: _update(w=[1.0, -0.5, 0.0]), V, r"\bw\b.*w\[1\] = -0\.5"),
    ("cpi_update w=nan", lambda: _update(w=[1.0, 1.0, NAN]), V, r"\bw\b.*w\[2\] = nan"),
    ("cpi_update pi rows sum to 1.4", lambda: _update(pi=np.full((3, 2), 0.7)), V, r"\bpi\b.*row 0.*1\.4"),
    ("cpi_update pi nan", lambda: _update(pi=[[0.5, 0.5], [NAN, 0.5], [0.5, 0.5]]), V, r"\bpi\b.*row 1.*nan"),
    ("cpi_update pi_plus negative", lambda: _update(pi_plus=[[1.5, -0.5], [1.0, 0.0], [1.0, 0.0]]), V,
     r"pi_plus.*row 0.*-0\.5"),
    ("cpi_update alpha=str", lambda: _update(alpha="0.5"), T, r"alpha.*'0\.5'"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_naming_the_argument(
    call: Callable[[], object], exc: type[Exception], pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        call()


# -- valid inputs keep their old results -----------------------------------------------------------


def test_numpy_scalars_and_edges_are_still_accepted() -> None:
    H = np.int64(5)
    assert bounds.optimal_step(np.float64(0.3), H, np.float64(2.0)) == pytest.approx(0.3 / (2 * 2.0 * 4))
    assert bounds.caro_guarantee(1.0, 1.0, 3, 1.0) == pytest.approx(3 / 8)  # tau = R and p = 1 are allowed
    assert bounds.conservative_lower_bound(1.0, 0.0, 0.0, 1, 1.0) == 0.0
    assert bounds.conservative_lower_bound(0.5, 0.1, 1.0 + 1e-12, 3, 1.0) < 0.15  # rounding slack on p_U
    mdp = tight_chain(np.int64(4))
    assert mdp.horizon == 4 and type(mdp.horizon) is int
    assert coverage_chain(np.int32(4), 0.5, fork=np.int64(2)).horizon == 4
    # tau = r_max is a legal threshold (tight_chain has A = r_max at the open states)
    pi = np.tile([0.0, 1.0], (mdp.n_dec, 1))
    assert exact_cpi_step(mdp, pi, "caro", tau=1.0).improvement > 0


def test_cpi_update_on_valid_input_is_the_mixture() -> None:
    rng = np.random.default_rng(0)
    pi = rng.dirichlet(np.ones(3), size=5)
    pi_plus = rng.dirichlet(np.ones(3), size=5)
    w = np.array([0.0, 0.25, 0.5, 1.0, 1.0])
    out = cpi_update(pi, pi_plus, 0.4, w)
    np.testing.assert_array_equal(out, pi + (0.4 * w)[:, None] * (pi_plus - pi))
    assert np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0)
