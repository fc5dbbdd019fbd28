"""The parameter-free worst case of a denoiser (what ``--attack auto`` runs): per image, the
lowest PSNR over an ensemble of attacks of different kinds, in the spirit of AutoAttack (Croce &
Hein 2020) — APGD-L-inf on the clean objective, APGD-L-inf on the noisy (or output) objective,
zero-mean L2 APGD (ObsAtk's threat model) and transfer: perturbations crafted on each source
model (once, whatever the number of targets) and evaluated on the target.

A model that returns NaN or Inf under attack is not averaged over: its images get a NaN PSNR
(the worst possible outcome, so that member wins them), the mean becomes NaN, and
``WorstCase.nonfinite`` names the members and images (``mean_finite`` averages the others).

>>> result = auto_attack(den, clean, 25 / 255, sources={"dncnn-s-25": load_model("dncnn-s-25")})
>>> result.mean, result.wins          # 24.1, {"apgd-linf": 9, "apgd-linf-noisy": 1, ...}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_choice, check_nonnegative, check_positive, check_seed
from ..attacks.apgd import APGD, APGDObsAtk
from ..attacks.base import DenoiserAttack, check_image_units
from ..models.denoiser import Denoiser
from .metrics import AttackEvaluation, Images, add_noise, as_batches, denoise, psnr, ssim
from .metrics import worst_case as lowest_psnr
from .transfer import AttackFactory

CLEAN = "no attack"  # the key of the unattacked evaluation in ``WorstCase.nonfinite``


def auto_members(
    sigma: float,
    eps: float = 8 / 255,
    l2_eps: float = 5 / 255,
    steps: int = 100,
    restarts: int = 1,
    seed: int = 0,
    objective: str = "noisy",
) -> dict[str, AttackFactory]:
    """The white-box members, each a factory ``attack(denoiser)``: ``"apgd-linf"`` (L-inf
    ``eps``, clean objective), ``"apgd-linf-<objective>"`` (the same ball, ``"noisy"`` or
    ``"output"`` objective) and ``"apgd-obsatk"`` (zero-mean L2, RMS ``l2_eps``). Budgets are
    in image units; every member has ``steps`` iterations and ``restarts`` restarts.

    The worst case is over the union of the two balls: the L2 member can win images where it
    concentrates its budget on a few pixels (``l2_eps=0`` leaves it out)."""
    for name, value in (("eps", eps), ("l2_eps", l2_eps)):
        check_image_units(name, value, "budgets")
        check_nonnegative(name, value, high=1.0)
    check_positive("steps", steps, integer=True)
    check_positive("restarts", restarts, integer=True)
    check_seed("seed", seed)
    check_choice("objective", objective, ("noisy", "output"))
    common = {"sigma": sigma, "steps": steps, "restarts": restarts, "seed": seed}
    members: dict[str, AttackFactory] = {
        "apgd-linf": partial(APGD, eps=eps, **common),
        f"apgd-linf-{objective}": partial(APGD, eps=eps, objective=objective, **common),
    }
    if l2_eps:
        members["apgd-obsatk"] = partial(APGDObsAtk, eps=l2_eps, **common)
    return members


@dataclass
class WorstCase:
    """Per image (lists in image order), the lowest PSNR of one target over the members.

    members: the ensemble, white-box first, then ``"transfer:<source>"``.
    psnr, ssim: the worst case (SSIM of the member with the lowest PSNR); NaN where a member
        made the model return NaN/Inf. winner: that member, per image.
    per_member: PSNR per image under each member; psnr_clean: without attack.
    nonfinite: member (or ``"no attack"``) -> the images whose loss, gradient or output was
        NaN/Inf (during crafting or evaluation); empty when all was finite.
    """

    members: list[str]
    psnr_clean: list[float]
    psnr: list[float]
    ssim: list[float]
    winner: list[str]
    per_member: dict[str, list[float]]
    nonfinite: dict[str, list[int]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean worst-case PSNR (NaN if any image's is: see ``nonfinite``)."""
        return float(np.mean(self.psnr))

    @property
    def mean_finite(self) -> float:
        """Mean worst-case PSNR over the images where every member stayed finite."""
        values = [v for v in self.psnr if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    @property
    def wins(self) -> dict[str, int]:
        """How many images each member won (every member listed, in ensemble order)."""
        counts = Counter(self.winner)
        return {m: counts[m] for m in self.members}

    def member_means(self) -> dict[str, float]:
        """Mean PSNR under each member on its own."""
        return {m: float(np.mean(v)) for m, v in self.per_member.items()}

    def lines(self) -> list[str]:
        """The result in words: NaN first (never buried), then the mean and the wins."""
        out = [
            f"NaN/Inf under {m}: image(s) {', '.join(map(str, images))}"
            for m, images in self.nonfinite.items()
        ]
        clean = float(np.mean(self.psnr_clean))
        mean = f"{self.mean:.2f}"
        if math.isnan(self.mean):
            mean = f"NaN ({self.mean_finite:.2f} over the finite images)"
        out.append(f"worst case over {len(self.members)} attacks: {mean} dB (clean {clean:.2f})")
        out.append("wins: " + ", ".join(f"{m} {n}" for m, n in self.wins.items()))
        return out

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "mean": self.mean,
            "mean_finite": self.mean_finite,
            "wins": self.wins,
        }


def attacked_scores(
    denoiser: Denoiser, clean: list[Tensor], attacked: list[Tensor], sigma: float | Tensor
) -> tuple[list[float], list[float], list[int]]:
    """PSNR and SSIM per image of ``denoiser`` on each attacked batch, NaN where its output is
    not finite, and the indices of those images (over all batches)."""
    psnrs: list[float] = []
    ssims: list[float] = []
    bad: list[int] = []
    for x, adv in zip(clean, attacked, strict=True):
        out = denoise(denoiser, adv, sigma)
        finite = torch.isfinite(out).flatten(1).all(1)
        safe = torch.where(finite.view(-1, 1, 1, 1), out, 0.0)
        ok = finite.tolist()
        bad += [len(psnrs) + i for i, good in enumerate(ok) if not good]
        psnrs += [v if good else math.nan for v, good in zip(psnr(x, safe), ok, strict=True)]
        ssims += [v if good else math.nan for v, good in zip(ssim(x, safe), ok, strict=True)]
    return psnrs, ssims, bad


def craft(
    attack: DenoiserAttack, name: str, clean: list[Tensor], noisy: list[Tensor]
) -> tuple[list[Tensor], list[int]]:
    """The attacked inputs of every batch, and the images where crafting met NaN/Inf: an APGD
    attack is switched to ``nonfinite="record"``; other attacks raise, and the error then
    names the member."""
    if isinstance(attack, APGD):
        attack.nonfinite = "record"
    attacked: list[Tensor] = []
    bad: list[int] = []
    for x, y in zip(clean, noisy, strict=True):
        try:
            attacked.append(attack(y, x).to(y.device))
        except ValueError as err:
            raise ValueError(f"member {name!r}: {err}") from err
        if isinstance(attack, APGD):
            offset = sum(len(a) for a in attacked[:-1])
            bad += [offset + i for i in attack.record.nonfinite.nonzero().flatten().tolist()]
    return attacked, bad


def _evaluation(
    name: str,
    target: Denoiser,
    clean: list[Tensor],
    noisy: list[Tensor],
    attacked: list[Tensor],
    sigma: float,
    baseline: tuple[list[float], list[float]],
) -> tuple[AttackEvaluation, list[int]]:
    psnrs, ssims, bad = attacked_scores(target, clean, attacked, sigma)
    deltas = [(a - y).flatten(1) for a, y in zip(attacked, noisy, strict=True)]
    ev = AttackEvaluation(
        name,
        psnr_clean=baseline[0],
        psnr_attacked=psnrs,
        ssim_clean=baseline[1],
        ssim_attacked=ssims,
        linf=[v for d in deltas for v in d.abs().max(1).values.tolist()],
        l2=[v for d in deltas for v in d.norm(dim=1).tolist()],
    )
    return ev, bad


@dataclass
class Transferred:
    """Perturbed inputs crafted once on each source model, with the noisy copy they perturb:
    reusable for any number of targets evaluated later (:func:`auto_attack_models`'s
    ``transferred``)."""

    noisy: list[Tensor]
    inputs: dict[str, tuple[list[Tensor], list[int]]]  # source -> (attacked batches, NaN images)
    described: dict[str, str]  # "transfer:<source>" -> the attack in words


def craft_transfer(
    sources: Mapping[str, Denoiser],
    clean: Images,
    sigma: float,
    attack: AttackFactory,
    seed: int = 0,
    bar: tqdm | None = None,
) -> Transferred:
    """Craft ``attack(source)`` on each source against ``add_noise(clean, sigma, seed)``."""
    xs = as_batches(clean, "clean")
    return _crafted(sources, xs, add_noise(xs, sigma, seed), attack, bar)


def _crafted(
    sources: Mapping[str, Denoiser],
    xs: list[Tensor],
    ys: list[Tensor],
    attack: AttackFactory | None,
    bar: tqdm | None,
) -> Transferred:
    """:func:`craft_transfer` on batches already cut and noised."""
    for n, m in sources.items():
        if not isinstance(m, Denoiser):
            raise TypeError(f"sources[{n!r}] must be a ts_defense.Denoiser, got {type(m).__name__}")
    done = Transferred(ys, {}, {})
    for s, source in sources.items():
        if bar is not None:
            bar.set_postfix_str(f"crafting on {s}")
        atk = attack(source)
        done.inputs[s] = craft(atk, f"transfer:{s}", xs, ys)
        done.described[f"transfer:{s}"] = f"{atk.describe()}, crafted on {s}"
        if bar is not None:
            bar.update()
    return done


def auto_attack_models(
    targets: Mapping[str, Denoiser],
    clean: Images,
    sigma: float,
    members: Mapping[str, AttackFactory] | None = None,
    sources: Mapping[str, Denoiser] | None = None,
    transfer_attack: AttackFactory | None = None,
    seed: int = 0,
    progress: bool = False,
    transferred: Transferred | None = None,
) -> dict[str, WorstCase]:
    """The worst case of every target over ``members`` (white-box, crafted on the target;
    default :func:`auto_members` of ``sigma`` and ``seed``) and transfer from each of
    ``sources`` (crafted once per source with ``transfer_attack``, default the first member;
    a target is not its own transfer source), on one seeded Gaussian-noisy copy of ``clean``
    (``add_noise(clean, sigma, seed)``, as :func:`~.transfer.transfer_matrix` uses).
    ``transferred``: inputs :func:`craft_transfer` made earlier for the same ``clean``,
    ``sigma`` and ``seed``, in place of ``sources``."""
    if not isinstance(targets, Mapping) or not targets:
        raise ValueError("targets must be a non-empty mapping of name -> Denoiser")
    sources = dict(sources or {})
    if sources and transferred is not None:
        raise ValueError("transferred: give sources or inputs crafted on them, not both")
    for n, m in targets.items():
        if not isinstance(m, Denoiser):
            raise TypeError(f"targets[{n!r}] must be a ts_defense.Denoiser, got {type(m).__name__}")
    members = auto_members(sigma, seed=seed) if members is None else dict(members)
    if not members and not sources and transferred is None:
        raise ValueError("members: the ensemble has no member (give attacks or sources)")
    for n, factory in members.items():
        if not callable(factory):
            raise TypeError(f"members[{n!r}] must build an attack from a Denoiser")
    if sources and transfer_attack is None:
        if not members:
            raise ValueError(
                "transfer_attack: needed to craft on the sources when members is empty"
            )
        transfer_attack = next(iter(members.values()))
    xs = as_batches(clean, "clean")
    ys = add_noise(xs, sigma, seed)
    if transferred is not None and not (
        len(transferred.noisy) == len(ys)
        and all(torch.equal(a, b.to(a.device)) for a, b in zip(ys, transferred.noisy, strict=True))
    ):
        raise ValueError(
            "transferred: crafted for other images, sigma or seed than this evaluation's"
        )
    total = len(sources) + len(targets) * (len(members) + 1)
    with tqdm(total=total, disable=not progress, desc="auto attack") as bar:
        if transferred is None:
            transferred = _crafted(sources, xs, ys, transfer_attack, bar)
        described = transferred.described
        transferred_inputs = transferred.inputs
        results = {}
        for t, target in targets.items():
            bar.set_postfix_str(f"attacking {t}")
            p_clean, s_clean, bad_clean = attacked_scores(target, xs, ys, sigma)
            nonfinite = {CLEAN: bad_clean} if bad_clean else {}
            evals: dict[str, AttackEvaluation] = {}
            bar.update()
            runs = [(n, f(target)) for n, f in members.items()]
            for name, atk in runs:
                attacked, bad = craft(atk, name, xs, ys)
                evals[name], bad_out = _evaluation(
                    name, target, xs, ys, attacked, sigma, (p_clean, s_clean)
                )
                if bad or bad_out:
                    nonfinite[name] = sorted(set(bad) | set(bad_out))
                bar.update()
            for s, (attacked, bad) in transferred_inputs.items():
                if s == t:
                    continue
                name = f"transfer:{s}"
                evals[name], bad_out = _evaluation(
                    name, target, xs, ys, attacked, sigma, (p_clean, s_clean)
                )
                if bad or bad_out:
                    nonfinite[name] = sorted(set(bad) | set(bad_out))
            if not evals:
                raise ValueError(f"members: target {t!r} has no member (its only source is itself)")
            worst = lowest_psnr(evals)
            results[t] = WorstCase(
                members=list(evals),
                psnr_clean=p_clean,
                psnr=worst["psnr_attacked"],
                ssim=worst["ssim_attacked"],
                winner=worst["attack"],
                per_member={n: ev.psnr_attacked for n, ev in evals.items()},
                nonfinite=nonfinite,
                meta={
                    "sigma": sigma,
                    "seed": seed,
                    "images": len(p_clean),
                    "attacks": {
                        **{n: a.describe() for n, a in runs},
                        **{n: d for n, d in described.items() if n in evals},
                    },
                },
            )
    return results


def auto_attack(
    target: Denoiser,
    clean: Images,
    sigma: float,
    members: Mapping[str, AttackFactory] | None = None,
    sources: Mapping[str, Denoiser] | None = None,
    transfer_attack: AttackFactory | None = None,
    seed: int = 0,
    progress: bool = False,
    transferred: Transferred | None = None,
) -> WorstCase:
    """:func:`auto_attack_models` for one target."""
    if not isinstance(target, Denoiser):
        raise TypeError(f"target must be a ts_defense.Denoiser, got {type(target).__name__}")
    key = object.__repr__(target)  # never a source's name
    return auto_attack_models(
        {key: target}, clean, sigma, members, sources, transfer_attack, seed, progress, transferred
    )[key]
