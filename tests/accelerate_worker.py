"""Run by tests/test_accelerate.py, alone or under ``accelerate launch``: TS training with a user's
Accelerator, then save_state, an uninterrupted second epoch, load_state and the second epoch
again. Each rank writes what it saw to ``OUT/rank{i}.pt``.

    python tests/accelerate_worker.py OUT [--mixed-precision bf16] [--accumulate 2] [--recipe R]
"""

import argparse
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ts_defense import TrainStep, TSSampler, rank_seed
from ts_defense.models import DnCNN
from ts_defense.training.recipes import RECIPES, make_recipe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--accumulate", type=int, default=1)
    ap.add_argument("--recipe", help="a ts_defense recipe (default: TS at p_ood 0.5)")
    args = ap.parse_args()
    acc = Accelerator(
        cpu=True, mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.accumulate
    )
    torch.manual_seed(0)
    model = DnCNN(depth=3, features=8, batch_norm=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(list(images), batch_size=2, shuffle=False)
    model, opt, loader = acc.prepare(model, opt, loader)
    dtypes = []
    inner = acc.unwrap_model(model).layers[0]  # the outer output is cast back to float32
    inner.register_forward_hook(lambda m, i, o: dtypes.append(str(o.dtype)))
    seed = rank_seed(0, acc)
    perturbation = None
    if args.recipe:
        p_ood = 0.5 if RECIPES[args.recipe][0] else 0.0  # a recipe without TS refuses p_ood > 0
        recipe = make_recipe(args.recipe, config={"sigma": 25 / 255, "p_ood": p_ood})
        sampler, perturbation = recipe.sampler(seed), recipe.perturbation(seed)
    else:
        sampler = TSSampler(sigma=25 / 255, p_ood=0.5, seed=seed)
    step = TrainStep(
        model, opt, sampler, predicts="noise", loss="sum_mse", accelerator=acc,
        perturbation=perturbation,
    )  # fmt: skip

    def epoch():
        noise, changed, losses, adversarial = [], [], [], []
        for clean in loader:
            before = [p.detach().clone() for p in model.parameters()]
            res = step(clean)
            noise.append(res.draw.noise)
            adversarial.append(int(res.n_adv))
            losses.append(float(res.loss))
            params = model.parameters()
            changed.append(any(not torch.equal(a, p) for a, p in zip(before, params, strict=True)))
        return noise, changed, losses, adversarial

    first = epoch()
    ckpt = args.out / "state"
    acc.save_state(ckpt)
    second = epoch()
    params = [p.detach().clone() for p in model.parameters()]
    acc.wait_for_everyone()
    acc.load_state(ckpt)
    replay = epoch()
    torch.save(
        {
            "first_noise": first[0],
            "changed": first[1],
            "losses": first[2] + second[2],
            "second_noise": second[0],
            "replay_noise": replay[0],
            "params": params,
            "replay_params": [p.detach().clone() for p in model.parameters()],
            "model_dtype": dtypes[0],
            "n_adv": first[3] + second[3],
            "num_processes": acc.num_processes,
            "distributed_type": acc.distributed_type.value,
            "backend": str(acc.state.backend),
        },
        args.out / f"rank{acc.process_index}.pt",
    )
    # Join gloo's threads before the interpreter exits: without it a rank can abort at exit
    # ("terminate called without an active exception") after all its work is done.
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main()
