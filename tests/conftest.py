"""Settings the whole suite shares, made before any test module imports TensorFlow."""

import os

# The tests compare amsim's layers and ops with TensorFlow's own, whose CPU kernels differ by CPU:
# where TensorFlow leaves oneDNN off by default (CPUs without AVX-512, such as AMD's Zen 3), its
# Eigen kernels have no dilated convolution gradients, no channels_first convolution and no
# depthwise convolution of unequal strides, and those references fail to run. With oneDNN on, the
# references are the same kernels on every x86 CPU. An explicit setting is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
