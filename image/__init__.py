"""MuMu SD image: the build (image/build), the boot harness (image/boot) and their pieces."""
