import sys
from pathlib import Path

import pytest

# Test helpers (reference.py, fakes.py, contract.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))
# The vLLM test lane (`make install` fills it; see tests/vllm_fakes.py): last on the path.
VLLM_LANE = Path(sys.prefix) / "vllm-lane"
if VLLM_LANE.is_dir():
    sys.path.append(str(VLLM_LANE))
    # The lane holds vLLM's pure-Python types only (no engine, no compiled parts): TRL must not
    # take it for a usable vLLM (its GRPO trainer then imports vLLM's engine and fails).
    try:
        import trl.import_utils as _trl_import_utils
    except ImportError:  # TRL is optional
        pass
    else:
        _trl_import_utils.is_vllm_available = lambda *args, **kwargs: False


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch CPU thread for a module: tiny models on a shared 2-core machine ran fwd+bwd 20x
    slower with two OpenMP threads under load (experiments/LOG.md). Used by the LLM test modules."""
    from llm_fixtures import torch_threads

    with torch_threads(1):
        yield
