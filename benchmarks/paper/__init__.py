"""The paper's protocol: DnCNN-17 trained or fine-tuned on BSD400 patches, tested on BSD68.

``python -m benchmarks.paper --preset gpu --device cuda --minutes 8`` trains each recipe
of ``ts_defense.training.recipes`` (several seeds), evaluates every model on the 68 BSD68 images
(clean, white-box PGD per budget with pass-through and gain, ObsAtk, the reference code's protocol,
transfer from both public DnCNN-25s) and writes JSON lines, Markdown tables and a plot.
Modules: ``plan`` (what to run), ``evaluation`` (one model on the test set), ``tables`` (pure
functions over the JSON lines), ``run`` (the command).
"""
