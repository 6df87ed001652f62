"""Configuration, from environment variables only, validated once at start.

Every variable is listed in README.md ("Configuration"). A bad value stops the process with one line
that names the variable and what is wrong with it. Messages never repeat a secret's value.

`model` holds the values, `env` the parsers of one variable, `charging` the settings that move money,
and `load` reads them all.
"""

from service.config.env import grpc_workers, usable_cores
from service.config.load import load_config
from service.config.model import MIN_STREAM_BUFFER_EVENTS, Config, ConfigError, RechargeCeilings, StartupError

# The security settings are part of the configuration: other layers import them from here.
from service.security_config import SecurityConfig, exposure_problem, is_loopback

__all__ = [
    "MIN_STREAM_BUFFER_EVENTS",
    "Config",
    "ConfigError",
    "RechargeCeilings",
    "SecurityConfig",
    "StartupError",
    "exposure_problem",
    "grpc_workers",
    "is_loopback",
    "load_config",
    "usable_cores",
]
