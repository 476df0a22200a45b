"""Build time: Optimum export, graph optimization, quantization, parity gate. Heavy imports stay inside functions."""
