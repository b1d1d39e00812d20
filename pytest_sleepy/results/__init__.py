"""What a run produced, and what is made of it.

- `runfile`: `Outcome` records, their aggregation (`RunSummary`), episode logs and run
  files; its names are importable from `pytest_sleepy.results` itself;
- `comparison`: baselines, per-koan states, the forgetting matrix and the gate;
- `continual`: continual-learning metrics over training stages;
- `report`: the summary as text, Markdown or JSON;
- `heatmap`: the forgetting matrix drawn as a PNG (the `plots` extra).

Only `stats` lies below: nothing here runs a model, a verifier or pytest.
"""

from .runfile import *  # noqa: F401,F403
from .runfile import __all__  # noqa: F401
