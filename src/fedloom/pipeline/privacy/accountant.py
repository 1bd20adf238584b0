"""Privacy accounting through Google's ``dp-accounting`` package (no hand-written accountant).

A run's privacy loss is described as a ``DpEvent``: a Gaussian mechanism (noise multiplier z = σ / sensitivity),
amplified by client sampling, composed over the rounds (Abadi et al., "Deep Learning with Differential Privacy",
CCS 2016; Mironov, Talwar, Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019).

* Poisson sampling (every client joins with probability q): ``PoissonSampledDpEvent`` under add-or-remove-one
  neighbouring, for the RDP or the PLD accountant. The sum of clipped updates has sensitivity S, so z = σ / S.
* Fixed-size sampling (m of N without replacement): ``SampledWithoutReplacementDpEvent``, RDP only (Wang, Balle,
  Kasiviswanathan, AISTATS 2019), which needs replace-one neighbouring: replacing one client moves the sum by up
  to 2S, so the event's multiplier is z / 2.

``dp_accounting`` is imported only here, through ``fedloom.extras.require``, when DP is chosen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from fedloom.errors import ConfigError
from fedloom.extras import require

ACCOUNTANTS = ("rdp", "pld")
#: RDP orders: integers (the package's fast closed form for the sampled Gaussian; its fractional default orders
#: cost seconds per call and may fail to converge), as in TF Privacy's integer grid.
RDP_ORDERS = tuple(range(2, 65)) + (80, 96, 128, 192, 256)
SAMPLINGS = ("fixed", "poisson")


def _dp() -> Any:
    return require("dp_accounting", "privacy", "--transform dp (privacy accounting)")


@dataclass(frozen=True)
class PrivacyPlan:
    """Everything ε depends on: the noise multiplier z (σ / S), N clients, m per round (expected m = qN under
    Poisson sampling), δ, the accountant and the sampling scheme. ``steps_per_round`` > 1 composes several
    releases per round (sample-level DP-SGD: the local steps)."""

    noise_multiplier: float
    population: int
    cohort: int
    delta: float
    accountant: str = "rdp"
    sampling: str = "poisson"
    steps_per_round: int = 1

    @property
    def sampling_rate(self) -> float:
        return self.cohort / self.population

    def event(self, rounds: int, noise_multiplier: float | None = None) -> Any:
        """The DpEvent of ``rounds`` rounds."""
        dp = _dp()
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        if self.sampling == "poisson":
            one = dp.PoissonSampledDpEvent(self.sampling_rate, dp.GaussianDpEvent(z))
        else:  # replace-one: the sum moves by up to 2S
            one = dp.SampledWithoutReplacementDpEvent(self.population, self.cohort, dp.GaussianDpEvent(z / 2))
        return dp.SelfComposedDpEvent(one, rounds * self.steps_per_round)

    def fresh_accountant(self) -> Any:
        dp = _dp()
        if self.accountant == "pld":
            return dp.pld.PLDAccountant()
        relation = (dp.NeighboringRelation.ADD_OR_REMOVE_ONE if self.sampling == "poisson"
                    else dp.NeighboringRelation.REPLACE_ONE)
        return dp.rdp.RdpAccountant(list(RDP_ORDERS), neighboring_relation=relation)

    def epsilon(self, rounds: int) -> float:
        """ε at δ after ``rounds`` rounds (0 rounds: 0; z = 0: infinite)."""
        if rounds <= 0:
            return 0.0
        if self.noise_multiplier <= 0:
            return float("inf")
        return _epsilon(self, rounds)

    def calibrate(self, target_epsilon: float, rounds: int) -> float:
        """The smallest noise multiplier z whose ε after ``rounds`` rounds is at most ``target_epsilon`` (the
        package's bisection); ConfigError when no z up to 1000 reaches it."""
        dp = _dp()
        try:
            z = dp.calibrate_dp_mechanism(
                self.fresh_accountant, lambda z: self.event(rounds, z), target_epsilon, self.delta,
                dp.ExplicitBracketInterval(1e-3, 1e3), tol=1e-3 * target_epsilon)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"dp.target-epsilon {target_epsilon} at delta {self.delta} cannot be reached in "
                              f"{rounds} rounds with noise multipliers up to 1000 ({exc})") from None
        return float(z)


@functools.lru_cache(maxsize=4096)
def _epsilon(plan: PrivacyPlan, rounds: int) -> float:
    accountant = plan.fresh_accountant()
    accountant.compose(plan.event(rounds))
    return float(accountant.get_epsilon(plan.delta))


def check_plan(accountant: str, sampling: str) -> None:
    """Fixed-size sampling has an RDP analysis only (the PLD accountant has no event for it)."""
    if sampling == "fixed" and accountant == "pld":
        raise ConfigError("dp.sampling 'fixed' is accounted with RDP only (sampling without replacement): use "
                          "--dp.accountant rdp or --dp.sampling poisson")
