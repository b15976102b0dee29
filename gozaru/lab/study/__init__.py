"""The study room: which layers must be trained for a model to pick up a style (``gozaru study``).

``spec`` (what a study is, checked) → ``design`` (cells and runs) → ``measures`` (adoption, suppression,
sampled and greedy rate) → ``inputs`` (data, prompt-only floor) → ``runs`` (one run: train, curve, measure) →
``runner`` (sweep, runs, render) → ``stats`` → ``report``; ``demo`` runs it on the offline demo base.
This file imports nothing, so ``gozaru.lab.evaluate`` can use ``measures`` without a circle.
"""
