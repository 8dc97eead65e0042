"""Adapters that run respo's resets inside other training libraries.

- ``respo.integrations.trl``: GRPO / RRPO / SRPO / oracle resets inside Hugging Face TRL's
  ``GRPOTrainer`` through its rollout hook (needs the ``[trl]`` extra).
"""
