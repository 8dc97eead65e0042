"""Tasks: problems, verifiers (rewards), optional step judges, loaders and benchmark registry."""

from respo.tasks.base import Problem, Task, check_reward

__all__ = ["Problem", "Task", "check_reward"]
