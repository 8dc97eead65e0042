"""Prompt rendering: the raw completion prompt (generation) and the chat localization prompt.

Both follow ``method.md`` sections 2 and 4 in our own words (the authors' wording is not copied).

- ``completion_prompt``: no chat template. Asks for one step at a time, each ended by the
  delimiter, one substantive observation/calculation/deduction per step, the final step holding
  ``\\boxed{answer}``; then ``Q: <question>``. Variant ``"small"`` is shorter and asks for one step
  per line (newline delimiter), for small models that rarely emit ``</thought>``.
- ``localization_messages``: chat messages (the caller applies the tokenizer's chat template).
  The failed chain is shown as ``Step i: <text>`` without delimiters; the ground truth is not
  shown; the model must commit to one step number and end with ``\\boxed{N}``. It is biased toward
  the *first* unjustifiable step, as the authors' prompt is (late resets rarely helped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

PromptVariant = Literal["paper", "small"]


def completion_prompt(
    question: str, *, delimiter: str = "</thought>", variant: PromptVariant = "paper"
) -> str:
    """The raw generation prompt for ``question`` (ends where the first thought begins)."""
    q = question.strip()
    if variant == "paper":
        shown = delimiter.replace("\n", "\\n")
        return (
            "Work through the following problem one step at a time. Each time, write only the "
            f"next single step and finish it with {shown}. A step should contain one meaningful "
            "observation, calculation or deduction, nothing more. When you reach the answer, "
            "write it in the final step as \\boxed{answer}.\n\n"
            f"Q: {q}\n"
        )
    if variant == "small":
        return (
            "Solve the problem step by step, one short step per line. "
            "Write the final answer as \\boxed{answer}.\n\n"
            f"Q: {q}\nSolution:\n"
        )
    raise ValueError(f"unknown prompt variant {variant!r}; valid: paper, small")


LOCALIZE_INSTRUCTIONS = (
    "Below is a problem and your earlier step-by-step solution. Its final answer is wrong, so at "
    "least one step contains an error. Find the FIRST erroneous step.\n"
    "- Look for the step where a key decision first went wrong, not the step where the failure "
    "becomes visible.\n"
    "- A step is erroneous if what it claims cannot be justified from the problem and the steps "
    "before it.\n"
    "- Do not solve the problem again. Check the steps in order and stop at the first one you "
    "cannot justify.\n"
    "- Commit to exactly one step number between 1 and {n}.\n"
    "End your reply with \\boxed{{N}}, where N is the number of that step."
)


def render_steps(steps: Sequence[str]) -> str:
    """``Step i: <text>`` lines, 1-indexed (texts already stripped of delimiters)."""
    return "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, start=1))


def localization_messages(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    """One user message asking the policy to localize the first wrong step of ``steps``."""
    if not steps:
        raise ValueError("cannot localize in a chain with no steps")
    body = (
        LOCALIZE_INSTRUCTIONS.format(n=len(steps))
        + f"\n\nProblem:\n{question.strip()}\n\nYour previous solution:\n{render_steps(steps)}\n"
    )
    return [{"role": "user", "content": body}]
