"""Speed policy: AMP dtype, channels_last and fused optimizers per device, GEMM weight gradients."""
