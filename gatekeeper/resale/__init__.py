"""The resale score: per-key signal state (``state.py``), fed by one ``Event`` per request
(``event.py``), scored by a pure function (``score.py``) with its reasons, applied to a
decision by ``act.py``, held per process by ``Scorer`` (``scorer.py``), and run over recorded
or synthetic traffic (``scored.py``, ``simulate.py``, ``report.py``)."""

from __future__ import annotations

from gatekeeper.resale.act import act
from gatekeeper.resale.event import Event, event_for
from gatekeeper.resale.score import Contribution, Score, action_for, score, signal_values
from gatekeeper.resale.scorer import Scorer
from gatekeeper.resale.state import KeyState, ResaleTracker, observe

__all__ = ["Contribution", "Event", "KeyState", "ResaleTracker", "Score", "Scorer", "act",
           "action_for", "event_for", "observe", "score", "signal_values"]
