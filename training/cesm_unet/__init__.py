"""`cesm-unet` training: the CDD-CESM tool's config-driven Keras UNet (train, evaluate, infer).

`python -m training.cesm_unet train|evaluate|infer CONFIG`; the config format is in `config.py`.
"""
