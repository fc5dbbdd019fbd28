"""What a run of the paper protocol trains and measures: presets and the time budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ts_defense.training.recipes import RECIPES

SIGMA = 25 / 255
PUBLIC = {"dncnn-s-25": "DnCNN-S-25.pth", "kair-dncnn-25": "kair_dncnn_25.pth"}
# the public DnCNN-S-25 on BSD68 at sigma 25 (Zhang et al. 2017 report 29.23 dB)
REFERENCE_PSNR, TOLERANCE = 29.2, 0.05


@dataclass(frozen=True)
class Variant:
    """One trained configuration: ``recipe[@strength][+ema]`` (strength of the recipe's knob:
    a budget in 1/255 for the HAT family, a weight for the pair-term recipes; ``+ema``: the
    plan's weight average)."""

    recipe: str
    strength: float | None = None
    ema: bool = False

    @classmethod
    def parse(cls, spec: str) -> Variant:
        rest, ema = (spec[: -len("+ema")], True) if spec.endswith("+ema") else (spec, False)
        recipe, _, strength = rest.partition("@")
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r} in {spec!r}; choose from {list(RECIPES)}")
        knob = RECIPES[recipe][1].knob
        if strength and knob is None:
            raise ValueError(f"{spec!r}: recipe {recipe!r} has no knob to set")
        try:
            value = float(strength) if strength else None
        except ValueError:
            raise ValueError(f"{spec!r}: the strength after '@' must be a number") from None
        return cls(recipe, value, ema)

    def strength_value(self) -> float | None:
        """The strength in the library's units (budgets in image units)."""
        if self.strength is None:
            return None
        return self.strength / 255 if RECIPES[self.recipe][1].knob == "eps" else self.strength


@dataclass(frozen=True)
class Plan:
    """One run: training recipe set, sizes, and the evaluation.

    mode: ``"finetune"`` (start from the public DnCNN-S-25) or ``"scratch"`` (DnCNN-17).
    milestones: steps at which the learning rate drops tenfold (DnCNN's decay).
    test_crop: centre-crop the test images to this size (None: full BSD68 images).
    budgets: white-box L-inf PGD budgets in 1/255; obsatk: ObsAtk RMS budget in 1/255.
    chunk: test images per attack batch (memory).
    min_steps: with a time budget, fewer seeds are run rather than fewer steps than this.
    recipes: variants ``recipe[@strength][+ema]`` (see :class:`Variant`); ema: the decay of
        ``+ema`` (0.95 averages over about the last 20 steps).
    second_test: a second test set evaluated the same way (``"set12"``), or None.
    worst_case_steps: APGD iterations of the worst-case ensemble (``--attack auto``'s
        members and transfer from the public models; 0: not run).
    extra_attacks: also ObsAtk (10 steps) and the reference code's protocol.
    """

    mode: str = "finetune"
    # in order of importance: a time budget cuts the last models of the last seed
    recipes: tuple[str, ...] = ("gaussian", "free-hat", "hat", "ts", "ts-hat", "ts-free-hat")
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 2000
    batch_size: int = 128
    patch_size: int = 40
    lr: float = 1e-4
    milestones: tuple[int, ...] = ()
    train_images: int = 400
    test_images: int = 68
    test_crop: int | None = None
    budgets: tuple[int, ...] = (2, 4, 8)
    attack_steps: int = 10
    obsatk: float = 5.0
    chunk: int = 8
    min_steps: int = 500
    validate: bool = True
    ema: float = 0.95
    second_test: str | None = None
    worst_case_steps: int = 0
    extra_attacks: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("finetune", "scratch"):
            raise ValueError(f"mode must be 'finetune' or 'scratch', got {self.mode!r}")
        for spec in self.recipes:
            Variant.parse(spec)
        if self.second_test not in (None, "set12"):
            raise ValueError(f"second_test must be 'set12' or None, got {self.second_test!r}")
        if not self.seeds or not self.recipes:
            raise ValueError("a run needs at least one recipe and one seed")


# every recipe along its knob, seed 0 first (a time budget cuts the last); see BENCHMARKS.md
FRONTIER = (
    "gaussian",
    "free-hat",
    "hat",
    "free-hat@4",
    "free-hat@16",
    "multi-hat",
    "trades",
    "trades@4",
    "yan-hat",
    "jacobian",
    "jacobian@0.1",
    "free-hat+ema",
    "ts-free-hat",
)

PRESETS = {
    # CI: seconds on a CPU, every code path (public weights from the shared data)
    "smoke": Plan(
        seeds=(0,),
        steps=2,
        batch_size=4,
        train_images=4,
        test_images=2,
        test_crop=48,
        budgets=(8,),
        attack_steps=2,
        min_steps=1,
        validate=False,
        second_test="set12",
        worst_case_steps=2,
    ),
    # what two CPU cores fit in about an hour: short fine-tunes, 64x64 test crops
    "cpu": Plan(steps=300, batch_size=32, test_crop=64, min_steps=100, validate=False),
    # paired seeds of the three key recipes in about 20 CPU minutes: short fine-tunes, 16 crops
    "cpu-quick": Plan(
        recipes=("gaussian", "free-hat", "hat"),
        steps=100,
        batch_size=16,
        test_images=16,
        test_crop=64,
        budgets=(8,),
        min_steps=50,
        validate=False,
    ),
    # the robustness-accuracy frontier (issue 24) and the worst case next to PGD-10 (issue 23):
    # the cpu-quick fine-tunes, 48x48 crops of BSD68 and Set12, the ensemble at 10 iterations
    "cpu-frontier": Plan(
        recipes=FRONTIER,
        steps=100,
        batch_size=16,
        test_images=16,
        test_crop=48,
        budgets=(8,),
        min_steps=50,
        validate=False,
        second_test="set12",
        worst_case_steps=10,
        extra_attacks=False,
        chunk=16,
    ),
    # the reference measurement's protocol: 2000 fine-tuning steps at batch 128, full BSD68
    "gpu": Plan(),
    # the CPU frontier's best recipes at the paper's scale (one device run); the average spans
    # the last fifth of the run, as 0.95 does over the CPU preset's 100 steps
    "gpu-frontier": Plan(
        recipes=("gaussian", "free-hat+ema", "yan-hat", "free-hat", "free-hat@16"),
        seeds=(0,),
        second_test="set12",
        worst_case_steps=10,
        extra_attacks=False,
        ema=0.9975,
    ),
    # DnCNN's own recipe from scratch (Adam 1e-3, decay at 80 % of the steps)
    "gpu-scratch": Plan(mode="scratch", steps=6000, lr=1e-3, milestones=(4800,)),
}


def crafts(recipe: str) -> bool:
    """Whether the variant pays extra passes per step (crafted or added rows; not the amortised
    recipes)."""
    spec = RECIPES[Variant.parse(recipe).recipe][1]
    return spec.defaults is not None and not spec.defining.get("amortised", False)


def job_seconds(plan: Plan, recipe: str, step_s: float, eval_s: float) -> float:
    """Estimated seconds to train and evaluate one model of ``recipe``."""
    return (1.5 if crafts(recipe) else 1.0) * plan.steps * step_s + eval_s


def sized(plan: Plan, seconds: float, step_s: float, eval_s: float) -> Plan:
    """The plan cut to fit ``seconds``: full length if every recipe fits once, else fewer steps
    (never under ``min_steps``). Seeds are not cut here: the run stops between models when the
    next one would not fit (see :func:`job_seconds`).

    step_s: seconds of one plain training step (recipes that craft their adversarial share
    count 1.5x); eval_s: seconds to evaluate one model.
    """
    one_seed = sum(job_seconds(plan, r, step_s, eval_s) for r in plan.recipes)
    if one_seed <= seconds:
        return plan
    weight = sum(1.5 if crafts(r) else 1.0 for r in plan.recipes)
    room = seconds - len(plan.recipes) * eval_s
    steps = int(room // (weight * step_s)) if room > 0 else 0
    steps = max(plan.min_steps, min(plan.steps, steps))
    scale = steps / plan.steps
    milestones = tuple(max(1, int(m * scale)) for m in plan.milestones)
    return dataclasses.replace(plan, steps=steps, milestones=milestones)
