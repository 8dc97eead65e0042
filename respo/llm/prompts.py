"""Prompt rendering: the raw completion prompt (generation) and the chat localization prompt.

Both follow ``docs/method.md`` sections 2 and 4 in our own words (the authors' wording is not copied).

- ``completion_prompt``: no chat template. Asks for one step at a time, each ended by the
  delimiter, one substantive observation/calculation/deduction per step, the final step holding
  ``\\boxed{answer}``; then ``Q: <question>``. Variant ``"small"`` is shorter and asks for one step
  per line (newline delimiter), for small models that rarely emit ``</thought>``. Variant
  ``"bare"`` is only ``Q: <question>`` and a newline: for a model trained from scratch (the CPU
  track's character model), which cannot read instructions, a fixed instruction text is only
  extra sequence length (it slowed its supervised warm-up, ``experiments/LOG.md``).
- ``chat_messages`` / ``prompt_text`` / ``prompt_token_ids``: variant ``"chat"``, for instruct
  models (SmolLM2-135M-Instruct answers 0/64 with the raw completion prompt, experiments/LOG.md): one user
  message (the question, then a short instruction: one step per line, a last line
  "The answer is ``\\boxed{N}``") rendered with the tokenizer's chat template and ``add_generation_prompt``,
  so the prompt ends where the assistant turn starts. The chain then ends at the model's
  end-of-turn token (an EOS of the backend) or at a boxed answer. ``completion_prompt`` refuses
  ``"chat"`` (it needs a tokenizer); ``prompt_token_ids`` renders every variant.
- ``localization_messages``: chat messages (the caller applies the tokenizer's chat template).
  The failed chain is shown as ``Step i: <text>`` without delimiters; the ground truth is not
  shown; the model must commit to one step number and end with ``\\boxed{N}``. It is biased toward
  the *first* unjustifiable step, as the authors' prompt is (late resets rarely helped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np

PromptVariant = Literal["paper", "small", "bare", "chat"]
PROMPT_VARIANTS: tuple[str, ...] = get_args(PromptVariant)
"""The prompt variants, in order."""

CHAT_INSTRUCTION = (
    "Show your working, one short step per line. On the last line, write "
    '"The answer is \\boxed{N}" where N is the final number.'
)
"""The instruction of the ``chat`` variant, placed after the question in the user message.

Chosen by ``experiments/real_track/probe.py`` on SmolLM2-135M-Instruct (16 problems x 4 samples,
T = 0.7): "... End with the final answer in \\boxed{}." gave 4.7% on 2-term one-digit
``basic_arithmetic`` (the model writes "6 - 8 = -4" and stops), this wording 12.5% (it then
mostly writes "The answer is N", which ``gym-phrase`` tasks accept; it rarely boxes)."""


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
    if variant == "bare":
        return f"Q: {q}\n"
    if variant == "chat":
        raise ValueError("prompt variant 'chat' is rendered with a tokenizer's chat template: "
                         "use respo.llm.prompts.prompt_text / prompt_token_ids")
    raise ValueError(f"unknown prompt variant {variant!r}; valid: paper, small, bare, chat")


def chat_messages(question: str) -> list[dict[str, str]]:
    """The single user message of the ``chat`` variant (question, then ``CHAT_INSTRUCTION``)."""
    return [{"role": "user", "content": f"{question.strip()}\n\n{CHAT_INSTRUCTION}"}]


def require_chat_template(tokenizer: Any) -> None:
    """ValueError unless ``tokenizer`` has a chat template (needed by the ``chat`` variant)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"prompt variant 'chat' needs a tokenizer with a chat template; "
                         f"{type(tokenizer).__name__} has none (use 'small', 'paper' or 'bare')")


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template closes a message with (``<|im_end|>`` for SmolLM2).

    Found by rendering one user message and taking the first special token after its content;
    None when there is none. A chat-prompted chain must end there, so it must be an EOS id of the
    generation backend (``LMSampler`` checks it).
    """
    require_chat_template(tokenizer)
    mark = "respo-end-of-turn-probe"
    text = str(tokenizer.apply_chat_template([{"role": "user", "content": mark}],
                                             add_generation_prompt=False, tokenize=False))
    pos = text.rfind(mark)
    if pos == -1:
        return None
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i in tokenizer(text[pos + len(mark):], add_special_tokens=False)["input_ids"]:
        if int(i) in special:
            return int(i)
    return None


def prompt_text(
    tokenizer: Any, question: str, *, delimiter: str = "</thought>", variant: PromptVariant = "paper"
) -> str:
    """The rendered prompt text of any variant (``chat``: the tokenizer's chat template)."""
    if variant != "chat":
        return completion_prompt(question, delimiter=delimiter, variant=variant)
    require_chat_template(tokenizer)
    return str(tokenizer.apply_chat_template(chat_messages(question), add_generation_prompt=True,
                                             tokenize=False))


def prompt_token_ids(
    tokenizer: Any, question: str, *, delimiter: str = "</thought>", variant: PromptVariant = "paper"
) -> np.ndarray:
    """Prompt ids of any variant, int64 [T].

    Completion variants are tokenized with the tokenizer's default special tokens (unchanged
    behaviour); ``chat`` text already holds the template's specials, so it is tokenized without
    adding any (the ids equal ``apply_chat_template(..., tokenize=True)``; a test checks it).
    """
    text = prompt_text(tokenizer, question, delimiter=delimiter, variant=variant)
    enc = tokenizer(text, add_special_tokens=False) if variant == "chat" else tokenizer(text)
    return np.asarray(enc["input_ids"], dtype=np.int64)


RETRY_INSTRUCTION = (
    "Your solution above may contain a mistake. Go through it again, correct any error you find, "
    "and write out the whole corrected solution."
)
"""SCoRe's self-correction turn, in our words (its paper asks the model to find and fix a
possible mistake and rewrite the solution; no hint of whether the first attempt was right)."""

CRITIQUE_INSTRUCTION = (
    "Use this feedback to write a corrected solution to the problem from the beginning."
)
"""Critique-GRPO's refinement request, placed after the critique (our words)."""


def critique_text(answer: str, *, correct: bool = False) -> str:
    """A rule-based critique that says whether the response is right and reveals the reference
    answer (Critique-GRPO's critique "with ground truth"; our wording)."""
    verdict = "correct" if correct else "incorrect"
    return f"Your solution is {verdict}. The reference final answer is {answer.strip()}."


def followup_message(kind: str, *, answer: str, correct: bool, variant: PromptVariant) -> str:
    """The text of a second turn: ``kind="retry"`` (SCoRe's self-correction instruction) or
    ``"critique"`` (Critique-GRPO's ground-truth critique and refinement request).

    ``bare`` prompts (a model trained from scratch, which reads no instructions and loses its
    format in long contexts) get no retry text and a two-word critique ("wrong 7").
    """
    if kind not in ("retry", "critique"):
        raise ValueError(f"unknown follow-up kind {kind!r}; valid: retry, critique")
    if variant == "bare":
        return "" if kind == "retry" else f"{'right' if correct else 'wrong'} {answer}"
    if kind == "retry":
        return RETRY_INSTRUCTION
    return f"{critique_text(answer, correct=correct)} {CRITIQUE_INSTRUCTION}"


def followup_prompt_ids(
    tokenizer: Any, question: str, response: str, message: str, *,
    delimiter: str = "</thought>", variant: PromptVariant = "paper",
) -> np.ndarray:
    """Prompt ids of a second turn that shows an earlier ``response`` and then ``message``.

    ``chat``: user (question + instruction), assistant (the response), user (``message``), then
    the assistant turn starts. Completion variants: the first prompt and the response, then
    ``message`` on its own line, then the first prompt again, so the model starts a new solution
    in the format it knows (for the CPU track's character model, which cannot read the message,
    the repeated question is the only cue it can follow; ``bare`` puts no blank line after the
    message and none at all when it is empty).
    """
    if variant == "chat":
        require_chat_template(tokenizer)
        msgs = chat_messages(question) + [{"role": "assistant", "content": response.strip()},
                                          {"role": "user", "content": message}]
        text = str(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    first = completion_prompt(question, delimiter=delimiter, variant=variant)
    note = f"{message}\n\n" if variant != "bare" else (f"{message}\n" if message else "")
    text = f"{first}{response.rstrip()}\n{note}{first}"
    return np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)


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
