"""Config stage: typed settings from the environment, all problems reported at once."""

from connector.config.exceptions import SettingsError
from connector.config.settings import IngestSettings, KafkaSettings, Settings, load_settings

__all__ = ["IngestSettings", "KafkaSettings", "Settings", "SettingsError", "load_settings"]
