"""carecloud-connector: Kafka change events -> CareCloud's six entities -> a daily full snapshot.

Stages, in the order data flows through them: ``source`` (consume, decode) -> ``mapping``
(source row -> entity, EntityId) -> ``state`` (versioned keyed store, written by the ``ingest``
runner) -> ``snapshot`` (the runner that reads it at a cut: checks, routing) -> ``sinks`` (S3,
SFTP, Portal API). ``config``, ``ops`` (metrics, logs, health, status) and ``cli`` sit at the
edges; ``model`` holds the entity schemas every stage shares. ``.importlinter`` keeps imports
running that way.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:  # defined once, in pyproject.toml's [project] version; read from the installed metadata
    __version__ = version("carecloud-connector")
except PackageNotFoundError:  # a source tree on the path but never installed (`make venv` installs it)
    __version__ = "0+unknown"
