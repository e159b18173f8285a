"""Training, export and measurement of the three `tiryaki-mass` networks (Keras side).

    python -m training.tiryaki train   training/configs/tiryaki_breast.yaml   # U-net5L
    python -m training.tiryaki train   training/configs/tiryaki_mass.yaml     # U-net++ (needs the breast run)
    python -m training.tiryaki train   training/configs/tiryaki_classifier.yaml
    python -m training.tiryaki export  CONFIG      # best weights -> weights/, manifest entry
    python -m training.tiryaki measure --split val|test   # the whole pipeline vs the targets

Running `train` again resumes an interrupted or time-budgeted run from its backup.
"""
