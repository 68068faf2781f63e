"""Training until the bound stops improving: cut the learning rate on a plateau, then stop.

With plateau-patience P > 0 an epoch improves when its bound beats the best so far by more than
plateau-delta nats per image. After P epochs in a row without improvement the learning rate is
multiplied by plateau-factor, at most plateau-cuts times, and the count starts again; P epochs
without improvement after the last cut end the run, and `epochs` becomes a ceiling. The bound
watched is the validation bound when the run holds validation images out, else the test bound.

The state is a function of the bounds so far, so a resumed run replays its metrics.jsonl and goes
on exactly where it stood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class PlateauState:
    best: float = float("-inf")  # the bound of the last improvement
    best_epoch: int = 0
    waited: int = 0  # epochs since the last improvement or cut
    cuts: int = 0
    stopped: bool = False


@dataclass(frozen=True)
class Plateau:
    patience: int
    delta: float
    cuts: int
    factor: float

    @classmethod
    def of(cls, cfg) -> "Plateau | None":
        """The rule a TrainConfig asks for; None when it trains every epoch (patience 0)."""
        if not cfg.plateau_patience:
            return None
        return cls(cfg.plateau_patience, cfg.plateau_delta, cfg.plateau_cuts, cfg.plateau_factor)

    def step(self, state: PlateauState, bound: float, epoch: int) -> PlateauState:
        """The state after an epoch whose bound is `bound`."""
        if state.stopped:
            return state
        if bound > state.best + self.delta:
            return PlateauState(bound, epoch, 0, state.cuts)
        # The reference stays the last improvement's bound: small gains add up against it.
        waited = state.waited + 1
        if waited < self.patience:
            return PlateauState(state.best, state.best_epoch, waited, state.cuts)
        if state.cuts < self.cuts:
            return PlateauState(state.best, state.best_epoch, 0, state.cuts + 1)
        return PlateauState(state.best, state.best_epoch, waited, state.cuts, stopped=True)

    def replay(self, bounds: Sequence[float]) -> PlateauState:
        """The state after epochs 1..len(bounds)."""
        state = PlateauState()
        for epoch, bound in enumerate(bounds, 1):
            state = self.step(state, bound, epoch)
        return state

    def lr_factor(self, state: PlateauState) -> float:
        return self.factor**state.cuts

    def describe(self, watched: str) -> str:
        cuts = (f"; on each of the first {self.cuts} plateau(s) the learning rate was multiplied by {self.factor:g} instead"
                if self.cuts else "")
        return (f"until the {watched} bound stopped improving (no gain of more than {self.delta:g} nats over the last "
                f"improvement in {self.patience} epochs{cuts})")


def watched_key(line: dict) -> str:
    """The metrics.jsonl key of the bound the rule watches."""
    return "valid_elbo" if "valid_elbo" in line else "test_elbo"
