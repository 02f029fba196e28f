"""The model zoo. Each family is one file: a small table of variants plus one class.

Models are chosen by the `_target_` of a YAML file in conf/model/; there is no registry here.
Every constructor takes `num_classes`, `in_channels` and `image_size` (from the dataset config)
plus its family's knobs, and every model returns logits. `anatomy` reads any model layer by
layer (shapes, parameters, MACs, receptive fields) on the meta device, without weights.
"""
