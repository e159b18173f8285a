"""GLAM (Liu et al., MIDL 2021) preprocessing: exam lists, cropping, optimal centres."""
