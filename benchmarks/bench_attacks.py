"""Attack cost: DenoisingPGD against a bare hand-written PGD loop on the same model and input,
in the same run; transfer-matrix cost as sources and targets grow; and the price of the
parameter-free worst case (``auto_attack``: three APGD members and transfer from one source)
against plain 10-step PGD on the same images, both with their evaluation.

    python benchmarks/bench_attacks.py            # DnCNN-17 (64 features), 2x1x48x48, 10 steps
    python benchmarks/bench_attacks.py --smoke    # tiny model and input, checks the script runs
    python benchmarks/bench_attacks.py --ensemble-only --ensemble-steps 100
    python benchmarks/bench_attacks.py --audit-only   # ts-defense evaluate: --attack auto / pgd

Target: the attack within 1.05x of the bare loop; crafting time proportional to the number of
sources (one attack each), not to sources x targets; the ensemble near its count of passes,
``4 * (steps + 1)`` forward + backward passes against PGD's 10. The audit part times what a
user pays: ``run_audit`` (the engine of ``ts-defense evaluate``) on DnCNN-S-25 with its defaults
under ``--attack auto`` and ``--attack pgd`` on the same bundled images, with each one's run-time
estimate, its attacked PSNR at the largest budget and (auto) the worst case.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved, machine  # noqa: E402

from ts_defense import Denoiser  # noqa: E402
from ts_defense.attacks import DenoisingPGD  # noqa: E402
from ts_defense.evaluation.auto import auto_attack, auto_members  # noqa: E402
from ts_defense.evaluation.metrics import add_noise, evaluate_attack  # noqa: E402
from ts_defense.evaluation.transfer import transfer_matrix  # noqa: E402
from ts_defense.models import DnCNN  # noqa: E402

SIGMA = 25 / 255


def bare_pgd(net, noisy, clean, eps, alpha, steps, gen):
    """The loop every denoising-PGD script writes: residual model, MSE to clean, sign steps."""
    delta = (torch.rand(noisy.shape, generator=gen) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        adv = noisy + delta
        loss = F.mse_loss(adv - net(adv), clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return noisy + delta


def attack_cost(net, shape, steps, rounds):
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(shape, generator=gen)
    noisy = clean + SIGMA * torch.randn(shape, generator=gen)
    eps = 8 / 255
    atk = DenoisingPGD(Denoiser(net, predicts="noise"), SIGMA, eps=eps, steps=steps)
    g2 = torch.Generator().manual_seed(0)
    t = interleaved(
        {
            "bare loop": lambda: bare_pgd(net, noisy, clean, eps, atk.alpha, steps, g2),
            "DenoisingPGD": lambda: atk(noisy, clean),
        },
        rounds,
    )
    return [
        f"\nAttack cost, {'x'.join(map(str, shape))}, {steps} steps:\n",
        "| attack | ms | / bare loop |",
        "|---|---:|---:|",
        *(f"| {n} | {v * 1e3:.1f} | {v / t['bare loop']:.3f} |" for n, v in t.items()),
    ]


class TimedPGD(DenoisingPGD):
    """DenoisingPGD that adds the seconds spent crafting to a class-wide counter."""

    seconds = 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = super().__call__(*args, **kwargs)
        TimedPGD.seconds += time.perf_counter() - t0
        return out


def transfer_cost(make_net, shape, steps, sizes):
    clean = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    lines = [
        f"\nTransfer matrix, {'x'.join(map(str, shape))}, {steps} steps; crafting is timed "
        "inside the attack factory:\n",
        "| sources | targets | crafting s | crafting s / source | evaluation s | total s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n_src, n_tgt in sizes:
        models = {f"m{i}": Denoiser(make_net(i), predicts="noise").eval() for i in range(n_tgt)}
        TimedPGD.seconds = 0.0
        attack = partial(TimedPGD, sigma=SIGMA, eps=8 / 255, steps=steps)
        t0 = time.perf_counter()
        transfer_matrix(models, clean, SIGMA, attack, sources=list(models)[:n_src])
        total = time.perf_counter() - t0
        lines.append(
            f"| {n_src} | {n_tgt} | {TimedPGD.seconds:.2f} | {TimedPGD.seconds / n_src:.2f} | "
            f"{total - TimedPGD.seconds:.2f} | {total:.2f} |"
        )
    return lines


def ensemble_cost(net, source, shape, steps, ensemble_steps, rounds):
    """``auto_attack`` (its default members at ``ensemble_steps`` iterations, one transfer
    source) against ``steps``-step PGD, each with its evaluation, on the same images."""
    clean = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    noisy = add_noise(clean, SIGMA, seed=0)
    den, src = Denoiser(net, predicts="noise"), Denoiser(source, predicts="noise")
    pgd = DenoisingPGD(den, SIGMA, eps=8 / 255, steps=steps)
    members = auto_members(SIGMA, steps=ensemble_steps)
    t = interleaved(
        {
            f"PGD, {steps} steps": lambda: evaluate_attack(den, pgd, clean, noisy, SIGMA),
            "auto_attack": lambda: auto_attack(den, clean, SIGMA, members, {"src": src}),
        },
        rounds,
        warmup=1,
    )
    base = t[f"PGD, {steps} steps"]
    passes = {
        f"PGD, {steps} steps": steps,
        "auto_attack": (len(members) + 1) * (ensemble_steps + 1),
    }
    return [
        f"\nWorst-case ensemble, {'x'.join(map(str, shape))}: {', '.join(members)} and transfer "
        f"from one source, {ensemble_steps} iterations each, 1 restart; with evaluation:\n",
        "| evaluation | passes | s | / PGD |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {passes[n]} | {v:.2f} | {v / base:.1f} |" for n, v in t.items()),
    ]


def audit_cost(count, size, steps=None):
    """``run_audit`` under ``--attack pgd`` and ``--attack auto`` (defaults otherwise; ``steps``
    for both when given) on the first ``count`` bundled images at ``size`` x ``size``,
    DnCNN-S-25: seconds (one round each: the auto audit is long), the estimate the command
    prints, PSNR at the largest budget and the worst case."""
    from ts_defense.app.audit import AuditConfig, AuditModel, estimate_seconds, run_audit
    from ts_defense.data import BUNDLED, bundled_images
    from ts_defense.models.zoo import load_model

    names = BUNDLED[:count]
    images = [(n, x[None]) for n, x in zip(names, bundled_images(names, size=size), strict=True)]
    model = AuditModel("dncnn-s-25", load_model("dncnn-s-25"), 1, "zoo")
    rows = {}
    for attack in ("pgd", "auto"):
        config = AuditConfig(attack=attack, steps=steps)
        estimate = estimate_seconds([model], images, config)
        t0 = time.perf_counter()
        data = run_audit([model], images, config, progress=False).data
        seconds = time.perf_counter() - t0
        mean = data["models"]["dncnn-s-25"]["mean"]
        key = "apgd" if attack == "auto" else "pgd"
        rows[attack] = (config, estimate, seconds, mean[key]["8"]["psnr"], mean.get("worst"))
    base = rows["pgd"][2]
    lines = [
        f"\nAudit (run_audit, DnCNN-S-25, {count} bundled images {size}x{size}, defaults: "
        "budgets 2 4 8, ObsAtk 5, transfer from both public DnCNN-25s), one run each:\n",
        "| --attack | steps | estimate s | s | / pgd | L-inf @8 dB | worst case dB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for attack, (config, estimate, seconds, at8, worst) in rows.items():
        shown = "" if worst is None else f"{worst:.3f}"
        lines.append(
            f"| {attack} | {config.steps} | {estimate:.0f} | {seconds:.1f} | {seconds / base:.1f} "
            f"| {at8:.3f} | {shown} |"
        )
    return lines


def make_dncnn(seed, depth, features):
    torch.manual_seed(seed)
    return DnCNN(depth=depth, features=features).eval()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--ensemble-steps", type=int, default=100, help="APGD iterations of auto")
    ap.add_argument("--ensemble-rounds", type=int, default=3)
    ap.add_argument("--ensemble-only", action="store_true", help="time only the ensemble")
    ap.add_argument("--audit-only", action="store_true", help="time only the audit's two modes")
    ap.add_argument("--audit-images", type=int, default=2, help="bundled images of the audit")
    ap.add_argument("--audit-size", type=int, default=32, help="their side in pixels")
    args = ap.parse_args()
    if args.audit_only or args.smoke:
        shape = (1, 16) if args.smoke else (args.audit_images, args.audit_size)
        lines = audit_cost(*shape, steps=2 if args.smoke else None)
        print("\n".join([f"Machine: {machine()}.", *lines]))
        if args.audit_only:
            sys.exit(0)
    ensemble_steps, ensemble_rounds = args.ensemble_steps, args.ensemble_rounds
    if args.smoke:
        depth, features, shape, steps, rounds = 3, 8, (2, 1, 16, 16), 3, 3
        sizes = [(1, 1), (2, 2)]
        ensemble_steps, ensemble_rounds = 5, 2
    else:
        depth, features, shape, steps, rounds = 17, 64, (2, 1, 48, 48), 10, args.rounds
        sizes = [(1, 1), (1, 4), (2, 2), (4, 4)]
    net = make_dncnn(0, depth, features)
    lines = [
        f"Machine: {machine()}; {rounds} interleaved rounds ({ensemble_rounds} for the "
        "ensemble), medians."
    ]
    if not args.ensemble_only:
        lines += attack_cost(net, shape, steps, rounds)
        make = partial(make_dncnn, depth=depth, features=features)
        lines += transfer_cost(make, shape, max(1, steps // 2), sizes)
    source = make_dncnn(1, depth, features)
    lines += ensemble_cost(net, source, shape, 10, ensemble_steps, ensemble_rounds)
    print("\n".join(lines))
