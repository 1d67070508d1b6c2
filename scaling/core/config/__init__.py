from scaling.core.config.loader import ConfigError, read_config, resolve_config_path
from scaling.core.config.schema import (
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
    "TrackingConfig", "TrainConfig", "read_config", "resolve_config_path",
]
