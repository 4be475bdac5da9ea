"""``--time MINUTES``: the time budget of a run, validation included (after Ultralytics' ``time``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("workbench.training")


class TimeBudget:
    """``--time MINUTES``: the run ends, validated and saved, within that wall time (after
    Ultralytics' ``time``).

    Training stops early enough to leave room for the validation that follows: 1.2x as long as
    the last one took; before the first, 1.3x what ``probe`` timed (else 5% of the budget). The
    epoch it stops in is cut short and validated as usual. The learning rate decays over the
    budget (``lr_lambda``), so the run has cooled down when the clock stops it. Counted from the
    start of this process: a resumed run gets the budget again. ``minutes`` ``None`` or 0: no
    limit.
    """

    REPROBE_AT = (0.25, 0.5, 0.75, 0.9)  # shares of the training time at which to probe again

    def __init__(self, minutes: float | None) -> None:
        self.seconds = float(minutes) * 60 if minutes else None
        self.t0 = time.monotonic()
        self.eval_seconds: float | None = None
        self.hit = False
        self.agreed: float | None = None  # under DDP: the ranks' common fraction, so that they share one LR
        self._probe: tuple[Callable[[list], object], list, int] | None = None  # set while probing
        self._done = 0.0  # the training-time share of the last probe

    @property
    def probed(self) -> bool:
        """``eval_seconds`` is a probe's estimate, not a measured validation."""
        return self._probe is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def reserve(self) -> float:
        """Seconds kept back for the validation and checkpoint after the last training step."""
        if self.seconds is None:
            return 0.0
        if self.eval_seconds is None:
            return 0.05 * self.seconds
        if self.probed:  # an estimate (noisy on a busy machine): at least half the budget still trains
            return min(1.3 * self.eval_seconds + 5, 0.5 * self.seconds)
        return 1.2 * self.eval_seconds + 5

    def fraction(self, *, own: bool = False) -> float:
        """How much of the training time is used, 0..1 (the ranks' ``agreed`` one unless ``own``)."""
        if self.seconds is None:
            return 0.0
        if self.agreed is not None and not own:
            return self.agreed
        return min(1.0, self.elapsed() / max(1.0, self.seconds - self.reserve()))

    def over(self) -> bool:
        """True once training must stop to finish in time (remembered in ``hit``). Until a
        validation is measured, the probe is repeated at the ``REPROBE_AT`` shares of the time."""
        if self.probed and any(self._done < at <= self.fraction(own=True) for at in self.REPROBE_AT):
            self._measure(*self._probe, warm_up=False)
        if self.seconds is not None and self.elapsed() >= self.seconds - self.reserve():
            self.hit = True
        return self.hit

    def left(self) -> float | None:
        return None if self.seconds is None else max(0.0, self.seconds - self.elapsed())

    def validated(self, seconds: float) -> None:
        """A validation took ``seconds``: keep as much (x1.2) back for the next one."""
        self.eval_seconds, self._probe = seconds, None

    def probe(self, validate: Callable[[list], object], records: list, *, images: int = 2) -> None:
        """Time ``validate`` on a few of the validation ``records`` (after one warm-up image) and
        expect the first whole validation to take as long per image, so that a slow model's first
        validation fits in the budget too. A model's validation cost changes as it trains (a fresh
        model proposes other boxes than a trained one; docs/training.md gives measurements), so
        ``over`` probes again as the time passes. Costs
        ``images + 1`` predictions, then ``images`` each later probe; nothing without a budget or
        once a validation ran."""
        if self.seconds is None or self.eval_seconds is not None or not records:
            return
        self._probe = (validate, records, images)
        self._measure(validate, records, images, warm_up=True)

    def _measure(self, validate: Callable[[list], object], records: list, images: int, *, warm_up: bool) -> None:
        if warm_up:
            validate(records[:1])
        timed = records[1 : 1 + images] or records[:1]
        t = time.monotonic()
        validate(timed)
        self.eval_seconds = (time.monotonic() - t) / len(timed) * len(records)
        self._done = self.fraction(own=True)
        log.info(
            "time budget: validation expected to take %.0f s (%d images); training stops %.0f s before the end",
            self.eval_seconds,
            len(records),
            self.reserve(),
        )
