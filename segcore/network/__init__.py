"""The network: DeepLabV3+ on ResNet50, its layers, its configuration, its Keras losses.

Owns: :mod:`~segcore.network.config` (``ModelConfig``, no TensorFlow),
:mod:`~segcore.network.layers` (``ConvBlock``, ``DSPP``, ``ResizeLike``,
``ImageNetNormalization``), :mod:`~segcore.network.model` (``build_deeplabv3plus`` and the
input/output contract), :mod:`~segcore.network.keras_metrics` (soft Dice/Jaccard, the BCE + Dice
loss, ``PooledDice``).

May import: the base modules (``segcore.errors``, ``segcore.configs``, ...). Nothing else of
segcore: the network knows nothing of files, datasets or apps. Importing the package does not load
TensorFlow; ``layers``, ``model`` and ``keras_metrics`` do.
"""
