"""Models: the only package that imports torch or tensorflow.

Get the frameworks through `mammo.models.frameworks` (torch side always first: importing
tensorflow before torchvision/timm/smp crashes the process). Modules are named `torch_*.py` and
`keras_*.py`; nothing is imported here, so `import mammo.models` stays free of both.
"""
