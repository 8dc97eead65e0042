"""Tasks: problems, verifiers (rewards), optional step judges, loaders and benchmark registry.

Modules: ``synthetic`` (step-verifiable arithmetic chains, CPU track), ``math`` (math-verify in a
killable worker), ``choice`` (multiple choice, yes/no), ``code`` + ``sandbox`` (LiveCodeBench-style
tests in a contained process), ``gym`` (reasoning-gym adapters), ``registry`` + ``prepare`` (the
paper's datasets and splits), ``catalog`` (tasks by name).
"""

from respo.tasks.base import Problem, Task, check_reward
from respo.tasks.catalog import TASKS, make_task

__all__ = ["TASKS", "Problem", "Task", "check_reward", "make_task"]
