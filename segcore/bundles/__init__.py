"""Model bundles: a trained model with the card that says how to serve it and how good it is.

Owns: :mod:`~segcore.bundles.card` (``ModelCard``, ``SplitFigures``: the one card schema),
:mod:`~segcore.bundles.store` (saving atomically, reading, verifying, listing bundle folders),
:mod:`~segcore.bundles.hub` (Hugging Face Hub download and upload; its model-card
``README.md`` from :mod:`~segcore.bundles.readme`), :mod:`~segcore.bundles.refs`
(names, paths and ``hf://`` refs to folders) and :mod:`~segcore.bundles.loading` (``load_bundle``).

Import order inside: card ← store ← readme ← hub ← refs ← loading. May import: the base modules,
:mod:`segcore.data`, :mod:`segcore.network`, :mod:`segcore.metrics`, :mod:`segcore.inference`,
:mod:`segcore.evaluation`.
"""
