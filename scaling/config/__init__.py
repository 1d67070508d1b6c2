from scaling.config.loader import ConfigError, load_config, resolve_config_path
from scaling.config.schema import (
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    QuantizerConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "Config", "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "ParallelConfig", "QuantizerConfig",
    "TrackingConfig", "TrainConfig", "load_config", "resolve_config_path",
]
