"""Models that leave caviar: a fitted estimator as an ONNX graph (:mod:`caviar.export.onnx`)."""

from caviar.export.onnx import save_onnx, to_onnx

__all__ = ["save_onnx", "to_onnx"]
