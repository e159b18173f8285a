"""DeepMiCa training on MIAS: pseudo-masks, the patch UNet (engine task "deepmica"), the ROI
classifier and the cluster-detection measurement. `python -m training.deepmica --help`."""
