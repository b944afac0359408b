"""Full-network quantization through any registered solver (default: the AdaRound relaxation)."""
from .config import LayerOverride, QuantConfig
from .export import load_quantized, save_quantized
from .report import LayerReport, QuantReport
from .run import quantize_model

__all__ = ["LayerOverride", "QuantConfig", "QuantReport", "LayerReport", "quantize_model",
           "save_quantized", "load_quantized"]
