"""``--attack auto`` in the audit (issue 23): which attacks it runs, the ensemble's worst case
per image, and the evidence of convergence every report carries.

Under ``auto`` (the default of ``evaluate`` and ``compare``) the white-box attacks are APGD
(Croce & Hein 2020: no step size to tune, the best iterate kept): APGD-L-inf on the clean
objective at every budget, APGD-L-inf on the noisy objective and zero-mean L2 APGD (ObsAtk's
threat model) at the largest, and transfer crafted with APGD on the public DnCNN-25s. Per image
the lowest PSNR over the members is the worst case; the report says which member won how often.
Under ``pgd`` the audit is the fast path it always was (10-step PGD, ObsAtk, PGD transfer).

The evidence is measured at the largest budget with APGD-L-inf (clean objective): attacked PSNR
against iterations (10, 25, 50, 100, 200, ... up to the steps run, each count a run of its own;
the last is the table's), against restarts (1 to ``restarts`` from the run itself, and one
restart more), and the masked-gradient checks of :mod:`ts_defense.evaluation.convergence`. A
failed check and every NaN output are listed in the report's first lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import numpy as np
import torch
from torch import Tensor

from ..._checks import check_choice, check_positive
from ...attacks import make_attack
from ...attacks.apgd import APGD, APGDObsAtk
from ...attacks.base import DenoiserAttack, steps_text
from ...evaluation.auto import CLEAN, WorstCase
from ...evaluation.convergence import (
    ITERATIONS,
    Check,
    check_budget_monotone,
    check_converged,
    check_iterations,
    check_random_drops,
    check_restarts,
    check_white_box,
    failures,
    random_perturbation,
)
from ...evaluation.metrics import AttackEvaluation, denoise, psnr, ssim
from ...evaluation.metrics import worst_case as lowest_psnr
from ...models.denoiser import Denoiser

ATTACKS = ("auto", "pgd")
STEPS = {"auto": 25, "pgd": 10}  # default iterations: on DnCNN-S-25, APGD-25 is within 0.03 dB
# of APGD-100 (README, "What --attack auto costs"), at a quarter of the time
MEMBERS = ("apgd-linf", "apgd-linf-noisy", "apgd-obsatk", "transfer")
TABLE = {"auto": "apgd", "pgd": "pgd"}  # the key of the per-budget L-inf results in a row


def options(
    attack: str,
    steps: int | None,
    restarts: int | None,
    members: Sequence[str] | None,
    flag: Callable[[str], str] = str,
) -> tuple[str, int, int, tuple[str, ...]]:
    """The checked ``attack``, ``steps`` (None: its default), ``restarts`` (None: 1) and
    ``members`` (None: all); ``flag`` turns an option's name into what the user typed (the
    command line's ``--steps``)."""
    check_choice(flag("attack"), attack, ATTACKS)
    steps = STEPS[attack] if steps is None else steps
    check_positive(flag("steps"), steps, integer=True)
    restarts = 1 if restarts is None else restarts
    check_positive(flag("restarts"), restarts, integer=True)
    if attack == "pgd" and restarts != 1:
        raise ValueError(
            f"{flag('restarts')}: PGD has one random start; restarts are --attack auto's"
        )
    if isinstance(members, str):
        raise TypeError(f"{flag('members')} must be a list of names, got {members!r}")
    members = MEMBERS if members is None else tuple(dict.fromkeys(members))
    if not members:
        raise ValueError(
            f"{flag('members')}: the ensemble has no member; give one or more of "
            f"{', '.join(MEMBERS)}"
        )
    for name in members:
        check_choice(f"{flag('members')} entry", name, MEMBERS)
    if attack == "pgd" and members != MEMBERS:
        raise ValueError(f"{flag('members')}: the ensemble is --attack auto's (not pgd's)")
    return attack, steps, restarts, members


def check_models(channels: Sequence[int], config: object, flag: Callable[[str], str] = str) -> None:
    """Refuse, before any work, an ensemble that would be empty for some model: transfer as
    its only member while transfer is left out, or for a colour model (the sources are grey)."""
    if config.attack != "auto" or tuple(config.members) != ("transfer",):
        return
    if not config.transfer:
        raise ValueError(
            f"{flag('members')}: the ensemble has no member (only transfer, and transfer is "
            f"left out)"
        )
    if any(c != 1 for c in channels):
        raise ValueError(
            f"{flag('members')}: the ensemble has no member for a colour model (only transfer, "
            f"whose public sources are grey)"
        )


def iteration_counts(steps: int) -> list[int]:
    """The iteration counts of the convergence table: 10, 25, 50, 100, 200, 400, ... below
    ``steps``, then ``steps`` itself."""
    counts, n = list(ITERATIONS), ITERATIONS[-1]
    while n < steps:
        n *= 2
        counts.append(n)
    return [c for c in counts if c < steps] + [steps]


def attack(
    kind: str,
    model: Denoiser,
    eps: float,
    config: object,
    seed: int | None = None,
    steps: int | None = None,
) -> DenoiserAttack:
    """The attack an audit runs for ``kind``: ``"pgd"`` (L-inf, clean objective), ``"noisy"``
    (L-inf, noisy objective) or ``"obsatk"`` (zero-mean L2, RMS budget). APGD under ``auto``
    (its NaN/Inf points recorded, not raised: the report names them); under ``pgd`` what the
    audit always ran."""
    seed = config.seed if seed is None else seed
    steps = config.steps if steps is None else steps
    if config.attack == "pgd":
        return make_attack(kind, model, config.sigma, eps=eps, steps=steps, seed=seed)
    common = {"steps": steps, "restarts": config.restarts, "seed": seed, "nonfinite": "record"}
    if kind == "obsatk":
        return APGDObsAtk(model, config.sigma, eps=eps, **common)
    objective = "noisy" if kind == "noisy" else "clean"
    return APGD(model, config.sigma, eps=eps, objective=objective, **common)


def runs(config: object) -> tuple[str, int, int]:
    """``attack``, ``steps`` and ``restarts`` of an audit's options."""
    return config.attack, config.steps, config.restarts


def done(attack: str, steps: int, restarts: int = 1) -> str:
    """The iterations (and restarts) every attack of an audit runs, in words."""
    if attack == "pgd":
        return steps_text(steps)
    again = "1 restart" if restarts == 1 else f"{restarts} restarts"
    return f"{'one iteration' if steps == 1 else f'{steps} iterations'}, {again}"


def describe(attack: str, steps: int, restarts: int = 1) -> str:
    """The white-box L-inf attack of the table, in words."""
    name = "denoising-PGD" if attack == "pgd" else "APGD"
    return f"{name} (L-inf, {done(attack, steps, restarts)}, clean target)"


class NextRestart(APGD):
    """Restart ``first`` of an APGD run on its own (its seed is that restart's): what one
    restart more than the audit's would add, at the price of one run."""

    def __init__(self, *args: object, first: int, **options: object) -> None:
        super().__init__(*args, **options)
        self.first = first

    def restart_seed(self, restart: int) -> int:
        return super().restart_seed(self.first + restart)


class Evidence:
    """What the audit measures beside its table, on the batches it attacks: called after each
    attack of a batch (:meth:`seen`), folded into per-image rows at the end (:meth:`row`).

    At the largest budget's L-inf attack it runs the iteration counts below ``steps``, one more
    restart, the noisy-objective member (``auto``) and a random perturbation of the same norm
    (both modes: a forward pass)."""

    def __init__(self, model: Denoiser, config: object) -> None:
        self.model, self.config = model, config
        self.top = config.budgets[-1]
        self.auto = config.attack == "auto"
        self.counts = iteration_counts(config.steps) if self.auto else [config.steps]
        self.values: dict[str, list[float]] = {}
        self.flags: dict[str, list[float]] = {}
        if self.auto:
            self.shorter = {
                n: attack("pgd", model, self.top, config, steps=n) for n in self.counts[:-1]
            }
            self.next = NextRestart(
                model,
                config.sigma,
                eps=self.top,
                steps=config.steps,
                seed=config.seed,
                nonfinite="record",
                first=config.restarts,
            )
            self.noisy = None
            if "apgd-linf-noisy" in config.members:
                self.noisy = attack("noisy", model, self.top, config)

    def _add(self, key: str, values: list[float]) -> None:
        self.values.setdefault(key, []).extend(values)

    def _flag(self, label: str, atk: DenoiserAttack, n: int) -> None:
        """1 per tile whose loss or gradient went NaN/Inf during an APGD attack, else 0."""
        record = getattr(atk, "record", None) if isinstance(atk, APGD) else None
        bad = [0.0] * n if record is None else record.nonfinite.float().tolist()
        self.flags.setdefault(label, []).extend(bad)

    def seen(
        self, kind: str, eps: float, atk: DenoiserAttack, x: Tensor, y: Tensor, adv: Tensor
    ) -> None:
        """After ``atk`` (the table's ``kind`` at ``eps``) attacked the batch ``y`` of clean
        tiles ``x`` into ``adv``."""
        label = label_of(self.config, kind, eps)
        self._flag(label, atk, len(x))
        if kind != "pgd" or eps != self.top:
            return
        sigma = self.config.sigma
        rand = y + random_perturbation(adv - y, "L-inf", self.config.seed)
        self._add("random", psnr(x, denoise(self.model, rand, sigma), nonfinite="nan"))
        if not self.auto:
            return
        for n, short in self.shorter.items():
            out = denoise(self.model, short(y, x), sigma)
            self._add(f"iterations:{n}", psnr(x, out, nonfinite="nan"))
        self.next(y, x)
        this, more = atk.record, self.next.record
        curve = list(this.best_psnr)
        better = more.best_loss[0] > this.best_loss[-1]
        curve.append(torch.where(better, more.best_psnr[0], this.best_psnr[-1]))
        for r, values in enumerate(curve, start=1):
            self._add(f"restarts:{r}", values.tolist())
        if self.noisy is not None:
            out = denoise(self.model, self.noisy(y, x), sigma)
            self._add("noisy:psnr", psnr(x, out, nonfinite="nan"))
            self._add("noisy:ssim", ssim(x, out, nonfinite="nan"))
            self._flag("apgd-linf-noisy", self.noisy, len(x))

    def row(self, images: Sequence[object], fold: Callable) -> dict:
        """Per image (``fold(values, images, kind)`` folds tiles): ``convergence`` (PSNR per
        iteration count below ``steps``, per number of restarts, under the random
        perturbation), ``apgd_noisy`` (PSNR, SSIM) and ``nonfinite`` (per attack, 1 where its
        loss or gradient went NaN/Inf on a tile of the image)."""
        v = self.values
        conv: dict = {"random": fold(v["random"], images, "psnr")}
        if self.auto:
            conv["iterations"] = {
                str(n): fold(v[f"iterations:{n}"], images, "psnr") for n in self.shorter
            }
            conv["restarts"] = {
                k.split(":")[1]: fold(vals, images, "psnr")
                for k, vals in v.items()
                if k.startswith("restarts:")
            }
        out: dict = {
            "convergence": conv,
            "nonfinite": {k: fold(f, images, "max") for k, f in self.flags.items()},
        }
        if "noisy:psnr" in v:
            out["apgd_noisy"] = {
                "psnr": fold(v["noisy:psnr"], images, "psnr"),
                "ssim": fold(v["noisy:ssim"], images),
            }
        return out


def label_of(config: object, kind: str, eps: float) -> str:
    """An attack of the table as the report names it (``apgd 8``, ``obsatk``...)."""
    if kind == "pgd":
        return f"{TABLE[config.attack]} {config.show(eps)}"
    return "apgd-obsatk" if kind == "obsatk" and config.attack == "auto" else kind


def _nan(values: Sequence[float]) -> list[int]:
    return [i for i, v in enumerate(values) if v is None or math.isnan(v)]


def _evaluation(name: str, clean: list[float], values: list[float]) -> AttackEvaluation:
    return AttackEvaluation(name, psnr_clean=clean, psnr_attacked=values, ssim_attacked=values)


def _members(model: dict, config: object) -> dict[str, list[float]]:
    """PSNR per image under each member of the ensemble this model faces (every column of its
    row: a lower one is a stronger attack, whatever it is called)."""
    per = model["per_image"]
    top = config.show(config.budgets[-1])
    found = {
        "apgd-linf": per[TABLE[config.attack]][top]["psnr"],
        "apgd-linf-noisy": per.get("apgd_noisy", {}).get("psnr"),
        "apgd-obsatk": per["obsatk"]["psnr"],
    }
    out = {m: v for m, v in found.items() if m in config.members and v is not None}
    if "transfer" in config.members:  # a model named as a source meets its own crafting too
        out |= {f"transfer:{s}": v for s, v in per.get("transfer", {}).items()}
    return out


def _worst(clean: list[float], members: dict[str, list[float]]) -> WorstCase:
    """Per image the member with the lowest PSNR (a NaN wins its image: the worst outcome)."""
    evals = {m: _evaluation(m, clean, v) for m, v in members.items()}
    worst = lowest_psnr(evals)
    return WorstCase(
        members=list(members),
        psnr_clean=clean,
        psnr=worst["psnr_attacked"],
        ssim=[],  # transfer is scored by PSNR alone
        winner=worst["attack"],
        per_member=members,
    )


def _curves(model: dict, config: object) -> dict:
    """Mean attacked PSNR against iterations (the table's run last) and against restarts."""
    conv, top = model["mean"]["convergence"], config.show(config.budgets[-1])
    return {
        "attack": describe("auto", config.steps, config.restarts),
        "budget": top,
        "iterations": {
            "count": [*map(int, conv["iterations"]), config.steps],
            "psnr": [*conv["iterations"].values(), model["mean"]["apgd"][top]["psnr"]],
        },
        "restarts": {"count": [*map(int, conv["restarts"])], "psnr": [*conv["restarts"].values()]},
    }


def _checks(name: str, model: dict, config: object) -> list[Check]:
    """The sanity checks of one model's results."""
    per, mean = model["per_image"], model["mean"]
    key, top = TABLE[config.attack], config.show(config.budgets[-1])
    conv = mean["convergence"]
    checks = []
    if config.attack == "auto":
        curves = model["curves"]
        curve = {"iterations": curves["iterations"]["count"], "psnr": curves["iterations"]["psnr"]}
        checks.append(check_iterations(curve))
        if len(curve["iterations"]) > 1:
            checks.append(check_converged(curve))
        restarts = curves["restarts"]
        checks.append(check_restarts({"restarts": restarts["count"], "psnr": restarts["psnr"]}))
    budgets = [0.0, *config.budgets]
    psnrs = [mean["psnr_clean"], *(mean[key][config.show(b)]["psnr"] for b in config.budgets)]
    checks.append(check_budget_monotone(budgets, psnrs))
    sources = [s for s in per.get("transfer", {}) if s != name]
    if sources:
        linf = {"white-box": per[key][top]["psnr"]}
        if "apgd_noisy" in per:
            linf["white-box noisy"] = per["apgd_noisy"]["psnr"]
        linf |= {f"transfer:{s}": per["transfer"][s] for s in sources}
        checks.append(check_white_box(_worst(per["psnr_clean"], linf)))
    drop_attack = mean["psnr_clean"] - mean[key][top]["psnr"]
    drop_random = mean["psnr_clean"] - conv["random"]
    checks.append(check_random_drops(drop_attack, drop_random))
    return checks


def _nonfinite(model: dict, config: object) -> dict[str, list[int]]:
    """Attack (or ``no attack``) -> the images (indices) where the model's output, loss or
    gradient was NaN/Inf."""
    per = model["per_image"]
    key, top = TABLE[config.attack], config.show(config.budgets[-1])
    columns = {CLEAN: per["psnr_clean"]}
    columns |= {f"{key} {b}": v["psnr"] for b, v in per[key].items()}
    columns["apgd-obsatk" if config.attack == "auto" else "obsatk"] = per["obsatk"]["psnr"]
    if "apgd_noisy" in per:
        columns["apgd-linf-noisy"] = per["apgd_noisy"]["psnr"]
    columns |= {f"transfer:{s}": v for s, v in per.get("transfer", {}).items()}
    conv = per["convergence"]
    columns |= {f"{key} {top} at {n} iterations": v for n, v in conv.get("iterations", {}).items()}
    columns |= {
        f"{key} {top} with {r} restart{'' if r == '1' else 's'}": v
        for r, v in conv.get("restarts", {}).items()
    }
    columns["random perturbation"] = conv["random"]
    found = {k: set(_nan(v)) for k, v in columns.items()}
    for k, flags in per.get("nonfinite", {}).items():
        found.setdefault(k, set()).update(i for i, f in enumerate(flags) if f)
    return {k: sorted(v) for k, v in found.items() if v}


def _only(tree: object, keep: list[int]) -> object:
    """The per-image lists of a row restricted to the images ``keep``."""
    if isinstance(tree, dict):
        return {k: _only(v, keep) for k, v in tree.items()}
    return [tree[i] for i in keep]


def _mean(tree: object) -> object:
    if isinstance(tree, dict):
        return {k: _mean(v) for k, v in tree.items()}
    return float(np.mean(tree))


def _finite_view(model: dict, bad: set[int]) -> tuple[dict, str]:
    """The model's rows over the images where everything stayed finite, and a note saying so
    (empty when nothing was left out)."""
    n = len(model["per_image"]["psnr_clean"])
    if not bad:
        return model, ""
    keep = [i for i in range(n) if i not in bad]
    per = _only(model["per_image"], keep)
    note = f" (over {len(keep)} of {n} images: NaN/Inf on the others)"
    return {"per_image": per, "mean": _mean(per) if keep else {}}, note


def finish(data: dict, config: object) -> None:
    """Add to each model of an audit record its ``worst`` case and ``curves`` (``auto``: PSNR
    against iterations and restarts), ``checks`` and ``nonfinite`` images, and to the record
    the lines a report prints first: ``failures`` (failed checks) and ``nonfinite`` (NaN/Inf
    outputs: per model, the images and the attacks). The curves and checks are over the
    images where every output stayed finite (a NaN is named, never averaged)."""
    data["failures"], data["nonfinite"] = [], []
    for name, model in data["models"].items():
        found = _nonfinite(model, config)
        model["nonfinite"] = {k: [data["images"][i] for i in v] for k, v in found.items()}
        grouped: dict[tuple[str, ...], list[str]] = {}
        for attack_name, images in model["nonfinite"].items():
            grouped.setdefault(tuple(images), []).append(attack_name)
        data["nonfinite"] += [
            f"{name}: NaN/Inf output on {', '.join(images)} under: {'; '.join(attacks)}"
            for images, attacks in grouped.items()
        ]
        if config.attack == "auto":
            worst = _worst(model["per_image"]["psnr_clean"], _members(model, config))
            model["worst"] = {
                "members": worst.members,
                "psnr": worst.psnr,
                "winner": worst.winner,
                "wins": worst.wins,
                "mean": worst.mean,
                "mean_finite": worst.mean_finite,
            }
            model["mean"]["worst"] = worst.mean
        view, note = _finite_view(model, {i for v in found.values() for i in v})
        if not view["mean"]:
            checks = [Check("sanity checks", False, "no image kept every output finite")]
        else:
            if config.attack == "auto":
                model["curves"] = view["curves"] = {**_curves(view, config), "note": note}
            checks = [replace(c, detail=c.detail + note) for c in _checks(name, view, config)]
        model["checks"] = [asdict(c) for c in checks]
        data["failures"] += [f"{name}: {c.line()}" for c in failures(checks)]


def passes(config: object, sources: int) -> tuple[float, float]:
    """Forward + backward passes of one model's audit (a forward-only evaluation counts a
    third) and of the transfer's crafting, for the run-time estimate."""
    attacks = len(config.budgets) + 1
    forwards = (2 * attacks + 2 + sources) / 3 + 1 / 3  # + the random perturbation
    if config.attack == "pgd":
        return attacks * config.steps + forwards, sources * config.steps
    per_run = (config.steps + 1) * config.restarts  # APGD evaluates its start too
    noisy = "apgd-linf-noisy" in config.members
    shorter = [n for n in iteration_counts(config.steps)[:-1]]
    white = (attacks + noisy) * per_run + sum((n + 1) * config.restarts for n in shorter)
    white += config.steps + 1  # the restart more
    forwards += (len(shorter) + 2 * noisy) / 3
    return white + forwards, sources * per_run * ("transfer" in config.members)


def fewer_steps(config: object) -> list[int]:
    """The ``--steps`` an over-long estimate may offer, largest first: under ``auto`` 50 or 25
    (the convergence table keeps two counts), under ``pgd`` any fewer."""
    if config.attack == "auto":
        return [n for n in (50, 25) if n < config.steps]
    return list(range(config.steps - 1, 0, -1))


def fast_path(config: object) -> object:
    """The same audit under ``--attack pgd`` (its own default steps)."""
    return replace(config, attack="pgd", steps=None, restarts=1, members=MEMBERS)
