"""Does TS training make denoisers robust? The evidence of issue 5, as JSON lines and tables.

    python -m benchmarks.defense --part scratch --variants gaussian ts --seeds 0 1
    python -m benchmarks.defense --part finetune --variants gaussian ts hat
    python -m benchmarks.defense --part detect
    python -m benchmarks.defense --part transfer      # after scratch/finetune (weights)
    python -m benchmarks.defense --part cost          # CPU time per training step
    python -m benchmarks.defense --table RESULTS.jsonl  # Markdown tables of a results file
    python -m benchmarks.defense --smoke               # every part at toy sizes (CI)

Parts (each appends one JSON line per model to ``--out``, default ``runs/defense.jsonl``, as
soon as it is measured): ``scratch``: small DnCNNs (no BN, residual) trained from scratch on the
eight bundled pictures per variant (``config.VARIANTS``: Gaussian, blind, TS settings, HAT);
``finetune``: the pretrained DnCNN-S-25 fine-tuned per variant; both evaluated on Set12 crops by
white-box attacks (denoising-PGD L-inf 3/255 x 5 steps and 8/255 x 10 steps, L2-denoising-PGD,
ObsAtk) with the pass-through PSNR and gain at 8/255 (``ts_defense.evaluation.budget``). ``zoo``:
DRUNet, SwinIR, an unfolded network and PnP-HQS. ``detect``: ROC AUC of the typical-set
detector per attack and budget. ``transfer``: perturbations crafted on the small baseline and on
the two pretrained DnCNNs, evaluated on every saved model and BM3D. ``protocol``: the reference
code's attack protocol. ``curves``: PSNR against the budget. ``cost``: CPU time of a Gaussian,
TS and HAT training step on one batch, interleaved rounds.

Modules: ``config`` (variants, sizes, attacks), ``models`` (training through ``fit`` and
loading), ``runs`` (the parts), ``tables`` (pure functions over the JSON lines), ``run`` (the
command). ``benchmarks/results/defense.jsonl`` holds the committed results: pass it as
``--out`` to add to them.
"""
